"""Label Studio runs (``python -m evaluation.labelstudio``): what annotators did with the pre-labels.

Re-exported by :mod:`evaluation.analysis`; imports it lazily (inside functions) to avoid a cycle.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

WORK_SAVED_DEFINITION = (
    "**Work saved** at a threshold t, in boxes: every pre-label with score ≥ t that matches a final "
    "annotation (same label, IoU ≥ 0.5, one-to-one) spares drawing that box (+1); every other shown "
    "pre-label has to be deleted or redrawn (−1, `delete_cost`). The best threshold maximises "
    "matched − delete_cost × unmatched. Only pre-labels stored in the export (those above the backend's "
    "threshold when it predicted) can be counted, so thresholds below that one are not assessed.")


def acceptance_table(run: Run, iou_threshold: float = 0.5, threshold: float | None = None) -> pd.DataFrame:
    """Per label: pre-labels that match a final box (accepted), that do not (deleted or changed), and
    final boxes no pre-label matched (added by annotators), for pre-labels with score ≥ ``threshold``
    (default: the backend threshold recorded in the run's config, else all)."""
    t = threshold if threshold is not None else float(
        run.config.get("threshold", run.config.get("box_threshold", 0.0)) or 0.0)
    from evaluation.analysis import matched_detections, num_gt

    m = matched_detections(run, iou_threshold)
    m = m[(m["score"] >= t) & ~m["ignored"].astype(bool)]
    ngt = num_gt(run)
    rows = []
    for cat, name in run.categories.items():
        sub = m[m["category_id"] == cat]
        acc, rej = int(sub["tp"].sum()), int((~sub["tp"]).sum())
        rows.append({"label": name, "accepted": acc, "deleted or changed": rej,
                     "added by annotators": ngt.get(cat, 0) - acc, "total": acc + rej,
                     "acceptance": acc / (acc + rej) if acc + rej else np.nan})
    return pd.DataFrame(rows)
