"""Every analysis figure and table of a run directory, as PNGs and a Markdown report.

    python -m evaluation.report RUN_DIR [--compare RUN_DIR2] [--out DIR] [--precision 0.8]

Writes into DIR (default RUN_DIR/report): report.md, the PNGs it shows, and the threshold sweeps as CSV.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from evaluation import analysis as A  # noqa: E402


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


def write_report(run_dir, out=None, compare=None, precision: float = 0.8, iou: float = 0.5,
                 classes=None, ann=None) -> Path:
    """Write report.md, figures and CSVs for RUN_DIR (and a comparison with ``compare``)."""
    run = A.load_run(run_dir, ann=ann)
    out = Path(out) if out else run.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    r = Report(out)
    cfg = run.config
    if run.kind == "labelstudio":
        setting = (f"- Label Studio export `{cfg.get('export')}`, model version `{run.model}`, pre-labels from "
                   f"score {float(cfg.get('threshold') or 0):.2f} ({cfg.get('threshold_source', '?')})")
    else:
        setting = f"- model: `{run.model}`, dtype `{cfg.get('dtype', '?')}`, batch size `{cfg.get('batch_size', '?')}`"
    r.add(f"# Evaluation report: `{run.name}`", "", setting,
          f"- ground truth: `{run.ann_path}`, {len(run.image_ids)} images, "
          f"{sum(A.num_gt(run).values())} non-crowd GT boxes, {len(run.detections)} detections", "")
    if cfg.get("non_parity"):
        r.add("**Not a parity run** (published figures use batch size 1, fp32): "
              + "; ".join(map(str, cfg["non_parity"])), "")

    r.add("## Summary (%)", "", md_table(A.summary_table(run), index=True, digits=1), "",
          "`value` is metrics.json, `recomputed` is COCOeval on detections.json here.", "")
    if run.kind != "labelstudio":
        r.add("### Against the published figures", "", md_table(A.published_comparison(run), digits=1), "")

    pc = A.per_class_table(run)
    r.add("## Per-class AP", "")
    r.figure(A.plot_per_class_ap(pc), "per_class_ap.png", "per-class AP, worst first")
    pc.to_csv(out / "per_class_ap.csv", index=False)
    r.add("Worst 10 classes (AP in %):", "", md_table(_pct_cols(pc.head(10), ["AP", "AP50", "AP75"]), digits=1), "")

    r.add("## AP by object size", "")
    r.figure(A.plot_ap_by_size(A.size_table(run)), "ap_by_size.png", "AP by object size")

    if classes is None:
        ranked = pc[pc["num_gt"] > 0].dropna(subset=["AP"])
        classes = list(dict.fromkeys(list(ranked["name"].tail(2)) + list(ranked["name"].head(2))))
    r.add("## Precision–recall", "", f"Overall (mean over classes) and for: {', '.join(classes) or '–'}.", "")
    r.figure(A.plot_pr_curves(A.pr_curves(run, classes=classes)), "pr_curves.png", "precision-recall curves")

    matched = A.matched_detections(run, iou)
    r.add(f"## Scores of true and false positives (IoU ≥ {iou:g})", "")
    r.figure(A.plot_score_histograms(matched, title=f"Scores of true vs false positives (IoU ≥ {iou:g})"),
             "score_histograms.png", "score histograms")

    sw = A.sweep(run, iou)
    rec = A.recommend_threshold(sw, precision)
    sw.to_csv(out / "threshold_sweep.csv", index=False)
    r.add("## Threshold sweep: which BOX_THRESHOLD to pre-label with", "",
          f"Precision, recall and F1 of the detections with score ≥ threshold, IoU ≥ {iou:g}, greedy "
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

    if run.kind == "labelstudio":
        _labelstudio_section(r, run, iou)
    if compare is not None:
        _compare_section(r, run, A.load_run(compare, ann=ann))

    (out / "report.md").write_text("\n".join(r.lines) + "\n")
    return out / "report.md"


def _labelstudio_section(r: Report, run, iou: float):
    acc = A.acceptance_table(run)
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
    r.add(A.WORK_SAVED_DEFINITION, "")
    r.figure(A.plot_work_saved(ws, best, assessed_from=float(run.config.get("threshold") or 0)),
             "work_saved.png", "annotation work saved per threshold")
    if best["saved"] <= 0:
        r.add("No threshold saves work: at every threshold the pre-labels to delete outnumber the "
              "useful ones.", "")
    else:
        r.add(f"Best threshold: **{best['threshold']:.2f}** ({best['saved']:.0f} boxes saved, "
              f"{best['tp']} matched and {best['fp']} unmatched pre-labels).", "")


def _compare_section(r: Report, a, b):
    r.add(f"## Comparison: A = `{a.name}`, B = `{b.name}`", "")
    if a.ann_path.resolve() != b.ann_path.resolve():
        r.add(f"**Warning:** different ground truth (`{a.ann_path}` vs `{b.ann_path}`).", "")
    cfg = A.compare_config(a, b)
    if len(cfg):
        r.add("Settings that differ:", "", md_table(cfg), "")
    r.add(md_table(A.compare_metrics(a, b), index=True, digits=1), "")
    cpc = A.compare_per_class(a, b)
    r.figure(A.plot_compare_per_class(cpc, a.name, b.name), "compare_per_class.png", "per-class AP, B vs A")
    r.figure(A.plot_pr_overlay(A.compare_pr(a, b)), "compare_pr.png", "precision-recall, both runs")
    r.add("Largest per-class losses (AP in %, B − A):", "",
          md_table(_pct_cols(cpc.head(10), ["AP_A", "AP_B", "delta"]), digits=1), "")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m evaluation.report", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="run directory written by evaluation.coco or evaluation.labelstudio")
    p.add_argument("--compare", metavar="RUN_DIR2", help="second run to compare with (B against A = RUN_DIR)")
    p.add_argument("--out", metavar="DIR", help="output directory (default RUN_DIR/report)")
    p.add_argument("--precision", type=float, default=0.8,
                   help="target precision for the recommended threshold (default 0.8)")
    p.add_argument("--iou", type=float, default=0.5, help="IoU for the threshold sweep (default 0.5)")
    p.add_argument("--classes", help="comma-separated class names for the PR curves "
                                     "(default: the 2 best and 2 worst classes)")
    p.add_argument("--ann", help="ground-truth JSON, if not where metrics.json says")
    args = p.parse_args(argv)
    try:
        path = write_report(args.run_dir, args.out, args.compare, args.precision, args.iou,
                            args.classes.split(",") if args.classes else None, args.ann)
    except (A.NotARunDir, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
