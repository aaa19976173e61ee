"""Fixed AP's detection budget (Dave et al., "Evaluating Large-Vocabulary Detectors: The Devil is in the
Details"; mmdetection's LVISFixedAPMetric): no per-image cap; the top `topk` (10,000) detections of
each category over the whole split. And the compact per-image record an LVIS run stores: 31 chunks x
300 detections per image do not fit in JSON lists at a sensible size.
"""
from __future__ import annotations

import base64

import numpy as np

from detection.boxes import xyxy_to_xywh
from evaluation.masks import masks_to_coco_rle

from .scoring import FIXED_AP_TOPK, DetectionArrays


def encode(detections, masks=None) -> dict:
    """One image's ranked `Detections` (label index, score, xyxy pixels) as packed little-endian arrays;
    with `masks` ((N, H, W) bool in the image's frame) also their COCO RLEs (`rles`)."""
    def pack(array, dtype):
        return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")

    record = {"n": len(detections), "labels": pack(detections.labels.numpy(), "<i2"),
              "scores": pack(detections.scores.float().numpy(), "<f4"),
              "boxes": pack(detections.boxes.float().numpy(), "<f4")}
    if masks is not None:
        record["rles"] = masks_to_coco_rle(masks)
    return record


def decode_masks(payload: dict) -> list[dict] | None:
    """The COCO RLEs of a record written with masks (None without)."""
    rles = payload.get("rles")
    if rles is not None and len(rles) != int(payload["n"]):
        raise ValueError(f"damaged LVIS record: {payload['n']} detections declared, {len(rles)} masks")
    return rles


def decode(payload: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(label indices, scores, xyxy boxes) of one stored image record."""
    n = int(payload["n"])
    labels = np.frombuffer(base64.b64decode(payload["labels"]), dtype="<i2").astype(np.int64)
    scores = np.frombuffer(base64.b64decode(payload["scores"]), dtype="<f4")
    boxes = np.frombuffer(base64.b64decode(payload["boxes"]), dtype="<f4").reshape(-1, 4)
    if not len(labels) == len(scores) == len(boxes) == n:
        raise ValueError(f"damaged LVIS record: {n} detections declared, arrays of {len(labels)}/{len(scores)}/"
                         f"{len(boxes)}")
    return labels, scores, boxes


class TopKPerCategory:
    """The `k` highest-scoring detections of each category over everything added, in bounded memory.

    Ties in score keep the order detections were added in (image order, then each image's own
    order), as the reference's stable sort over its result list. Exact: a detection dropped when the
    buffer is pruned already has `k` better ones of its category.
    """

    def __init__(self, k: int = FIXED_AP_TOPK, prune_at: int = 4_000_000):
        self.k, self.prune_at = k, prune_at
        self._parts: list[tuple[np.ndarray, ...]] = []
        self._size = 0

    def add(self, order: int, category_id: np.ndarray, score: np.ndarray, image_id: np.ndarray,
            bbox_xywh: np.ndarray, segmentation: list | None = None) -> None:
        """One image's detections; `order` is the image's position in the split (the tie-break);
        `segmentation`: their masks (COCO RLEs), carried along."""
        n = len(score)
        masks = np.empty(n, dtype=object)
        if segmentation is not None:
            masks[:] = segmentation
        self._parts.append((category_id.astype(np.int64), score.astype(np.float64), np.full(n, order, np.int64),
                            np.arange(n, dtype=np.int64), image_id.astype(np.int64), bbox_xywh.astype(np.float64),
                            masks))
        self._size += n
        if self._size > self.prune_at:
            self._prune()

    def _prune(self) -> None:
        if not self._parts:
            return
        cat, score, order, pos, img, box, masks = (np.concatenate(c) for c in zip(*self._parts))
        idx = np.lexsort((pos, order, -score, cat))
        cat_sorted = cat[idx]
        starts = np.flatnonzero(np.r_[True, cat_sorted[1:] != cat_sorted[:-1]])
        rank = np.arange(len(idx)) - np.repeat(starts, np.diff(np.r_[starts, len(idx)]))
        keep = idx[rank < self.k]
        self._parts = [(cat[keep], score[keep], order[keep], pos[keep], img[keep], box[keep], masks[keep])]
        self._size = len(keep)

    def result(self) -> DetectionArrays:
        """The kept detections, by category then score (highest first); with their masks when every one
        was added with one."""
        self._prune()
        if not self._parts:
            return DetectionArrays(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 4)))
        cat, score, _, _, img, box, masks = self._parts[0]
        with_masks = len(masks) > 0 and all(m is not None for m in masks)
        return DetectionArrays(img, cat, score, box, masks if with_masks else None)


def boxes_xywh(boxes_xyxy: np.ndarray) -> np.ndarray:
    return xyxy_to_xywh(boxes_xyxy.astype(np.float64))
