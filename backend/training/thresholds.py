"""Per-label box thresholds learned from the tasks annotators reviewed.

A reviewed task is an annotated task that holds a prediction of the model version being served: its
pre-labels were shown to an annotator, whose final boxes say which ones were right. Per label, the
threshold is the one that maximises the *work saved* (``evaluation.analysis_sweep.work_saved``:
matched pre-labels spare drawing a box, unmatched ones must be deleted), matched as pycocotools
matches (``match_detections``), swept by ``threshold_sweep``. Those rules have one home, the
evaluation toolkit; this module only feeds them Label Studio tasks and applies two guards:

- a label moves away from its configured threshold only with at least ``min_reviewed_boxes``
  reviewed boxes (pre-labels shown plus boxes annotators drew that no pre-label matched);
- thresholds below the configured one are never chosen: the stored pre-labels were predicted at the
  configured threshold (it is part of ``model_version``), so lower ones were never shown to anybody.
"""
from __future__ import annotations

import datetime
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from evaluation.analysis_sweep import DEFAULT_THRESHOLDS, best_work_threshold, match_detections, threshold_sweep
from evaluation.labelstudio.coco import coco_files
from evaluation.labelstudio.export import Task

from .tasks import as_dict, read_tasks

LEARNED = "learned"
TOO_FEW = "configured: too few reviewed boxes"
NO_PRELABELS = "configured: no pre-labels of this label were reviewed"
SOURCES = (LEARNED, TOO_FEW, NO_PRELABELS)


@dataclass(frozen=True)
class LabelThreshold:
    """One label's threshold and the evidence for it (counts at that threshold)."""

    threshold: float
    configured: float
    reviewed_boxes: int  # pre-labels shown + boxes drawn that no pre-label matched
    precision: float | None  # of the pre-labels scoring >= threshold; None when none does
    recall: float | None  # of the final boxes; None when the label has no final box
    tp: int
    fp: int
    fn: int
    work_saved: float  # tp - delete_cost * fp at the threshold
    source: str  # one of SOURCES


@dataclass(frozen=True)
class LearnedThresholds:
    """The thresholds of one project, learned from the predictions of one model version."""

    project: str
    model_version: str
    labels: dict[str, LabelThreshold]
    reviewed_tasks: int
    min_reviewed_boxes: int
    iou: float = 0.5
    delete_cost: float = 1.0
    created_at: str = field(
        default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))

    def thresholds(self) -> dict[str, float]:
        """label -> threshold to pre-label with."""
        return {label: t.threshold for label, t in self.labels.items()}

    @property
    def learned_labels(self) -> list[str]:
        return [label for label, t in self.labels.items() if t.source == LEARNED]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "LearnedThresholds":
        data = json.loads(text)
        labels = {k: LabelThreshold(**v) for k, v in data.pop("labels").items()}
        return cls(labels=labels, **data)

    def describe(self) -> str:
        """One line per label, for logs and the command line."""
        lines = [f"project {self.project}: {self.reviewed_tasks} reviewed tasks of model version {self.model_version}"]
        for label, t in sorted(self.labels.items()):
            p = "n/a" if t.precision is None else f"{t.precision:.2f}"
            r = "n/a" if t.recall is None else f"{t.recall:.2f}"
            lines.append(f"  {label}: {t.threshold:.2f} (configured {t.configured:.2f}; {t.reviewed_boxes} reviewed "
                         f"boxes, precision {p}, recall {r}, work saved {t.work_saved:g}; {t.source})")
        return "\n".join(lines)


def reviewed_tasks(tasks: Iterable, model_version: str) -> list[Task]:
    """Annotated tasks holding a prediction of ``model_version``, with that prediction and the final annotation."""
    selected = []
    for task in tasks:
        t = as_dict(task)
        preds = [p for p in map(as_dict, t.get("predictions") or []) if p.get("model_version") == model_version]
        if preds:
            selected.append({**t, "annotations": [as_dict(a) for a in t.get("annotations") or []],
                             "predictions": preds[-1:]})
    return read_tasks(selected)


def learn_thresholds(
    tasks: Iterable,
    project: str,
    model_version: str,
    configured: Mapping[str, float],
    min_reviewed_boxes: int = 20,
    iou: float = 0.5,
    delete_cost: float = 1.0,
) -> LearnedThresholds:
    """Per label of ``configured`` (label -> the threshold it was predicted with), the threshold to use.

    ``tasks`` are Label Studio tasks (dicts or label-studio-sdk task objects, with their annotations and
    predictions: ``tasks.list(..., fields="all")``); only those reviewed against ``model_version`` count.
    """
    if min_reviewed_boxes < 1:
        raise ValueError(f"min_reviewed_boxes must be at least 1, got {min_reviewed_boxes}")
    if not 0 < iou <= 1:
        raise ValueError(f"iou must be in (0, 1], got {iou}")
    reviewed = reviewed_tasks(tasks, model_version)
    gt, dets = coco_files(reviewed) if reviewed else ({"annotations": [], "categories": []}, [])
    matched, num_gt, cat_of = _matching(gt, dets, iou)
    labels = {}
    for label, configured_t in configured.items():
        cat = cat_of.get(label)
        sweep = _label_sweep(matched, cat, num_gt.get(cat, 0), float(configured_t))
        labels[label] = _choose(sweep, float(configured_t), min_reviewed_boxes, delete_cost)
    return LearnedThresholds(project=str(project), model_version=model_version, labels=labels,
                             reviewed_tasks=len(reviewed), min_reviewed_boxes=min_reviewed_boxes, iou=iou,
                             delete_cost=delete_cost)


def _matching(gt: dict, dets: list[dict], iou: float):
    gt_frame = pd.DataFrame(gt["annotations"], columns=["image_id", "category_id", "bbox", "iscrowd"])
    det_frame = pd.DataFrame(dets, columns=["image_id", "category_id", "bbox", "score"])
    # No cap on pre-labels per task: pycocotools' 100 is an AP convention, an annotator sees them all.
    matched = match_detections(gt_frame, det_frame, iou, max_dets=max(1, len(dets)))
    num_gt = gt_frame.groupby("category_id").size().to_dict() if len(gt_frame) else {}
    return matched, num_gt, {c["name"]: c["id"] for c in gt["categories"]}


def _label_sweep(matched: pd.DataFrame, cat, n_gt: int, configured: float) -> pd.DataFrame:
    """The sweep of one label over thresholds >= the configured one (the first row is the configured one)."""
    grid = np.unique(np.concatenate([[configured], DEFAULT_THRESHOLDS[DEFAULT_THRESHOLDS >= configured]]))
    own = matched[matched["category_id"] == cat] if cat is not None else matched.iloc[0:0]
    return threshold_sweep(own, {cat: int(n_gt)}, grid, by_class=True)


def _choose(sweep: pd.DataFrame, configured: float, min_boxes: int, delete_cost: float) -> LabelThreshold:
    at_configured = sweep.iloc[0]
    reviewed = int(at_configured["tp"] + at_configured["fp"] + at_configured["fn"])
    if int(at_configured["detections"]) == 0:
        source, threshold = NO_PRELABELS, configured
    elif reviewed < min_boxes:
        source, threshold = TOO_FEW, configured
    else:
        source, threshold = LEARNED, best_work_threshold(sweep, delete_cost)["threshold"]
    row = sweep[np.isclose(sweep["threshold"], threshold)].iloc[0]
    return LabelThreshold(
        threshold=float(threshold), configured=configured, reviewed_boxes=reviewed,
        precision=_number(row["precision"]), recall=_number(row["recall"]), tp=int(row["tp"]), fp=int(row["fp"]),
        fn=int(row["fn"]), work_saved=float(row["tp"] - delete_cost * row["fp"]), source=source)


def _number(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def configured_thresholds(mapping, default: float) -> dict[str, float]:
    """label -> the threshold the backend predicts it with: its control's ``model_score_threshold``, else
    ``default`` (BOX_THRESHOLD). ``mapping`` is ``labelstudio.label_config.parse_label_config(config)``."""
    out: dict[str, float] = {}
    for label_set in mapping.active:
        if label_set.kind != "rectanglelabels":
            continue
        for c in label_set.classes:
            out.setdefault(c.label, label_set.threshold if label_set.threshold is not None else default)
    return out
