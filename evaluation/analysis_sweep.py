"""Greedy one-to-one matching of detections to ground truth, and the score-threshold sweep.

The matching is pycocotools' (``COCOeval.evaluateImg``) at one IoU threshold, area range "all":
per (image, category), detections in descending score order (stable sort, at most ``max_dets`` of
them), each takes the still-unmatched ground-truth box with the highest IoU >= the threshold;
non-crowd boxes are preferred, a crowd box may absorb several detections, and a detection matched
to a crowd box is *ignored* (neither true nor false positive). Crowd boxes are not counted as
ground truth. Because matching is greedy in score order, the detections above any score threshold
are matched exactly as they would be if the lower-scored ones did not exist, so one matching
serves every threshold of the sweep.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from detection.boxes import box_iou, xywh_to_xyxy
from evaluation.masks import mask_iou
from evaluation.matching import greedy_match

DEFAULT_THRESHOLDS = np.round(np.arange(0.0, 1.0 + 1e-9, 0.01), 2)


def _boxes(frame: pd.DataFrame) -> np.ndarray:
    if not len(frame):
        return np.zeros((0, 4))
    return np.asarray(frame["bbox"].tolist(), dtype=np.float64).reshape(-1, 4)


def _groups(image_ids: np.ndarray, cat_ids: np.ndarray):
    """Start/end of each run of equal (image, category) in already sorted arrays."""
    if not len(image_ids):
        return np.zeros(0, int), np.zeros(0, int)
    change = np.flatnonzero((np.diff(image_ids) != 0) | (np.diff(cat_ids) != 0)) + 1
    return np.concatenate([[0], change]), np.concatenate([change, [len(image_ids)]])


def match_detections(gt: pd.DataFrame, dets: pd.DataFrame, iou_threshold: float = 0.5,
                     max_dets: int = 100, iou_type: str = "bbox") -> pd.DataFrame:
    """Return the detections (top ``max_dets`` per image and class) with ``tp``, ``ignored``, ``iou``.

    ``gt`` has columns image_id, category_id, bbox [x, y, w, h], iscrowd; ``dets`` has image_id,
    category_id, bbox, score. With ``iou_type="segm"`` both also have ``segmentation`` (COCO RLE) and
    IoU is that of the masks, as COCOeval segm computes it. Detections of images or classes absent from
    ``gt``'s evaluated set must be filtered by the caller (see
    :func:`evaluation.analysis.matched_detections`).
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be bbox or segm, got {iou_type!r}")
    segm = iou_type == "segm"
    d_img, d_cat = dets["image_id"].to_numpy(np.int64), dets["category_id"].to_numpy(np.int64)
    d_score = dets["score"].to_numpy(np.float64)
    order = np.lexsort((-d_score, d_cat, d_img))  # stable: score ties keep input order, as mergesort
    d_img, d_cat, d_score, d_box = d_img[order], d_cat[order], d_score[order], _boxes(dets)[order]
    d_seg = [dets["segmentation"].iloc[k] for k in order] if segm else None
    g_img, g_cat = gt["image_id"].to_numpy(np.int64), gt["category_id"].to_numpy(np.int64)
    g_crowd = gt["iscrowd"].fillna(0).to_numpy().astype(bool) if len(gt) else np.zeros(0, bool)
    gorder = np.lexsort((g_crowd, g_cat, g_img))  # non-crowd first within a group, as pycocotools
    g_img, g_cat, g_crowd, g_box = g_img[gorder], g_cat[gorder], g_crowd[gorder], _boxes(gt)[gorder]
    g_seg = [gt["segmentation"].iloc[k] for k in gorder] if segm else None
    g_index = {(int(g_img[s]), int(g_cat[s])): (s, e) for s, e in zip(*_groups(g_img, g_cat))}

    keep = np.zeros(len(d_img), dtype=bool)
    tp, ignored, best_iou = np.zeros(len(d_img), bool), np.zeros(len(d_img), bool), np.zeros(len(d_img))
    for s, e in zip(*_groups(d_img, d_cat)):
        e = min(e, s + max_dets)
        keep[s:e] = True
        gs = g_index.get((int(d_img[s]), int(d_cat[s])))
        if gs is None:
            continue
        crowd = g_crowd[gs[0]:gs[1]]
        if segm:
            ious = mask_iou(d_seg[s:e], g_seg[gs[0]:gs[1]], crowd)
        else:
            ious = box_iou(xywh_to_xyxy(d_box[s:e]), xywh_to_xyxy(g_box[gs[0]:gs[1]]), crowd)
        m = greedy_match(ious, iou_threshold, crowd)
        hit = m > -1
        rows = np.arange(s, e)[hit]
        best_iou[rows] = ious[hit, m[hit]]
        ignored[rows] = crowd[m[hit]]
        tp[rows] = ~crowd[m[hit]]
    return pd.DataFrame({"image_id": d_img[keep], "category_id": d_cat[keep], "score": d_score[keep],
                         "tp": tp[keep], "ignored": ignored[keep], "iou": best_iou[keep]})


def _sweep_one(scores: np.ndarray, tp: np.ndarray, n_gt: int, thresholds: np.ndarray) -> dict:
    order = np.argsort(scores)
    s, t = scores[order], tp[order]
    # detections with score >= thr are the suffix starting at searchsorted(left)
    start = np.searchsorted(s, thresholds, side="left")
    tp_suffix = np.concatenate([np.cumsum(t[::-1])[::-1], [0]])
    n_kept = len(s) - start
    n_tp = tp_suffix[start]
    n_fp = n_kept - n_tp
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(n_kept > 0, n_tp / np.maximum(n_kept, 1), np.nan)
        recall = n_tp / n_gt if n_gt > 0 else np.full(len(thresholds), np.nan)
        f1 = np.where((n_tp > 0), 2 * precision * recall / (precision + recall), 0.0)
    return {"threshold": thresholds, "detections": n_kept, "tp": n_tp, "fp": n_fp,
            "fn": n_gt - n_tp, "num_gt": n_gt, "precision": precision, "recall": recall, "f1": f1}


def threshold_sweep(matched: pd.DataFrame, num_gt, thresholds=DEFAULT_THRESHOLDS,
                    by_class: bool = False) -> pd.DataFrame:
    """Precision, recall and F1 of the detections with ``score >= threshold``, for each threshold.

    ``matched`` comes from :func:`match_detections` (ignored detections are dropped); ``num_gt`` is
    the number of non-crowd ground-truth boxes (an int, or a mapping category_id -> count when
    ``by_class``). Precision is NaN where no detection is kept; F1 is 0 where nothing is matched.
    """
    thresholds = np.asarray(thresholds, dtype=float)
    m = matched[~matched["ignored"].astype(bool)]
    if not by_class:
        total = int(sum(num_gt.values())) if isinstance(num_gt, dict) else int(num_gt)
        return pd.DataFrame(_sweep_one(m["score"].to_numpy(float), m["tp"].to_numpy(bool), total,
                                       thresholds))
    frames = []
    for cat, n in num_gt.items():
        sub = m[m["category_id"] == cat]
        f = pd.DataFrame(_sweep_one(sub["score"].to_numpy(float), sub["tp"].to_numpy(bool), int(n),
                                    thresholds))
        f.insert(0, "category_id", cat)
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def recommend_threshold(sweep: pd.DataFrame, precision: float = 0.8) -> dict:
    """The pre-labelling thresholds a sweep suggests.

    - ``max_f1``: the threshold with the highest F1 (the highest such threshold on ties: thresholds
      between two scores keep the same detections);
    - ``min_for_precision``: the lowest threshold whose precision is >= ``precision`` (None if none).
    """
    valid = sweep[sweep["f1"].notna()]
    best = None
    if len(valid) and valid["f1"].max() > 0:  # highest threshold among equal F1 (same detections)
        best = valid[valid["f1"] == valid["f1"].max()].iloc[-1]
    reach = sweep[sweep["precision"] >= precision]
    low = reach.iloc[0] if len(reach) else None

    def row(r):
        if r is None:
            return None
        return {k: (float(r[k]) if k in ("threshold", "precision", "recall", "f1") else int(r[k]))
                for k in ("threshold", "precision", "recall", "f1", "tp", "fp", "detections")}

    return {"max_f1": row(best), "min_for_precision": row(low), "target_precision": precision}


def work_saved(sweep: pd.DataFrame, delete_cost: float = 1.0) -> pd.DataFrame:
    """Annotation work a pre-labelling threshold saves, in boxes drawn.

    Every shown pre-label that matches a final box (IoU >= the sweep's threshold, same label) spares
    the annotator drawing that box (+1); every other shown pre-label must be deleted (-``delete_cost``,
    in units of one box drawn). ``saved = tp - delete_cost * fp``; the best threshold maximises it.
    """
    out = sweep.copy()
    out["saved"] = out["tp"] - delete_cost * out["fp"]
    return out


def best_work_threshold(sweep: pd.DataFrame, delete_cost: float = 1.0) -> dict:
    """The threshold with the most work saved (the highest such threshold on ties)."""
    ws = work_saved(sweep, delete_cost)
    r = ws[ws["saved"] == ws["saved"].max()].iloc[-1]
    return {"threshold": float(r["threshold"]), "saved": float(r["saved"]), "tp": int(r["tp"]),
            "fp": int(r["fp"]), "precision": float(r["precision"]), "recall": float(r["recall"]),
            "delete_cost": delete_cost}
