"""Which model for this project: each model run over an export's annotated images, scored against the team's
final regions, and per label the model and threshold that would have saved the annotators the most work.

`python -m evaluation.labelstudio EXPORT.json --model A --model B ...`. Every model is prompted with the
project's labels by the backend's label -> phrase rule and run in ranking mode (its family's evaluation
protocol: no threshold, top `num_select` per image), so the threshold sweep sees every score. Per model:
COCOeval AP per label (boxes; masks too where the project has brush/polygon regions and the model makes
its own masks), then per label the work-saved rule of the analysis toolkit (`analysis_sweep.work_saved`:
every shown pre-label matching a final region spares drawing it, +1; every other one must be deleted,
-delete_cost) over the same thresholds as `python -m evaluation.report`. The recommended model of a label
saves the most work at its best threshold (ties: the higher AP, then the first model given).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, urlparse

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from detection import ImageError, open_image
from detection.phrases import class_phrases
from evaluation.analysis_sweep import DEFAULT_THRESHOLDS, best_work_threshold, match_detections, threshold_sweep
from evaluation.coco.run import to_coco
from evaluation.coco.scoring import coco_gt, per_class_table, score
from evaluation.protocols import protocol_for
from labelstudio.media_errors import MediaError
from runtime.errors import InputError
from runtime.files import atomic_write

from .coco import coco_files
from .export import Task

COLUMNS = ["label", "model", "num_gt", "AP", "AP50", "mask_AP", "matched_by", "threshold", "saved", "tp", "fp",
           "precision", "recall"]


class ImageSource:
    """The task's image: from a local directory (by the file name in the task's URL), or fetched from Label
    Studio as the backend fetches it (labelstudio.media)."""

    def __init__(self, images_dir: Path | None = None, fetcher=None):
        self.images_dir, self.fetcher = images_dir, fetcher

    @staticmethod
    def file_name(url: str) -> str:
        """`/data/upload/1/abc-cat.jpg` -> abc-cat.jpg; `/data/local-files/?d=dir/cat.jpg` -> cat.jpg."""
        parsed = urlparse(url)
        inner = parse_qs(parsed.query).get("d")
        return PurePosixPath(inner[0] if inner else parsed.path).name

    def check(self, tasks: list[Task]) -> None:
        """A local directory holds every task's image (InputError naming the first missing one)."""
        for task in tasks if self.images_dir is not None else ():
            self._path(task)

    def _path(self, task: Task) -> Path:
        path = self.images_dir / self.file_name(task.image)
        if not path.is_file():
            raise InputError(f"task {task.id}: its image {task.image!r} is not in --images {self.images_dir} "
                             f"(looked for {path.name})")
        return path

    def open(self, task: Task):
        if self.images_dir is not None:
            path = self._path(task)
            try:
                return open_image(path)
            except ImageError as exc:
                raise InputError(f"task {task.id}: {path}: {exc}") from None
        try:
            return self.fetcher.fetch_image(task.image, task.id)
        except MediaError as exc:
            raise InputError(f"task {task.id}: could not fetch its image ({exc}): give --images DIR, or check "
                             "--label-studio-url/--api-key") from None


@dataclass
class ModelRun:
    model: str
    family: str
    own_masks: bool
    num_select: int
    detections: list[dict]  # COCO results in the tasks' frames


def run_model(detector, model: str, tasks: list[Task], labels: list[str], images: ImageSource, masks: bool,
              num_select: int | None = None) -> ModelRun:
    """`detector` over every task's image in ranking mode; boxes (and its own masks) in the task's frame."""
    num_select = num_select or protocol_for(detector.family).num_select
    own = masks and detector.family.capabilities.own_masks
    prompt = detector.prompt([class_phrases(label) for label in labels])
    category_ids = list(range(1, len(labels) + 1))  # coco_files numbers the sorted labels from 1
    results = []
    for task in tasks:
        image = images.open(task)
        (dets,) = detector.rank([image], prompt, num_select, **({"masks": True} if own else {}))
        sx, sy = task.width / image.width, task.height / image.height
        if own and (sx, sy) != (1.0, 1.0):
            raise InputError(f"task {task.id}: its image is {image.width}x{image.height} pixels but its regions were "
                             f"drawn on {task.width:g}x{task.height:g}: masks cannot be compared")
        dets.boxes = dets.boxes * dets.boxes.new_tensor([sx, sy, sx, sy])
        results += to_coco(task.id, dets, category_ids, dets.masks if own else None)
    return ModelRun(model, detector.family.name, own, num_select, results)


def ground_truth(tasks: list[Task]) -> tuple[dict, list[str]]:
    """The final regions as COCO ground truth (the stored pre-labels left out) and the labels in category order."""
    gt, _ = coco_files([replace(t, prediction=[]) for t in tasks])
    return gt, [c["name"] for c in gt["categories"]]


def score_run(gt: dict, run: ModelRun, mask_project: bool, iou: float, delete_cost: float = 1.0) -> pd.DataFrame:
    """Per label: AP (boxes; masks where both sides have them) and the work-saved rule's best threshold."""
    ids = [im["id"] for im in gt["images"]]
    gt_coco = coco_gt(gt)
    _, ev, _ = score(gt_coco, run.detections, ids)
    table = per_class_table(ev, gt["categories"]).rename(columns={"name": "label"})
    by_mask = mask_project and run.own_masks
    table["mask_AP"] = per_class_table(score(gt_coco, run.detections, ids, "segm")[1], gt["categories"])["AP"] \
        if by_mask else np.nan
    iou_type = "segm" if by_mask else "bbox"
    extra = ["segmentation"] if by_mask else []
    gt_frame = pd.DataFrame(gt["annotations"], columns=["image_id", "category_id", "bbox", "iscrowd", *extra])
    det_frame = pd.DataFrame(run.detections, columns=["image_id", "category_id", "bbox", "score", *extra])
    matched = match_detections(gt_frame, det_frame, iou, max_dets=max(1, len(det_frame)), iou_type=iou_type)
    num_gt = {c["id"]: int((gt_frame["category_id"] == c["id"]).sum()) for c in gt["categories"]}
    sweep = threshold_sweep(matched, num_gt, DEFAULT_THRESHOLDS, by_class=True)
    rows = []
    for category_id, label in zip(table["category_id"], table["label"]):
        best = best_work_threshold(sweep[sweep["category_id"] == category_id].reset_index(drop=True), delete_cost)
        rows.append({"label": label, **{k: best[k] for k in ("threshold", "saved", "tp", "fp", "precision", "recall")}})
    out = table.merge(pd.DataFrame(rows), on="label")
    out["model"], out["matched_by"] = run.model, "mask" if by_mask else "box"
    return out[COLUMNS]


def recommend(table: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """Per label the row of the model that saves the most work (ties: higher AP, then the first model given)."""
    order = {m: k for k, m in enumerate(models)}
    ranked = table.assign(_order=table["model"].map(order), _ap=table["AP"].fillna(-1.0))
    ranked = ranked.sort_values(["label", "saved", "_ap", "_order"], ascending=[True, False, False, True], kind="stable")
    return ranked.groupby("label", sort=True).head(1).drop(columns=["_order", "_ap"]).reset_index(drop=True)


def safe_name(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model.rstrip("/")).name or model)


def write_comparison(out: Path, gt: dict, runs: list[ModelRun], table: pd.DataFrame, best: pd.DataFrame,
                     config: dict) -> None:
    """comparison.csv, recommendation.csv, comparison.png, comparison.md, metrics.json and each model's
    detections (models/<name>/detections.json) in the run directory."""
    atomic_write(out / "ground_truth.json", json.dumps(gt))
    for run in runs:
        (out / "models" / safe_name(run.model)).mkdir(parents=True, exist_ok=True)
        atomic_write(out / "models" / safe_name(run.model) / "detections.json", json.dumps(run.detections))
    table.to_csv(out / "comparison.csv", index=False)
    best.to_csv(out / "recommendation.csv", index=False)
    matplotlib.use("Agg")  # files only, whatever display this process has
    fig = plot_comparison(table)
    fig.savefig(out / "comparison.png", dpi=100)
    plt.close(fig)
    atomic_write(out / "comparison.md", comparison_markdown(table, best, config))
    atomic_write(out / "metrics.json", json.dumps({"recommendation": best.to_dict("records"),
                                                   "comparison": table.to_dict("records"), "config": config},
                                                  indent=2, default=str))


def plot_comparison(table: pd.DataFrame):
    """Regions saved per label at each model's best threshold, one bar per model (the report's figure)."""
    labels = sorted(table["label"].unique())
    models = list(dict.fromkeys(table["model"]))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(labels) * len(models)), 3.5))
    width = 0.8 / len(models)
    for k, model in enumerate(models):
        saved = table[table["model"] == model].set_index("label").reindex(labels)["saved"]
        ax.bar(np.arange(len(labels)) + k * width, saved, width, label=safe_name(model))
    ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels, rotation=30, ha="right")
    ax.set_ylabel("regions saved at the best threshold")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def load_comparison(run_dir) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every model per label, the recommendation per label) of a `--model` run directory."""
    run_dir = Path(run_dir)
    if not (run_dir / "comparison.csv").is_file():
        raise InputError(f"{run_dir} holds no comparison.csv: run python -m evaluation.labelstudio EXPORT.json "
                         "--model A --model B --out DIR first")
    return pd.read_csv(run_dir / "comparison.csv"), pd.read_csv(run_dir / "recommendation.csv")


def _cell(value, digits: int = 3) -> str:
    if isinstance(value, float):
        return "n/a" if np.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def comparison_markdown(table: pd.DataFrame, best: pd.DataFrame, config: dict) -> str:
    lines = [f"# Which model for this project: {config['export']}", "",
             f"{config['num_images']} annotated tasks; regions matched at IoU {config['iou']}; work saved = "
             f"matched pre-labels - {config['delete_cost']:g} x pre-labels to delete, at each model's best threshold "
             "per label.", "", "## Recommendation per label", "",
             "| label | model | threshold | saved | AP | mask AP |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.label} | {r.model} | {r.threshold:.2f} | {r.saved:g} | {_cell(r.AP)} | {_cell(r.mask_AP)} |"
              for r in best.itertuples()]
    lines += ["", "## Every model", "", "![regions saved per label](comparison.png)", "",
              "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(getattr(r, c)) for c in COLUMNS) + " |" for r in table.itertuples()]
    return "\n".join(lines) + "\n"
