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

Thresholds belong to the model they were learned on (``LearnedThresholds.model``): the served model's
from its reviewed tasks (``learn_thresholds``), a fine-tuned model's from its own detections on the
held-out images (``learn_heldout_thresholds``, where every score was seen, so the grid starts at
``HELDOUT_FLOOR``). ``ProjectStore`` keeps each model's with it and applies them to that model only.

A learned threshold that shows nothing (the boxes of that label cost more than they save) switches
the label's pre-labels *off*; it is said in words (``LabelThreshold.off_reason``). The rule never ends
pre-labelling for a whole project: when every label would be off, each keeps its configured threshold
(source ``ALL_OFF``) and the message says so (``LearnedThresholds.warnings``).
"""
from __future__ import annotations

import datetime
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import PurePath
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
ALL_OFF = "configured: the rule would switch off every label"
EARLIER = "learned earlier: too little new evidence to move it"
SOURCES = (LEARNED, TOO_FEW, NO_PRELABELS, ALL_OFF, EARLIER)
APPLIED = (LEARNED, EARLIER)  # the sources prediction applies
REVIEWED, HELDOUT = "reviewed tasks", "held-out images"  # where the evidence comes from
HELDOUT_FLOOR = 0.01  # lowest threshold tried on held-out detections (every score was seen there)


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
    # At the lowest threshold tried (the configured one for reviewed tasks): boxes shown and boxes that
    # matched a final box. None in files written before they were recorded.
    shown: int | None = None
    kept: int | None = None

    @property
    def off(self) -> bool:
        """Learned, and nothing is shown at it: the label's pre-labels cost more than they save."""
        return self.source in APPLIED and self.tp + self.fp == 0

    def off_reason(self, label: str, evidence: str = REVIEWED) -> str | None:
        """``"Square: pre-labels off — reviewers deleted all 1,000 boxes"``; None when the label is on."""
        if not self.off and self.source != ALL_OFF:
            return None
        shown, kept = self.shown or 0, self.kept or 0
        if self.source == EARLIER or (self.source == ALL_OFF and shown == 0):
            why = "switched off by an earlier training; nothing shown since"
        elif self.shown is None:  # a file written before the counts were recorded
            why = "its boxes cost more than they save"
        elif evidence == HELDOUT:
            why = (f"none of its {shown:,} boxes on the held-out images was right" if kept == 0 else
                   f"{shown - kept:,} of its {shown:,} boxes on the held-out images were wrong, which costs more "
                   f"than the {kept:,} right ones save")
        else:
            why = (f"reviewers deleted all {shown:,} boxes" if kept == 0 else
                   f"reviewers deleted {shown - kept:,} of {shown:,} boxes, which costs more than the {kept:,} kept "
                   "ones save")
        if self.source == ALL_OFF:
            return f"{label}: {why}"
        return f"{label}: pre-labels off — {why}"


@dataclass(frozen=True)
class LearnedThresholds:
    """The thresholds of one project, learned from the predictions of one model version."""

    project: str
    model_version: str  # the version whose predictions were reviewed ("" for held-out evidence)
    labels: dict[str, LabelThreshold]
    reviewed_tasks: int  # tasks reviewed, or held-out images scored (see ``evidence``)
    min_reviewed_boxes: int
    iou: float = 0.5
    delete_cost: float = 1.0
    # The checkpoint (hub id or directory) the thresholds were learned on and apply to; None in files
    # written before it was recorded (those were always learned on the base model).
    model: str | None = None
    evidence: str = REVIEWED
    created_at: str = field(
        default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))

    def thresholds(self) -> dict[str, float]:
        """label -> threshold to pre-label with."""
        return {label: t.threshold for label, t in self.labels.items()}

    def applied(self) -> dict[str, float]:
        """label -> threshold for the labels whose threshold was learned (what prediction applies)."""
        return {label: t.threshold for label, t in self.labels.items() if t.source in APPLIED}

    @property
    def learned_labels(self) -> list[str]:
        return [label for label, t in self.labels.items() if t.source == LEARNED]

    def warnings(self) -> list[str]:
        """In words: each label switched off, or that the rule would have switched off every label."""
        off = [t.off_reason(label, self.evidence) for label, t in sorted(self.labels.items()) if t.off]
        kept_on = [t.off_reason(label, self.evidence) for label, t in sorted(self.labels.items())
                   if t.source == ALL_OFF]
        if kept_on:
            off.append("pre-labels kept on for every label at its configured threshold: the rule would switch "
                       f"off all of them ({'; '.join(kept_on)}), which would end pre-labelling for the project")
        return off

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "LearnedThresholds":
        data = json.loads(text)
        labels = {k: LabelThreshold(**v) for k, v in data.pop("labels").items()}
        return cls(labels=labels, **data)

    def describe(self) -> str:
        """One line per label, for logs, the command line and the status page."""
        if self.evidence == HELDOUT:
            head = f"project {self.project}: {self.reviewed_tasks} held-out images"
        else:
            head = f"project {self.project}: {self.reviewed_tasks} reviewed tasks of model version {self.model_version}"
        lines = [head + (f" (thresholds of {_model_name(self.model)})" if self.model else "")]
        boxes = "boxes" if self.evidence == HELDOUT else "reviewed boxes"
        for label, t in sorted(self.labels.items()):
            p = "n/a" if t.precision is None else f"{t.precision:.2f}"
            r = "n/a" if t.recall is None else f"{t.recall:.2f}"
            off = t.off_reason(label, self.evidence) if t.off else None
            lines.append(f"  {label}: {t.threshold:.2f} (configured {t.configured:.2f}; {t.reviewed_boxes} {boxes}, "
                         f"precision {p}, recall {r}, work saved {t.work_saved:g}; {t.source})"
                         + (f" — {off.split(' — ', 1)[1]}" if off else ""))
        lines.extend(w for w in self.warnings() if w.startswith("pre-labels kept on"))
        return "\n".join(lines)


def _model_name(model: str) -> str:
    return PurePath(model.rstrip("/\\")).name or model


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
    model: str | None = None,
    earlier: Mapping[str, float] | None = None,
) -> LearnedThresholds:
    """Per label of ``configured`` (label -> its label config threshold), the threshold to use.

    ``tasks`` are Label Studio tasks (dicts or label-studio-sdk task objects, with their annotations and
    predictions: ``tasks.list(..., fields="all")``); only those reviewed against ``model_version`` count.
    ``model`` is the checkpoint that made those predictions, ``earlier`` the thresholds learned on it before
    (what the predictions were made with, in place of the configured ones): a label with too little new
    evidence keeps its earlier threshold (source ``EARLIER``).
    """
    _check(min_reviewed_boxes, iou)
    earlier = {k: float(v) for k, v in (earlier or {}).items() if k in configured}
    reviewed = reviewed_tasks(tasks, model_version)
    gt, dets = coco_files(reviewed) if reviewed else ({"annotations": [], "categories": []}, [])
    matched, num_gt, cat_of = _matching(gt, dets, iou)
    floor = {label: earlier.get(label, float(t)) for label, t in configured.items()}  # what was predicted with
    sweeps = {label: _label_sweep(matched, cat_of.get(label), num_gt.get(cat_of.get(label), 0), floor[label],
                                  float(configured[label])) for label in configured}
    labels = {label: _choose(sweeps[label], floor[label], min_reviewed_boxes, delete_cost, False,
                             float(configured[label])) for label in configured}
    labels = {label: (replace(t, source=EARLIER) if label in earlier and t.source in (TOO_FEW, NO_PRELABELS) else t)
              for label, t in labels.items()}
    labels = _keep_project_on(labels, sweeps, configured, delete_cost)
    return LearnedThresholds(project=str(project), model_version=model_version, labels=labels,
                             reviewed_tasks=len(reviewed), min_reviewed_boxes=min_reviewed_boxes, iou=iou,
                             delete_cost=delete_cost, model=model, evidence=REVIEWED)


def learn_heldout_thresholds(
    gt: dict,
    detections: list[dict],
    project: str,
    model: str,
    configured: Mapping[str, float],
    min_boxes: int = 20,
    iou: float = 0.5,
    delete_cost: float = 1.0,
) -> LearnedThresholds:
    """A (fine-tuned) model's own thresholds, from its detections on held-out images with known boxes.

    ``gt`` is a COCO dataset of the held-out images (category names are the labels), ``detections``
    the model's COCO results on them as the backend shows them (labelling mode, at ``HELDOUT_FLOOR``).
    Every score was seen, so thresholds below the configured one may be chosen; a label needs
    ``min_boxes`` true boxes on the held-out images before its threshold moves.
    """
    _check(min_boxes, iou)
    matched, num_gt, cat_of = _matching(gt, detections, iou)
    sweeps = {label: _label_sweep(matched, cat_of.get(label), num_gt.get(cat_of.get(label), 0), HELDOUT_FLOOR,
                                  float(t)) for label, t in configured.items()}
    labels = {label: _choose(sweeps[label], float(t), min_boxes, delete_cost, True) for label, t in configured.items()}
    labels = _keep_project_on(labels, sweeps, configured, delete_cost)
    return LearnedThresholds(project=str(project), model_version="", labels=labels,
                             reviewed_tasks=len(gt.get("images", [])), min_reviewed_boxes=min_boxes, iou=iou,
                             delete_cost=delete_cost, model=model, evidence=HELDOUT)


def _check(min_boxes: int, iou: float) -> None:
    if min_boxes < 1:
        raise ValueError(f"min_reviewed_boxes must be at least 1, got {min_boxes}")
    if not 0 < iou <= 1:
        raise ValueError(f"iou must be in (0, 1], got {iou}")


def _keep_project_on(labels: dict[str, LabelThreshold], sweeps: dict, configured: Mapping[str, float],
                     delete_cost: float) -> dict[str, LabelThreshold]:
    if labels and all(t.off for t in labels.values()):
        # Switching every label off would end pre-labelling for the whole project: keep each at its
        # configured threshold and say why (LearnedThresholds.warnings).
        labels = {label: _at(sweeps[label], float(configured[label]), t.reviewed_boxes, ALL_OFF, delete_cost,
                             t.shown, t.kept) for label, t in labels.items()}
    return labels


def _matching(gt: dict, dets: list[dict], iou: float):
    gt_frame = pd.DataFrame(gt["annotations"], columns=["image_id", "category_id", "bbox", "iscrowd"])
    det_frame = pd.DataFrame(dets, columns=["image_id", "category_id", "bbox", "score"])
    # No cap on pre-labels per task: pycocotools' 100 is an AP convention, an annotator sees them all.
    matched = match_detections(gt_frame, det_frame, iou, max_dets=max(1, len(dets)))
    num_gt = gt_frame.groupby("category_id").size().to_dict() if len(gt_frame) else {}
    return matched, num_gt, {c["name"]: c["id"] for c in gt["categories"]}


def _label_sweep(matched: pd.DataFrame, cat, n_gt: int, floor: float, configured: float) -> pd.DataFrame:
    """The sweep of one label over thresholds >= ``floor`` (its first row), the configured one included."""
    grid = np.unique(np.concatenate([[floor, configured], DEFAULT_THRESHOLDS[DEFAULT_THRESHOLDS >= floor]]))
    own = matched[matched["category_id"] == cat] if cat is not None else matched.iloc[0:0]
    return threshold_sweep(own, {cat: int(n_gt)}, grid, by_class=True)


def _choose(sweep: pd.DataFrame, configured: float, min_boxes: int, delete_cost: float,
            heldout: bool = False, label_config: float | None = None) -> LabelThreshold:
    """``configured``: the threshold kept without enough evidence, for reviewed tasks also the lowest one
    shown; ``label_config``: the one recorded as configured (the label config's, when the predictions were
    made with an earlier learned one). Held-out detections were all seen: their sweep starts lower."""
    lowest = sweep.iloc[0] if heldout else sweep[sweep["threshold"] >= configured - 1e-9].iloc[0]
    shown, kept = int(lowest["detections"]), int(lowest["tp"])
    # Evidence: reviewed, the boxes shown plus the final boxes none matched; held-out, the true boxes.
    evidence = int(lowest["tp"] + lowest["fn"]) if heldout else int(lowest["tp"] + lowest["fp"] + lowest["fn"])
    if shown == 0:
        source, threshold = NO_PRELABELS, configured
    elif evidence < min_boxes:
        source, threshold = TOO_FEW, configured
    else:
        source, threshold = LEARNED, best_work_threshold(sweep, delete_cost)["threshold"]
    return _at(sweep, threshold, evidence, source, delete_cost, shown, kept,
               configured if label_config is None else label_config)


def _at(sweep: pd.DataFrame, threshold: float, evidence: int, source: str, delete_cost: float,
        shown: int | None, kept: int | None, configured: float | None = None) -> LabelThreshold:
    row = sweep[np.isclose(sweep["threshold"], threshold)].iloc[0]
    return LabelThreshold(
        threshold=float(threshold), configured=float(threshold if configured is None else configured),
        reviewed_boxes=evidence, precision=_number(row["precision"]), recall=_number(row["recall"]),
        tp=int(row["tp"]), fp=int(row["fp"]), fn=int(row["fn"]), work_saved=float(row["tp"] - delete_cost * row["fp"]),
        source=source, shown=shown, kept=kept)


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
