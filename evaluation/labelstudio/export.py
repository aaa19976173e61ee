"""Read a Label Studio JSON export (tasks with predictions and annotations) and compare the two.

Regions are rectangles in percent of the image (`value.x/y/width/height`, `rectanglelabels`), with
`original_width/height` in pixels when Label Studio knew them. When an annotator accepts pre-labels,
Label Studio copies the prediction's regions with their ids into the annotation, so regions are first
paired by id; the rest are paired by overlap (IoU >= the given threshold), for annotations drawn anew.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backend.detection.boxes import box_iou, xywh_to_xyxy
from evaluation.runner.errors import InputError
from evaluation.matching import greedy_match

GEOMETRY_TOL = 1e-3  # percent of the image: below this a box counts as untouched
TREATMENTS = ("kept", "moved_resized", "relabelled", "deleted", "added")


@dataclass
class Box:
    id: str | None
    label: str
    x: float  # percent of width / height, top-left corner
    y: float
    w: float
    h: float
    score: float | None = None
    rotation: float = 0.0

    def pixels(self, width: float, height: float) -> list[float]:
        return [self.x * width / 100, self.y * height / 100, self.w * width / 100, self.h * height / 100]

    def same_geometry(self, other: "Box") -> bool:
        return all(abs(a - b) <= GEOMETRY_TOL for a, b in zip(
            (self.x, self.y, self.w, self.h, self.rotation), (other.x, other.y, other.w, other.h, other.rotation)))


@dataclass
class Task:
    id: int
    image: str
    width: float  # pixels, or 100 when the export has no original sizes (percent frame)
    height: float
    annotation: list[Box] | None  # the final annotation, None when the task has none
    prediction: list[Box] = field(default_factory=list)
    model_version: str | None = None


def _boxes(result, default_score=None) -> tuple[list[Box], tuple[float, float] | None]:
    boxes, size = [], None
    for region in result or []:
        value = region.get("value") or {}
        labels = value.get("rectanglelabels")
        if region.get("type") != "rectanglelabels" and not labels:
            continue
        if not labels or not all(k in value for k in ("x", "y", "width", "height")):
            continue
        if region.get("original_width") and region.get("original_height"):
            size = (float(region["original_width"]), float(region["original_height"]))
        score = region.get("score", default_score)
        boxes.append(Box(region.get("id"), str(labels[0]), float(value["x"]), float(value["y"]),
                         float(value["width"]), float(value["height"]),
                         None if score is None else float(score), float(value.get("rotation") or 0.0)))
    return boxes, size


def _final_annotation(task: dict):
    anns = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not anns:
        return None
    return max(enumerate(anns), key=lambda p: (str(p[1].get("updated_at") or ""), p[0]))[1]


def load_export(path: Path) -> list[Task]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"export file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, list) or not all(isinstance(t, dict) for t in data):
        raise InputError(f"{path} is not a Label Studio JSON export (expected a list of tasks)")
    tasks = []
    for n, t in enumerate(data):
        ann = _final_annotation(t)
        preds = t.get("predictions") or []
        parent = ann.get("parent_prediction") if ann else None
        pred = next((p for p in preds if parent is not None and p.get("id") == parent), preds[-1] if preds else None)
        ann_boxes, size_a = _boxes(ann.get("result")) if ann else (None, None)
        pred_boxes, size_p = _boxes(pred.get("result"), pred.get("score")) if pred else ([], None)
        width, height = size_a or size_p or (100.0, 100.0)
        image = next(iter((t.get("data") or {}).values()), "") if isinstance(t.get("data"), dict) else ""
        try:
            task_id = int(t.get("id", n + 1))
        except (TypeError, ValueError):
            task_id = n + 1
        tasks.append(Task(task_id, str(image), width, height, ann_boxes, pred_boxes,
                          pred.get("model_version") if pred else None))
    if not any(t.annotation is not None for t in tasks):
        raise InputError(f"{path} has no annotated tasks: nothing to score the predictions against")
    return tasks


def match_boxes(preds: list[Box], truths: list[Box], iou_threshold: float, same_label: bool = True):
    """Greedy one-to-one matching (evaluation.matching), highest score first, each pre-label to its best
    unmatched box by IoU; with ``same_label`` only boxes of the same label can match.

    Returns (pairs [(pred index, truth index)], unmatched pred indices, unmatched truth indices)."""
    order = sorted(range(len(preds)), key=lambda i: -(preds[i].score if preds[i].score is not None else 1.0))
    ious = box_iou(_xyxy([preds[i] for i in order]), _xyxy(truths))
    if same_label:
        other = np.array([[preds[i].label != t.label for t in truths] for i in order], dtype=bool)
        ious[other.reshape(ious.shape)] = -1.0  # below any threshold
    matched = greedy_match(ious, iou_threshold)
    pairs = [(i, int(j)) for i, j in zip(order, matched) if j > -1]
    lonely = sorted(i for i, j in zip(order, matched) if j == -1)
    free = sorted(set(range(len(truths))) - {j for _, j in pairs})
    return pairs, lonely, free


def _xyxy(boxes: list[Box]) -> np.ndarray:
    """Percent-of-image [x, y, w, h] -> xyxy (IoU is the same in percent as in pixels of one image)."""
    return xywh_to_xyxy(np.array([[b.x, b.y, b.w, b.h] for b in boxes], dtype=np.float64).reshape(-1, 4))


def prelabel_treatment(task: Task, iou_threshold: float) -> list[tuple[str, str]]:
    """(treatment, label) per pre-label of an annotated task, plus ('added', label) per new box."""
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
    pairs, lonely, free = match_boxes([preds[i] for i in rest_p], [finals[j] for j in rest_f], iou_threshold,
                                      same_label=False)
    for a, b in pairs:
        p, f = preds[rest_p[a]], finals[rest_f[b]]
        out.append(("relabelled" if f.label != p.label else "kept" if f.same_geometry(p) else "moved_resized", p.label))
    out += [("deleted", preds[rest_p[a]].label) for a in lonely]
    out += [("added", finals[rest_f[b]].label) for b in free]
    return out
