"""Greedy one-to-one matching of detections to ground truth: the one implementation.

pycocotools' (``COCOeval.evaluateImg``) loop at one IoU threshold: detections in the given order
(callers pass them highest score first), each takes the still-unmatched ground-truth box with the
highest IoU >= the threshold (on equal IoU the later box, as pycocotools). With ``crowd`` flags,
ground truth must come non-crowd first: a crowd box may absorb several detections and is only taken
when no non-crowd box matches. Used by the analysis sweep, the Label Studio export scoring and the
benchmark's agreement check.
"""
from __future__ import annotations

import numpy as np

# pycocotools caps the threshold just below 1 so that IoU 1.0 still matches at threshold 1.0.
MAX_THRESHOLD = 1 - 1e-10


def greedy_match(ious: np.ndarray, threshold: float, crowd=None) -> np.ndarray:
    """For each row (detection) of the (D, G) IoU matrix (2-D, either side may be 0), the column it
    matched, or -1."""
    ious = np.asarray(ious, dtype=np.float64)
    n, g = ious.shape
    crowd = np.zeros(g, dtype=bool) if crowd is None else np.asarray(crowd, dtype=bool)
    thr = min(threshold, MAX_THRESHOLD)
    taken = np.zeros(g, dtype=bool)
    matched = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        best, m = thr, -1
        for j in range(g):
            if taken[j] and not crowd[j]:
                continue
            if m > -1 and not crowd[m] and crowd[j]:  # matched a real box: crowd boxes come after
                break
            if ious[i, j] < best:
                continue
            best, m = ious[i, j], j
        if m > -1:
            taken[m] = True
            matched[i] = m
    return matched
