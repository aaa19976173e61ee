"""`python -m evaluation.labelstudio EXPORT.json`: pycocotools AP per label, precision/recall/F1 at the
backend's threshold, and how annotators treated the pre-labels; same run files as evaluation.coco.

An export with brush or polygon regions is scored by mask IoU (COCOeval segm, the matching on masks),
with box AP of the regions' bounding boxes beside it, as `evaluation.coco --iou-type segm` writes it."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from evaluation.analysis_sweep import match_detections, threshold_sweep
from evaluation.coco.scoring import coco_gt, per_class_table, score
from evaluation.runner.cli import exit_code
from evaluation.runner.run import library_versions
from evaluation.runner.summary import add_mask_columns
from runtime.errors import InputError
from runtime.files import atomic_write

from .coco import coco_files
from .export import TREATMENTS, Task, is_mask_export, prelabel_treatment, tasks_from_dicts
from .fetch import resolve_predictions
from .formats import ExportFile, read_export, require_annotated
from .target_options import TargetOptions
from .versions import VersionChoice, choose_version, keep_version
from .which_model import run_models


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.labelstudio",
        description="Score a Label Studio JSON export holding the backend's predictions and the annotators' "
                    "final regions: AP/AP50 per label (pycocotools), precision/recall/F1 of the stored pre-labels, "
                    "and counts of pre-labels kept, moved/resized, relabelled, deleted and regions added. "
                    "Rectangles are scored by box IoU; an export with brush or polygon regions by mask IoU "
                    "(mask AP, with box AP of the regions' bounding boxes beside it). One model version is "
                    "scored, on the annotated tasks it predicted.")
    p.add_argument("export", metavar="EXPORT.json",
                   help="Label Studio export: JSON (Export -> JSON; its prediction ids are fetched with "
                        "--label-studio-url/--api-key), a snapshot with full predictions, or JSON_MIN (needs "
                        "--label-studio-url/--api-key)")
    p.add_argument("--label-studio-url", metavar="URL",
                   help="Label Studio's address, to fetch the predictions an export names by id "
                        "(default: LABEL_STUDIO_URL)")
    p.add_argument("--api-key", metavar="KEY",
                   help="Label Studio access token for that (default: LABEL_STUDIO_API_KEY)")
    p.add_argument("--model-version", metavar="VERSION",
                   help="the model_version to score (default: the one predicting the most annotated tasks; "
                        "ties: the newest)")
    p.add_argument("--iou", type=float, default=0.5,
                   help="IoU for a pre-label to match a final region (precision/recall and treatment; default 0.5)")
    p.add_argument("--threshold", type=float, default=None,
                   help="score threshold for precision/recall/F1 (default: every stored pre-label, i.e. the "
                        "backend's threshold when it predicted)")
    p.add_argument("--out", metavar="RUN_DIR",
                   help="run directory (default runs/labelstudio-<export name>-<date>)")
    which = p.add_argument_group(
        "which model for this project (--model, repeatable): run each model over the annotated tasks' images "
        "instead of scoring the stored pre-labels, and recommend per label the model and threshold that save "
        "the most work")
    which.add_argument("--model", action="append", metavar="ID_OR_DIR",
                       help="a detector checkpoint (Grounding DINO family, SAM 3); give it once per model")
    which.add_argument("--images", metavar="DIR",
                       help="the tasks' image files (by the file name in each task's URL); default: fetched from "
                            "Label Studio with --label-studio-url/--api-key, as the backend fetches them")
    which.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    which.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    which.add_argument("--delete-cost", type=float, default=1.0,
                       help="deleting a wrong pre-label, in regions drawn (the work-saved rule; default 1)")
    return p


def threshold_counts(gt: dict, dets: list[dict], threshold: float, iou: float,
                     iou_type: str = "bbox") -> tuple[pd.DataFrame, pd.Series]:
    """Precision/recall/F1 of the pre-labels scoring >= threshold, per label and in total.

    The analysis toolkit's matching and sweep (pycocotools' greedy matching in score order, by box or
    mask IoU), so this report and `python -m evaluation.report` on the same run directory give the same
    numbers; no cap on pre-labels per task (pycocotools' 100 is an AP convention, a labelling team sees
    them all).
    """
    extra = ["segmentation"] if iou_type == "segm" else []
    gt_frame = pd.DataFrame(gt["annotations"], columns=["image_id", "category_id", "bbox", "iscrowd", *extra])
    det_frame = pd.DataFrame(dets, columns=["image_id", "category_id", "bbox", "score", *extra])
    matched = match_detections(gt_frame, det_frame, iou, max_dets=max(1, len(dets)), iou_type=iou_type)
    num_gt = {c["id"]: int((gt_frame["category_id"] == c["id"]).sum()) for c in gt["categories"]}
    columns = ["tp", "fp", "fn", "precision", "recall", "f1"]
    per_label = threshold_sweep(matched, num_gt, [threshold], by_class=True)
    names = {c["id"]: c["name"] for c in gt["categories"]}
    per_label.insert(0, "label", per_label["category_id"].map(names))
    total = threshold_sweep(matched, sum(num_gt.values()), [threshold]).iloc[0]
    return per_label[["label", *columns]].sort_values("label", ignore_index=True), total[columns]


def treatment_table(tasks: list[Task], iou: float) -> pd.DataFrame:
    counts: dict[str, dict] = {}
    for t in (t for t in tasks if t.annotation is not None):
        for kind, label in prelabel_treatment(t, iou):
            counts.setdefault(label, {"label": label, **{k: 0 for k in TREATMENTS}})[kind] += 1
    df = pd.DataFrame(sorted(counts.values(), key=lambda r: r["label"]), columns=["label", *TREATMENTS])
    df.insert(1, "prelabels", df[["kept", "moved_resized", "relabelled", "deleted"]].sum(axis=1))
    return df


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    # the command is recorded in metrics.json: without the key
    return exit_code(lambda: run(args, [a.replace(args.api_key, "***") if args.api_key else a for a in argv]))


@dataclass(frozen=True)
class ScoredExport:
    """An export as scored: one model version's pre-labels on the annotated tasks it predicted."""

    path: Path
    exported: ExportFile
    predictions_from: str  # where the predictions came from, in words (fetch.ResolvedTasks.source)
    choice: VersionChoice
    all_tasks: list[Task]
    tasks: list[Task]  # the scored tasks

    @property
    def iou_type(self) -> str:
        return "segm" if is_mask_export(self.tasks) else "bbox"


def run(args, argv) -> int:
    """Score the stored pre-labels into a run directory and print the summary (`--model`: which_model)."""
    if not 0 < args.iou <= 1:
        raise InputError(f"--iou must be in (0, 1], got {args.iou}")
    if args.model:
        return run_models(args, argv)
    if args.images:
        raise InputError("--images is used only with --model (the images the models run on): add --model, or drop "
                         "--images to score the stored pre-labels")
    export = Path(args.export).expanduser().resolve()
    t0 = time.perf_counter()
    scored = read_scored_export(export, args)
    out = make_run_dir(args.out or f"runs/labelstudio-{export.stem}-{datetime.date.today():%Y%m%d}")
    gt, dets = coco_files(scored.tasks)
    ann_path = out / "ground_truth.json"
    atomic_write(ann_path, json.dumps(gt))
    atomic_write(out / "detections.json", json.dumps(dets))
    metrics, text, per_class = score_ap(gt, dets, scored.iou_type)
    per_class.to_csv(out / "per_class.csv", index=False)
    scores = [d["score"] for d in dets]
    threshold = args.threshold if args.threshold is not None else (min(scores) if scores else 0.0)
    counts, total = threshold_counts(gt, dets, threshold, args.iou, scored.iou_type)
    per_label = per_class.rename(columns={"name": "label"}).merge(counts, on="label", how="left")
    per_label[["tp", "fp", "fn"]] = per_label[["tp", "fp", "fn"]].fillna(0).astype(int)
    per_label.to_csv(out / "per_label.csv", index=False)
    treatment = treatment_table(scored.tasks, args.iou)
    treatment.to_csv(out / "prelabels.csv", index=False)
    config = run_config(args, argv, scored, ann_path, threshold, [im["id"] for im in gt["images"]], t0)
    metrics.update({k: (None if pd.isna(total[k]) else float(total[k])) for k in ("precision", "recall", "f1")})
    metrics.update({k: int(total[k]) for k in ("tp", "fp", "fn")})
    metrics["prelabels"] = {k: int(treatment[k].sum()) for k in ["prelabels", *TREATMENTS]}
    metrics["config"] = config
    atomic_write(out / "metrics.json", json.dumps(metrics, indent=2, default=str))
    print_report(scored, metrics, text, out)
    return 0


def read_scored_export(export: Path, args) -> ScoredExport:
    """The export read, its predictions fetched when it holds only ids, and the model version to score chosen."""
    options = TargetOptions.from_options(args.label_studio_url, args.api_key, os.environ)
    exported = read_export(export)
    require_annotated(exported.tasks, str(export))
    resolved = resolve_predictions(exported, options)
    choice = choose_version(resolved.tasks, args.model_version)
    all_tasks = tasks_from_dicts(keep_version(resolved.tasks, choice), str(export))
    tasks = [t for t in all_tasks if t.annotation is not None and t.id in choice.task_ids]
    return ScoredExport(export, exported, resolved.source, choice, all_tasks, tasks)


def make_run_dir(path: str) -> Path:
    out = Path(path).resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the run directory {out} ({exc.strerror or exc}): choose another --out")
    return out


def score_ap(gt: dict, dets: list[dict], iou_type: str) -> tuple[dict, str, pd.DataFrame]:
    """pycocotools' metrics, its printed summary and the per-class table; masks beside boxes for "segm"."""
    ids = [im["id"] for im in gt["images"]]
    gt_coco = coco_gt(gt)
    metrics, ev, text = score(gt_coco, dets, ids)
    per_class = per_class_table(ev, gt["categories"])
    if iou_type == "segm":
        metrics["segm"], segm_ev, segm_text = score(gt_coco, dets, ids, "segm")
        text = f"boxes (COCOeval bbox):\n{text.rstrip()}\nmasks (COCOeval segm):\n{segm_text}"
        add_mask_columns(per_class, per_class_table(segm_ev, gt["categories"]))
    return metrics, text, per_class


def run_config(args, argv, scored: ScoredExport, ann_path: Path, threshold: float, ids: list, t0: float) -> dict:
    """metrics.json's "config": what was scored, how, and with which versions (the command without its key)."""
    tasks, all_tasks, choice = scored.tasks, scored.all_tasks, scored.choice
    return {
        "export": str(scored.path), "ann": str(ann_path), "images": None, "iou": args.iou, "iou_type": scored.iou_type,
        "region_kinds": sorted({r.kind for t in tasks if t.annotation is not None for r in t.regions}),
        "threshold": threshold,
        "threshold_source": "--threshold" if args.threshold is not None else "lowest stored pre-label score",
        "export_format": scored.exported.format, "predictions_from": scored.predictions_from,
        "model": choice.version or None, "model_version_choice": choice.reason,
        "model_versions": sorted(choice.versions), "annotated_tasks_per_version": choice.versions,
        "unpredicted_tasks": list(choice.unpredicted),
        "num_tasks": len(all_tasks), "num_annotated_tasks": sum(t.annotation is not None for t in all_tasks),
        "num_images": len(ids), "image_ids": ids,
        "pixel_sizes": all(t.width != 100.0 or t.height != 100.0 for t in tasks if t.annotation is not None),
        "rotated_boxes": sum(b.rotation != 0 for t in tasks for b in (t.annotation or []) + t.prediction),
        "versions": library_versions(), "command": argv,
        "timings": {"total_s": round(time.perf_counter() - t0, 3)},
    }


def print_report(scored: ScoredExport, metrics: dict, text: str, out: Path) -> None:
    config = metrics["config"]
    print(f"Label Studio {scored.exported.format} export {scored.path}: {config['num_images']} of its "
          f"{len(scored.all_tasks)} tasks scored ({config['num_annotated_tasks']} annotated); predictions: "
          f"{scored.predictions_from}")
    print(f"scored: {scored.choice.summary()}")
    print(text.rstrip())
    f = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    if "segm" in metrics:
        print(f"mask AP {100 * metrics['segm']['AP']:.1f} (box AP {100 * metrics['AP']:.1f})")
    mask = "mask " if config["iou_type"] == "segm" else ""
    print(f"at threshold {config['threshold']:.3f}, {mask}IoU {config['iou']}: precision {f(metrics['precision'])}, "
          f"recall {f(metrics['recall'])}, F1 {f(metrics['f1'])} (tp {metrics['tp']}, fp {metrics['fp']}, "
          f"fn {metrics['fn']})")
    print("pre-labels: " + ", ".join(f"{k.replace('_', '/')} {v}" for k, v in metrics["prelabels"].items()))
    print(f"results in {out}/ (detections.json, ground_truth.json, metrics.json, per_class.csv, per_label.csv, "
          "prelabels.csv)")
