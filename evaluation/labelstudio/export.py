"""Label Studio tasks (annotations and predictions) as regions, and the comparison of the two.

Which file is which export, and its tasks in the JSON export's shape: formats.py; predictions the export
names by id: fetch.py; the one model version scored: versions.py.

Regions are rectangles in percent of the image (`value.x/y/width/height`, `rectanglelabels`), brush masks
(`value.rle` in Label Studio's RLE, `brushlabels`) or polygons (`value.points` in percent,
`polygonlabels`), with `original_width/height` in pixels when Label Studio knew them (always for brush
regions). An export with any brush or polygon region is scored by mask IoU ("segm"): every region, a
rectangle too, becomes a mask in the image's pixels (COCO RLE): brush RLE decoded by label-studio-sdk's
decoder (labelstudio.regions), polygons and rectangles rasterised by pixel centre (evaluation.masks).

When an annotator accepts pre-labels, Label Studio copies the prediction's regions with their ids into the
annotation, so regions are first paired by id; the rest are paired by overlap (IoU >= the given
threshold), for annotations drawn anew.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detection.boxes import box_iou, xywh_to_xyxy
from evaluation.masks import mask_iou, masks_to_coco_rle, polygon_mask, rle_bbox
from evaluation.matching import greedy_match
from labelstudio.regions import rle_to_mask
from labelstudio.regions.geometry import rectangle_box, rectangle_corners
from runtime.errors import InputError

from .fetch import require_prediction_objects
from .formats import final_annotation, read_export, require_annotated

GEOMETRY_TOL = 1e-3  # percent of the image: below this a region counts as untouched
TREATMENTS = ("kept", "moved_resized", "relabelled", "deleted", "added")
KINDS = ("rectanglelabels", "brushlabels", "polygonlabels")
MASK_KINDS = ("brushlabels", "polygonlabels")


@dataclass
class Region:
    id: str | None
    label: str
    x: float  # percent of width / height, top-left corner (a mask region: its mask's bounding box)
    y: float
    w: float
    h: float
    score: float | None = None
    rotation: float = 0.0
    kind: str = "rectanglelabels"
    shape: tuple = ()  # a mask region's own geometry as stored (polygon points, brush RLE)
    rle: dict | None = None  # COCO RLE in the image's pixels, set in a mask export (`with_masks`)

    def pixels(self, width: float, height: float) -> list[float]:
        """x, y, w, h in pixels as stored, rotation ignored (see `box` for the region's extent)."""
        return [self.x * width / 100, self.y * height / 100, self.w * width / 100, self.h * height / 100]

    def box(self, width: float, height: float) -> list[float]:
        """The pixel box (x, y, w, h) enclosing the region, its rotation applied: COCO ground truth, and the
        training targets read the same function (labelstudio.regions.geometry)."""
        return list(rectangle_box(self.x, self.y, self.w, self.h, self.rotation, width, height))

    def same_geometry(self, other: "Region") -> bool:
        if self.kind != other.kind:
            return False
        if self.kind == "brushlabels":
            return self.shape == other.shape
        if self.kind == "polygonlabels":
            return len(self.shape) == len(other.shape) and all(
                abs(a - b) <= GEOMETRY_TOL for a, b in zip(self.shape, other.shape))
        return all(abs(a - b) <= GEOMETRY_TOL for a, b in zip(
            (self.x, self.y, self.w, self.h, self.rotation), (other.x, other.y, other.w, other.h, other.rotation)))


@dataclass
class Task:
    id: int
    image: str
    width: float  # pixels, or 100 when the export has no original sizes (percent frame)
    height: float
    annotation: list[Region] | None  # the final annotation, None when the task has none
    prediction: list[Region] = field(default_factory=list)
    model_version: str | None = None

    @property
    def regions(self) -> list[Region]:
        return (self.annotation or []) + self.prediction


def _regions(result, task_id, default_score=None) -> tuple[list[Region], tuple[float, float] | None]:
    """Rectangle, brush and polygon regions of an annotation's or prediction's result; other results
    (choices, text, keypoints, ...) are not regions this evaluation scores."""
    regions, size = [], None
    for item in result or []:
        value = item.get("value") if isinstance(item, dict) else None
        if not isinstance(value, dict):
            continue
        kind = next((k for k in KINDS if item.get("type") == k or value.get(k)), None)
        labels = value.get(kind) if kind else None
        if not labels:
            continue
        rid = item.get("id")
        if isinstance(labels, str):
            labels = [labels]
        if not isinstance(labels, list):
            raise InputError(f"task {task_id}: region {rid!r} has {kind} {labels!r}, not a list of labels")
        try:
            if item.get("original_width") and item.get("original_height"):
                size = (float(item["original_width"]), float(item["original_height"]))
            score = item.get("score", default_score)
            score = None if score is None else float(score)
            if kind == "rectanglelabels":
                if not all(k in value for k in ("x", "y", "width", "height")):
                    raise InputError(f"task {task_id}: rectangle {rid!r} lacks value.x/y/width/height")
                regions.append(Region(rid, str(labels[0]), float(value["x"]), float(value["y"]),
                                      float(value["width"]), float(value["height"]), score,
                                      float(value.get("rotation") or 0.0)))
                continue
        except (TypeError, ValueError):
            raise InputError(f"task {task_id}: region {rid!r} has a size, score or position that is not a number "
                             "(original_width/height, score, value.x/y/width/height/rotation)") from None
        if not (item.get("original_width") and item.get("original_height")):
            raise InputError(f"task {task_id}: {kind} region {rid!r} has no original_width/original_height, "
                             "so its mask cannot be placed in pixels; export the project again from Label Studio")
        shape = _mask_shape(kind, value, task_id, rid)
        regions.append(Region(rid, str(labels[0]), 0.0, 0.0, 0.0, 0.0, score, kind=kind, shape=shape))
    return regions, size


def _mask_shape(kind: str, value: dict, task_id, region_id) -> tuple:
    if kind == "brushlabels":
        rle = value.get("rle")
        if value.get("format", "rle") != "rle" or not isinstance(rle, list):
            raise InputError(f"task {task_id}: brush region {region_id!r} is not in Label Studio's RLE format "
                             "(value.format 'rle' with a value.rle list)")
        try:
            return tuple(int(v) for v in rle)
        except (TypeError, ValueError):
            raise InputError(f"task {task_id}: brush region {region_id!r} has a value.rle that is not a list of "
                             "whole numbers") from None
    points = value.get("points")
    try:
        flat = tuple(float(v) for point in points for v in point)
    except (TypeError, ValueError):
        flat = ()
    if len(flat) < 6 or len(flat) % 2:
        raise InputError(f"task {task_id}: polygon region {region_id!r} needs value.points as at least 3 [x, y] "
                         "pairs in percent")
    return flat


def with_masks(task: Task) -> None:
    """Give every region of the task its mask (COCO RLE in the task's pixels), and mask regions their
    mask's bounding box as x/y/w/h."""

    width, height = int(round(task.width)), int(round(task.height))
    for region in task.regions:
        if region.kind == "brushlabels":
            try:
                mask = rle_to_mask(list(region.shape), width, height)
            except ValueError as exc:
                raise InputError(f"task {task.id}: brush region {region.id!r}: {exc}") from None
        elif region.kind == "polygonlabels":
            points = np.asarray(region.shape).reshape(-1, 2) / 100.0 * [width, height]
            mask = polygon_mask(points, width, height)
        else:
            mask = polygon_mask(_rectangle_corners(region, width, height), width, height)
        (region.rle,) = masks_to_coco_rle(mask[None])
        if region.kind in MASK_KINDS:
            x, y, w, h = rle_bbox(region.rle)
            region.x, region.y, region.w, region.h = x / width * 100, y / height * 100, w / width * 100, h / height * 100


def _rectangle_corners(region: Region, width: int, height: int) -> np.ndarray:
    """A rectangle's corners in pixels; Label Studio rotates it clockwise about its top-left corner."""
    return rectangle_corners(region.x, region.y, region.w, region.h, region.rotation, width, height)


def load_export(path: Path) -> list[Task]:
    """The tasks of a Label Studio JSON export whose annotated tasks hold their predictions as objects (a
    snapshot with full predictions; the CLI also fetches those of the Export button's JSON: fetch.py)."""
    return tasks_from_dicts(require_prediction_objects(read_export(path)).tasks, str(path))


def tasks_from_dicts(raw: list[dict], source: str) -> list[Task]:
    """Tasks in the JSON export's shape (formats.read_export) -> Tasks; with any brush or polygon region
    among the annotated tasks, every region of them carries its mask (`Region.rle`). A task with several
    predictions is compared with the one its final annotation started from, else the last."""
    tasks = []
    for t in raw:
        task_id = t["id"]
        ann = final_annotation(t)
        preds = [p for p in t.get("predictions") or [] if isinstance(p, dict)]  # ids: of unannotated tasks only
        parent = ann.get("parent_prediction") if ann else None
        pred = next((p for p in preds if parent is not None and p.get("id") == parent), preds[-1] if preds else None)
        ann_regions, size_a = _regions(ann.get("result"), task_id) if ann else (None, None)
        pred_regions, size_p = _regions(pred.get("result"), task_id, pred.get("score")) if pred else ([], None)
        width, height = size_a or size_p or (100.0, 100.0)
        image = next(iter((t.get("data") or {}).values()), "") if isinstance(t.get("data"), dict) else ""
        tasks.append(Task(task_id, str(image), width, height, ann_regions, pred_regions,
                          pred.get("model_version") if pred else None))
    require_annotated(raw, source)
    annotated = [t for t in tasks if t.annotation is not None]
    if is_mask_export(tasks):
        for t in annotated:
            with_masks(t)
    return tasks


def is_mask_export(tasks: list[Task]) -> bool:
    """Any brush or polygon region in an annotated task: the export is scored by mask IoU."""
    return any(r.kind in MASK_KINDS for t in tasks if t.annotation is not None for r in t.regions)


def region_ious(preds: list[Region], truths: list[Region]) -> np.ndarray:
    """(P, T) IoU: of the masks when the regions carry them (a mask export), else of the boxes (in percent
    of one image: the same as in pixels)."""
    if all(r.rle is not None for r in preds + truths):
        return mask_iou([p.rle for p in preds], [t.rle for t in truths])
    return box_iou(_xyxy(preds), _xyxy(truths))


def match_regions(preds: list[Region], truths: list[Region], iou_threshold: float, same_label: bool = True):
    """Greedy one-to-one matching (evaluation.matching), highest score first, each pre-label to its best
    unmatched region by IoU; with ``same_label`` only regions of the same label can match.

    Returns (pairs [(pred index, truth index)], unmatched pred indices, unmatched truth indices)."""
    order = sorted(range(len(preds)), key=lambda i: -(preds[i].score if preds[i].score is not None else 1.0))
    ious = region_ious([preds[i] for i in order], truths)
    if same_label:
        other = np.array([[preds[i].label != t.label for t in truths] for i in order], dtype=bool)
        ious[other.reshape(ious.shape)] = -1.0  # below any threshold
    matched = greedy_match(ious, iou_threshold)
    pairs = [(i, int(j)) for i, j in zip(order, matched) if j > -1]
    lonely = sorted(i for i, j in zip(order, matched) if j == -1)
    free = sorted(set(range(len(truths))) - {j for _, j in pairs})
    return pairs, lonely, free


def _xyxy(regions: list[Region]) -> np.ndarray:
    """Percent-of-image [x, y, w, h] -> xyxy."""
    return xywh_to_xyxy(np.array([[b.x, b.y, b.w, b.h] for b in regions], dtype=np.float64).reshape(-1, 4))


def prelabel_treatment(task: Task, iou_threshold: float) -> list[tuple[str, str]]:
    """(treatment, label) per pre-label of an annotated task, plus ('added', label) per new region."""
    preds, finals = task.prediction, task.annotation or []
    out, used_p, used_f = [], set(), set()
    by_id = {b.id: j for j, b in enumerate(finals) if b.id is not None}
    for i, p in enumerate(preds):  # Label Studio kept the region id: the annotator started from it
        j = by_id.get(p.id) if p.id is not None else None
        if j is None or j in used_f:
            continue
        f = finals[j]
        kind = "relabelled" if f.label != p.label else "kept" if f.same_geometry(p) else "moved_resized"
        out.append((kind, p.label))
        used_p.add(i)
        used_f.add(j)
    rest_p = [i for i in range(len(preds)) if i not in used_p]
    rest_f = [j for j in range(len(finals)) if j not in used_f]
    pairs, lonely, free = match_regions([preds[i] for i in rest_p], [finals[j] for j in rest_f], iou_threshold,
                                        same_label=False)
    for a, b in pairs:
        p, f = preds[rest_p[a]], finals[rest_f[b]]
        out.append(("relabelled" if f.label != p.label else "kept" if f.same_geometry(p) else "moved_resized", p.label))
    out += [("deleted", preds[rest_p[a]].label) for a in lonely]
    out += [("added", finals[rest_f[b]].label) for b in free]
    return out
