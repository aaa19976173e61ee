"""Every analysis figure and table of a run directory, and a comparison of any number of runs, as PNGs
and a Markdown report.

    python -m evaluation.report RUN_A [RUN_B RUN_C ...] [--out DIR] [--precision 0.8]

Writes into DIR (default RUN_A/report): report.md, the PNGs it shows, and the tables as CSV. With several
runs, the report of RUN_A is followed by a model-comparison table and a per-class AP comparison of all
of them (RUN_A is the reference the others are compared with; `--compare RUN_B` is the same as naming it).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd

from evaluation import analysis as A
from evaluation import analysis_labelstudio as LS


def md_table(df: pd.DataFrame, index: bool = False, digits: int = 3) -> str:
    """A DataFrame as a GitHub Markdown table (no extra dependency)."""
    if index:
        df = df.reset_index()

    def cell(v):
        if isinstance(v, float):
            return "–" if math.isnan(v) else f"{v:.{digits}f}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


class Report:
    def __init__(self, out: Path):
        self.out = out
        self.lines: list[str] = []
        self.images: list[str] = []

    def add(self, *text: str):
        self.lines.extend(text)

    def figure(self, fig, name: str, caption: str):
        fig.savefig(self.out / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
        self.images.append(name)
        self.add(f"![{caption}]({name})", "")


def _pct_cols(df: pd.DataFrame, cols) -> pd.DataFrame:
    df = df.copy()
    df[cols] = 100 * df[cols]
    return df


def write_report(run_dir, out=None, compare=(), precision: float = 0.8, iou: float = 0.5,
                 classes=None, ann=None) -> Path:
    """Write report.md, figures and CSVs for RUN_DIR, and a comparison with the runs in ``compare``."""
    run = A.load_run(run_dir, ann=ann)
    others = [A.load_run(c, ann=ann) for c in ([compare] if isinstance(compare, (str, Path)) else compare)]
    out = Path(out) if out else run.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    r = Report(out)
    cfg = run.config
    if run.kind == "labelstudio":
        setting = (f"- Label Studio export `{cfg.get('export')}`, model version `{run.model}`, pre-labels from "
                   f"score {float(cfg.get('threshold') or 0):.2f} ({cfg.get('threshold_source', '?')})")
    else:
        setting = f"- model: `{run.model}`, dtype `{cfg.get('dtype', '?')}`, batch size `{cfg.get('batch_size', '?')}`"
    detections = f"{len(run.detections)} detections" if run.kind != "lvis" else f"benchmark {run.benchmark}"
    r.add(f"# Evaluation report: `{run.name}`", "", setting,
          f"- ground truth: `{run.ann_path}`, {len(run.image_ids)} images, {_gt_count(run)}, {detections}", "")
    if cfg.get("non_parity"):
        r.add("**Not a parity run** (published figures use the official settings): "
              + "; ".join(map(str, cfg["non_parity"])), "")

    note = ("`value` is metrics.json, `recomputed` is COCOeval on detections.json here." if run.kind != "lvis"
            else "From metrics.json: LVIS Fixed AP (evaluation.lvis).")
    if run.iou_type == "segm":
        note += (" Box AP (`value`) and mask AP (`mask`, COCOeval segm) of the same detections; the threshold "
                 "sweep below matches by mask IoU.")
    r.add("## Summary (%)", "", md_table(A.summary_table(run), index=True, digits=1), "", note, "")
    if run.kind != "labelstudio":
        r.add("### Against the published figures", "", md_table(A.published_comparison(run), digits=1), "")

    pc = A.worst_first(A.per_class_table(run))
    pc.to_csv(out / "per_class_ap.csv", index=False)
    r.add("## Per-class AP", "")
    if run.kind == "lvis":
        _lvis_section(r, run, pc)
    else:
        r.figure(A.plot_per_class_ap(pc), "per_class_ap.png", "per-class AP, worst first")
        ap_cols = [c for c in ("AP", "AP50", "AP75", "segm_AP", "segm_AP50", "segm_AP75") if c in pc.columns]
        r.add("Worst 10 classes (AP in %" + ("; segm_: mask AP" if run.iou_type == "segm" else "") + "):", "",
              md_table(_pct_cols(pc.head(10), ap_cols), digits=1), "")
        _detection_sections(r, run, pc, precision, iou, classes, out)
    if run.kind == "labelstudio":
        _labelstudio_section(r, run, iou)
    if others:
        _compare_section(r, [run, *others], out)

    (out / "report.md").write_text("\n".join(r.lines) + "\n")
    return out / "report.md"


def _gt_count(run) -> str:
    if run.kind == "lvis":
        return f"{run.config.get('num_categories', '?')} categories"
    return f"{sum(A.num_gt(run).values())} non-crowd GT boxes"


def _lvis_section(r: Report, run, pc: pd.DataFrame):
    shown = pc[pc["num_gt"] > 0]
    r.add(f"{len(shown)} of {len(pc)} categories have ground truth in the evaluated images; all in "
          "`per_class_ap.csv`. Worst 10 and best 10 (AP in %):", "",
          md_table(_pct_cols(shown.head(10), ["AP"]), digits=1), "",
          md_table(_pct_cols(shown.tail(10).iloc[::-1], ["AP"]), digits=1), "")


def _detection_sections(r: Report, run, pc: pd.DataFrame, precision: float, iou: float, classes, out: Path):
    r.add("## AP by object size", "")
    r.figure(A.plot_ap_by_size(A.size_table(run)), "ap_by_size.png", "AP by object size")

    if classes is None:
        ranked = pc[pc["num_gt"] > 0].dropna(subset=["AP"])
        classes = list(dict.fromkeys(list(ranked["name"].tail(2)) + list(ranked["name"].head(2))))
    r.add("## Precision–recall", "", f"Overall (mean over classes) and for: {', '.join(classes) or '–'}.", "")
    r.figure(A.plot_pr_curves(A.pr_curves(run, classes=classes)), "pr_curves.png", "precision-recall curves")

    matched = A.matched_detections(run, iou)
    what = "mask IoU" if run.iou_type == "segm" else "IoU"
    r.add(f"## Scores of true and false positives ({what} ≥ {iou:g})", "")
    r.figure(A.plot_score_histograms(matched, title=f"Scores of true vs false positives (IoU ≥ {iou:g})"),
             "score_histograms.png", "score histograms")

    sw = A.sweep(run, iou)
    rec = A.recommend_threshold(sw, precision)
    sw.to_csv(out / "threshold_sweep.csv", index=False)
    r.add("## Threshold sweep: which BOX_THRESHOLD to pre-label with", "",
          f"Precision, recall and F1 of the detections with score ≥ threshold, {what} ≥ {iou:g}, greedy "
          "one-to-one matching per class as pycocotools matches (crowd GT ignored).", "")
    r.figure(A.plot_threshold_sweep(sw, rec), "threshold_sweep.png", "threshold sweep")
    r.add(md_table(A.recommendation_table(rec)), "")
    if rec["max_f1"] is None:
        r.add("No threshold matches any ground truth: the detector finds nothing at this IoU.", "")
    if rec["min_for_precision"] is None:
        r.add(f"No threshold reaches precision {precision:g}.", "")
    pct = A.per_class_thresholds(run, precision, iou)
    pct.to_csv(out / "per_class_thresholds.csv", index=False)
    r.add("Per class (worst max-F1 first; all in `per_class_thresholds.csv`):", "", md_table(pct.head(15)), "")


def _labelstudio_section(r: Report, run, iou: float):
    acc = LS.acceptance_table(run)
    r.add("## Label Studio: what annotators did with the pre-labels", "")
    if acc is not None and len(acc):
        r.figure(A.plot_acceptance(acc), "acceptance.png", "pre-label acceptance per label")
        r.add(md_table(acc), "")
    m = run.metrics
    if "precision" in m:
        f = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
        r.add(f"At the stored threshold ({float(run.config.get('threshold') or 0):.2f}, IoU "
              f"{run.config.get('iou', iou)}): precision {f(m.get('precision'))}, recall {f(m.get('recall'))}, "
              f"F1 {f(m.get('f1'))} (tp {m.get('tp')}, fp {m.get('fp')}, fn {m.get('fn')}).", "")
    ws = A.work_saved(A.sweep(run, iou))
    best = A.best_work_threshold(A.sweep(run, iou))
    r.add(LS.WORK_SAVED_DEFINITION, "")
    r.figure(A.plot_work_saved(ws, best, assessed_from=float(run.config.get("threshold") or 0)),
             "work_saved.png", "annotation work saved per threshold")
    if best["saved"] <= 0:
        r.add("No threshold saves work: at every threshold the pre-labels to delete outnumber the "
              "useful ones.", "")
    else:
        r.add(f"Best threshold: **{best['threshold']:.2f}** ({best['saved']:.0f} boxes saved, "
              f"{best['tp']} matched and {best['fp']} unmatched pre-labels).", "")


def _compare_section(r: Report, runs: list, out: Path):
    labels = A.run_labels(runs)
    names = dict(zip(labels, (run.name for run in runs)))
    r.add(f"## Comparison of {len(runs)} runs (A is the reference)", "",
          md_table(A.model_table(runs), digits=1), "")
    if len({run.ann_path.resolve() for run in runs}) > 1:
        r.add("**Warning:** different ground truth: " + ", ".join(f"{k} `{run.ann_path}`"
                                                                 for k, run in zip(labels, runs)), "")
    cfg = A.compare_config(runs)
    if len(cfg):
        r.add("Settings that differ:", "", md_table(cfg), "")
    r.add(md_table(A.compare_metrics(runs), index=True, digits=1), "")
    cpc = A.compare_per_class(runs)
    cpc.to_csv(out / "compare_per_class.csv", index=False)
    r.figure(A.plot_compare_per_class(cpc, names), "compare_per_class.png", "per-class AP against run A")
    if all(run.kind != "lvis" for run in runs):
        r.figure(A.plot_pr_overlay(A.compare_pr(runs)), "compare_pr.png", "precision-recall of each run")
    ap_cols = [c for c in cpc.columns if c.startswith("AP_") or c.endswith(" − A")]
    r.add("Largest per-class losses against A (AP in %; all in `compare_per_class.csv`):", "",
          md_table(_pct_cols(cpc.head(10), ap_cols), digits=1), "")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m evaluation.report", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="run directories written by evaluation.coco, evaluation.lvis or evaluation.labelstudio; "
                        "the first is reported in full, all are compared")
    p.add_argument("--compare", metavar="RUN_DIR2", action="append", default=[],
                   help="another run to compare with the first (same as naming it after the first)")
    p.add_argument("--out", metavar="DIR", help="output directory (default FIRST_RUN_DIR/report)")
    p.add_argument("--precision", type=float, default=0.8,
                   help="target precision for the recommended threshold (default 0.8)")
    p.add_argument("--iou", type=float, default=0.5, help="IoU for the threshold sweep (default 0.5)")
    p.add_argument("--classes", help="comma-separated class names for the PR curves "
                                     "(default: the 2 best and 2 worst classes)")
    p.add_argument("--ann", help="ground-truth JSON, if not where metrics.json says")
    args = p.parse_args(argv)
    matplotlib.use("Agg")  # files only, whatever display this process has
    try:
        path = write_report(args.runs[0], args.out, [*args.runs[1:], *args.compare], args.precision, args.iou,
                            args.classes.split(",") if args.classes else None, args.ann)
    except (A.NotARunDir, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
