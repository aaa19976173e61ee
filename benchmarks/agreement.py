"""How far a fast path's outputs are from the model-card loop's (raw outputs and detections)."""
from __future__ import annotations

import numpy as np

from evaluation.matching import greedy_match

from .common import BOX_THRESHOLD

# torch and the detection core (which imports torch) are imported inside the functions: the benchmark's
# parent process runs no model (its workers set their environment before torch loads).

def raw_agreement(ref, got, k=100):
    """Raw outputs vs the baseline's, on the baseline's top-k queries (by max logit).

    Queries are matched up to order first: the two-stage selection of the 900 decoder queries is a top-k
    over encoder proposal scores, and proposals whose scores tie to float precision may come out in
    another order (the decoder is permutation-equivariant, so the outputs are the same set). Each
    baseline query is matched to the query with the nearest box; then max |Δlogit| (finite entries),
    max |Δbox|, and the overlap of the top-k query sets.
    """
    import torch

    out = {"logit": 0.0, "box": 0.0, "top100": 1.0, "scale": 0.0}
    for (lr, br), (lg, bg) in zip(ref, got):
        out["scale"] = max(out["scale"], float(lr[torch.isfinite(lr)].abs().max()))
        k_ = min(k, lr.shape[0])
        top_r = lr.max(-1).values.topk(k_).indices
        # Match on boxes and logits together: random weights saturate many boxes to the same values.
        key_r = torch.cat([br, torch.nan_to_num(lr, neginf=0.0)], -1)
        key_g = torch.cat([bg, torch.nan_to_num(lg, neginf=0.0)], -1)
        match = torch.cdist(key_r[top_r], key_g, p=float("inf")).argmin(-1)  # (k,) index into got
        lr_, lg_ = lr[top_r], lg[match]
        finite = torch.isfinite(lr_)
        if not torch.equal(finite, torch.isfinite(lg_)):
            out["logit"] = float("inf")
        else:
            out["logit"] = max(out["logit"], float((lr_[finite] - lg_[finite]).abs().max()))
        out["box"] = max(out["box"], float((br[top_r] - bg[match]).abs().max()))
        top_g = set(lg.max(-1).values.topk(k_).indices.tolist())
        out["top100"] = min(out["top100"], len(set(match.tolist()) & top_g) / k_)
    return out


def detection_agreement(ref, got, iou_min=0.9):
    """Reference detections (same post-processing on the baseline's raw outputs) vs the path's.

    Each reference box, in reference order, takes the unmatched box of the same label with the highest
    IoU >= `iou_min` (evaluation.matching's greedy matching)."""
    from detection.boxes import box_iou

    total = matched = extra = 0
    score_diff = 0.0
    for (rl, rs, rb), (gl, gs, gb) in zip(ref, got):
        total += len(rl)
        extra += max(0, len(gl) - len(rl))
        if not rl or not gl:
            continue
        iou = box_iou(np.asarray(rb, dtype=np.float64).reshape(-1, 4), np.asarray(gb, dtype=np.float64).reshape(-1, 4))
        iou[np.asarray(rl)[:, None] != np.asarray(gl)[None, :]] = -1.0  # other label: never a match
        for i, j in enumerate(greedy_match(iou, iou_min)):
            if j > -1:
                matched += 1
                score_diff = max(score_diff, abs(rs[i] - gs[j]))
    return {"matched": matched, "total": total, "extra": extra, "score": score_diff}


def reference_detections(raw, classes, tokenizer, sizes):
    """Our labelling post-processing on the baseline's raw outputs (the detections to reproduce)."""
    from detection import build_prompt, label_detections

    chunk = build_prompt(tokenizer, classes).chunks[0]
    out = []
    for (logits, boxes), size in zip(raw, sizes):
        (d,) = label_detections(logits[None], boxes[None], chunk, [size], BOX_THRESHOLD)
        out.append((d.labels.tolist(), d.scores.tolist(), d.boxes.tolist()))
    return out
