"""SAM 3's outputs -> scores, boxes and masks in the original image's pixels.

As transformers' `Sam3ImageProcessor.post_process_instance_segmentation` (5.24), operation for operation:

- score of a query = sigmoid(pred_logits) * sigmoid(presence_logits): the detection score times the
  image-level presence score of the prompt (one per image and prompt);
- boxes: `pred_boxes` are already xyxy, normalised to [0, 1]; times (width, height, width, height) of the
  original image; not clipped;
- masks: sigmoid of the kept queries' mask logits, bilinearly resized (align_corners=False) to the
  original (height, width), then `> 0.5`.

No non-maximum suppression: neither transformers nor SAM 3's own evaluation (`PostProcessImage`) uses one.
SAM 3's evaluation resizes the *logits* and then takes sigmoid > 0.5 (`MASK_RULES`), which can differ from
transformers' order on boundary pixels; `mask_rule` chooses, transformers' is the default.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F

from ..postprocess import Detections

MaskRule = Literal["transformers", "sam3-eval"]
MASK_RULES: tuple[str, ...] = ("transformers", "sam3-eval")


@dataclass
class Sam3Detections(Detections):
    """Detections of one image (boxes xyxy in its pixels), with their masks when asked for."""

    masks: torch.Tensor | None = None  # (N, H, W) bool at the image's own size

    @classmethod
    def empty(cls, size: tuple[int, int] | None = None, with_masks: bool = False) -> "Sam3Detections":
        masks = torch.zeros((0, size[1], size[0]), dtype=torch.bool) if with_masks and size else None
        return cls(torch.zeros(0), torch.zeros(0, dtype=torch.long), torch.zeros(0, 4), masks)

    @classmethod
    def concat(cls, parts: Sequence["Sam3Detections"]) -> "Sam3Detections":
        if not parts:
            return cls.empty()
        masks = None
        if all(p.masks is not None for p in parts):
            masks = torch.cat([p.masks for p in parts])
        return cls(
            torch.cat([p.scores for p in parts]),
            torch.cat([p.labels for p in parts]),
            torch.cat([p.boxes for p in parts]),
            masks,
        )

    def select(self, index: torch.Tensor) -> "Sam3Detections":
        masks = self.masks[index] if self.masks is not None else None
        return Sam3Detections(self.scores[index], self.labels[index], self.boxes[index], masks)

    def by_score(self) -> "Sam3Detections":
        """Highest score first (ties keep query order)."""
        return self.select(torch.argsort(self.scores, descending=True, stable=True))


def query_scores(pred_logits: torch.Tensor, presence_logits: torch.Tensor | None) -> torch.Tensor:
    """(B, Q) scores: detection probability times presence probability (when the model has a presence head)."""
    scores = pred_logits.sigmoid()
    if presence_logits is not None:
        scores = scores * presence_logits.sigmoid()  # (B, 1): broadcast over the queries
    return scores


def boxes_to_pixels(pred_boxes: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
    """(B, Q, 4) normalised xyxy -> xyxy in each image's (width, height)."""
    width = torch.tensor([w for w, _ in sizes])
    height = torch.tensor([h for _, h in sizes])
    scale = torch.stack([width, height, width, height], dim=1).unsqueeze(1).to(pred_boxes.device)
    return pred_boxes * scale


def masks_to_image(mask_logits: torch.Tensor, size: tuple[int, int], rule: MaskRule = "transformers") -> torch.Tensor:
    """(N, h, w) mask logits of one image -> (N, H, W) bool masks at its (width, height)."""
    width, height = size
    if len(mask_logits) == 0:
        return torch.zeros((0, height, width), dtype=torch.bool)
    if rule == "transformers":  # sigmoid, resize the probabilities, > 0.5
        resized = F.interpolate(mask_logits.sigmoid().unsqueeze(0), size=(height, width), mode="bilinear", align_corners=False)
        return (resized.squeeze(0) > 0.5).cpu()
    if rule == "sam3-eval":  # resize the logits, sigmoid, > 0.5 (SAM 3's PostProcessImage)
        resized = F.interpolate(mask_logits.unsqueeze(1), size=(height, width), mode="bilinear", align_corners=False)
        return (resized.sigmoid() > 0.5).squeeze(1).cpu()
    raise ValueError(f"unknown mask rule {rule!r}: choose from {', '.join(MASK_RULES)}")


def instance_results(
    pred_logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    presence_logits: torch.Tensor | None,
    pred_masks: torch.Tensor | None,
    sizes: Sequence[tuple[int, int]],
    threshold: float | None,
    label: int = 0,
    mask_rule: MaskRule = "transformers",
) -> list[Sam3Detections]:
    """Per image the queries with score > `threshold` (all queries when None), in query order, labelled
    `label`; masks when `pred_masks` is given. With a threshold this is transformers'
    post_process_instance_segmentation (target_sizes = the original sizes)."""
    scores = query_scores(pred_logits.float(), None if presence_logits is None else presence_logits.float())
    boxes = boxes_to_pixels(pred_boxes.float(), sizes)
    out = []
    for i, size in enumerate(sizes):
        keep = scores[i] > threshold if threshold is not None else torch.ones_like(scores[i], dtype=torch.bool)
        masks = masks_to_image(pred_masks[i][keep].float(), size, mask_rule) if pred_masks is not None else None
        kept = scores[i][keep].cpu()
        out.append(Sam3Detections(kept, torch.full((len(kept),), label, dtype=torch.long), boxes[i][keep].cpu(), masks))
    return out
