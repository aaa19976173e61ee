"""Label Studio runs (``python -m evaluation.labelstudio``): what annotators did with the pre-labels.

Builds on :mod:`evaluation.analysis` (the matching and GT counts of a run); nothing imports back.
"""
from __future__ import annotations

import pandas as pd

from evaluation.analysis import matched_detections, num_gt
from evaluation.labelstudio.compare import load_comparison, plot_comparison  # noqa: F401  (the notebook's calls)

WORK_SAVED_DEFINITION = (
    "**Work saved** at a threshold t, in boxes: every pre-label with score ≥ t that matches a final "
    "annotation (same label, IoU ≥ 0.5, one-to-one) spares drawing that box (+1); every other shown "
    "pre-label has to be deleted or redrawn (−1, `delete_cost`). The best threshold maximises "
    "matched − delete_cost × unmatched. Only pre-labels stored in the export (those above the backend's "
    "threshold when it predicted) can be counted, so thresholds below that one are not assessed.")


TREATMENT_COLUMNS = {"kept": "kept", "moved_resized": "moved/resized", "relabelled": "relabelled",
                     "deleted": "deleted", "added": "added by annotators"}


def acceptance_table(run, iou_threshold: float = 0.5, threshold: float | None = None) -> pd.DataFrame:
    """Per label, what annotators did with the pre-labels.

    From ``prelabels.csv`` when the run has it (``evaluation.labelstudio``'s treatment counts: kept as
    is, moved/resized, relabelled, deleted, and boxes the annotators added). Otherwise from the matching:
    pre-labels with score >= ``threshold`` (default: the run's recorded threshold) that match a final box
    count as kept, the others as deleted. ``acceptance`` = (kept + moved/resized) / pre-labels.
    """
    pre = run.extra.get("prelabels")
    if isinstance(pre, pd.DataFrame) and "label" in pre.columns and threshold is None:
        out = pd.DataFrame({"label": pre["label"].astype(str)})
        for src, dst in TREATMENT_COLUMNS.items():
            out[dst] = pre[src].astype(int) if src in pre.columns else 0
    else:
        out = _acceptance_from_matching(run, iou_threshold, threshold)
    shown = out[["kept", "moved/resized", "relabelled", "deleted"]].sum(axis=1)
    out["total"] = shown
    out["acceptance"] = ((out["kept"] + out["moved/resized"]) / shown.where(shown > 0)).astype(float)
    return out.reset_index(drop=True)


def _acceptance_from_matching(run, iou_threshold: float, threshold: float | None) -> pd.DataFrame:
    t = threshold if threshold is not None else float(run.config.get("threshold") or 0.0)
    m = matched_detections(run, iou_threshold)
    m = m[(m["score"] >= t) & ~m["ignored"].astype(bool)]
    ngt = num_gt(run)
    rows = []
    for cat, name in run.categories.items():
        sub = m[m["category_id"] == cat]
        kept = int(sub["tp"].sum())
        rows.append({"label": name, "kept": kept, "moved/resized": 0, "relabelled": 0,
                     "deleted": int((~sub["tp"]).sum()), "added by annotators": ngt.get(cat, 0) - kept})
    return pd.DataFrame(rows)
