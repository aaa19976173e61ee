"""Model outputs -> detections. The only place that post-processes Grounding DINO logits.

Two outputs from the same class scores:
- ranking mode (evaluation): the official top-k over queries x classes, no threshold, no NMS, no
  clipping, boxes in original pixels;
- labelling mode (pre-annotation): per query its best class, thresholded, clipped, optional NMS.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .boxes import box_iou  # noqa: F401  (re-exported: its one home is boxes.py)
from .boxes import clip_to_image
from .prompt import PromptChunk


@dataclass
class Detections:
    """Detections of one image: `boxes` are xyxy in original image pixels."""

    scores: torch.Tensor  # (N,)
    labels: torch.Tensor  # (N,) class index in the full label set
    boxes: torch.Tensor  # (N, 4)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls) -> "Detections":
        return cls(torch.zeros(0), torch.zeros(0, dtype=torch.long), torch.zeros(0, 4))

    @classmethod
    def concat(cls, parts: Sequence["Detections"]) -> "Detections":
        if not parts:
            return cls.empty()
        return cls(
            torch.cat([p.scores for p in parts]),
            torch.cat([p.labels for p in parts]),
            torch.cat([p.boxes for p in parts]),
        )

    def select(self, index: torch.Tensor) -> "Detections":
        return Detections(self.scores[index], self.labels[index], self.boxes[index])


def class_scores(logits: torch.Tensor, chunk: PromptChunk) -> torch.Tensor:
    """(B, Q, C) scores: per phrase the mean token probability, per class the max over its phrases."""
    prob = logits.float().sigmoid()  # masked tokens are -inf -> 0
    phrase_map = chunk.phrase_map.to(prob.device)
    phrase_scores = prob @ phrase_map.T  # (B, Q, P)
    if phrase_scores.shape[-1] == chunk.num_classes:  # one phrase per class: no max to take
        return phrase_scores
    index = chunk.phrase_to_class.to(prob.device).expand_as(phrase_scores)
    out = phrase_scores.new_full((*phrase_scores.shape[:-1], chunk.num_classes), float("-inf"))
    return out.scatter_reduce(-1, index, phrase_scores, reduce="amax", include_self=True)


def boxes_to_pixels(pred_boxes: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
    """(B, Q, 4) normalised cxcywh -> xyxy in each image's own (width, height)."""
    cx, cy, w, h = pred_boxes.float().unbind(-1)
    xyxy = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
    scale = torch.tensor([[w_, h_, w_, h_] for w_, h_ in sizes], dtype=xyxy.dtype, device=xyxy.device)
    return xyxy * scale[:, None, :]


def rank_detections(
    logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    chunk: PromptChunk,
    sizes: Sequence[tuple[int, int]],
    num_select: int = 300,
) -> list[Detections]:
    """Official evaluation post-processing: top-k over (query, class) pairs, per image."""
    scores = class_scores(logits, chunk)  # (B, Q, C)
    batch, _, num_classes = scores.shape
    k = min(num_select, scores.shape[1] * num_classes)
    top_values, top_index = torch.topk(scores.reshape(batch, -1), k, dim=1)
    query = top_index // num_classes
    labels = top_index % num_classes + chunk.class_offset
    boxes = torch.gather(boxes_to_pixels(pred_boxes, sizes), 1, query.unsqueeze(-1).expand(-1, -1, 4))
    return [Detections(top_values[i].cpu(), labels[i].cpu(), boxes[i].cpu()) for i in range(batch)]


def label_detections(
    logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    chunk: PromptChunk,
    sizes: Sequence[tuple[int, int]],
    box_threshold: float,
) -> list[Detections]:
    """Labelling mode for one chunk: per query its best class; kept when score >= threshold; clipped."""
    best, label = class_scores(logits, chunk).max(dim=-1)  # (B, Q)
    boxes = boxes_to_pixels(pred_boxes, sizes)
    out = []
    for i, (width, height) in enumerate(sizes):
        keep = best[i] >= box_threshold
        b, area_ok = clip_to_image(boxes[i][keep], width, height)
        dets = Detections(best[i][keep].cpu(), (label[i][keep] + chunk.class_offset).cpu(), b.cpu())
        out.append(dets.select(area_ok.cpu()))
    return out


def merge_labelled(per_chunk: Sequence[Detections], iou_threshold: float = 0.7) -> Detections:
    """Across chunks of one image: where boxes of different chunks overlap, keep the best class.

    Each chunk is a separate prompt, so the same object is found once per chunk; per box we keep
    the highest-scoring class over all chunks (class-agnostic suppression between chunks only).
    """
    if len(per_chunk) == 1:
        return per_chunk[0]
    chunk_id = torch.cat([torch.full((len(d),), i) for i, d in enumerate(per_chunk)])
    merged = Detections.concat(per_chunk)
    order = torch.argsort(merged.scores, descending=True)
    iou = box_iou(merged.boxes, merged.boxes)
    suppressed = torch.zeros(len(merged), dtype=torch.bool)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= (iou[i] >= iou_threshold) & (chunk_id != chunk_id[i])
    return merged.select(torch.tensor(sorted(keep, key=lambda j: -merged.scores[j].item()), dtype=torch.long))


def class_nms(dets: Detections, iou_threshold: float) -> Detections:
    """Class-wise non-maximum suppression, highest score first."""
    if len(dets) == 0:
        return dets
    order = torch.argsort(dets.scores, descending=True)
    iou = box_iou(dets.boxes, dets.boxes)
    same = dets.labels[:, None] == dets.labels[None, :]
    suppressed = torch.zeros(len(dets), dtype=torch.bool)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= (iou[i] > iou_threshold) & same[i]
    return dets.select(torch.tensor(keep, dtype=torch.long))
