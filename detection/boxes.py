"""Box formats and IoU: the one implementation the core, the evaluation and the benchmark share.

Formats (last dimension 4): `xyxy` corners, `xywh` top-left corner + size (COCO results and
annotations), `cxcywh` centre + size (Grounding DINO's `pred_boxes`, normalised). Every function takes
a torch tensor or a numpy array and returns the same kind, so the detector (torch) and the analysis
tables (numpy, float64 as pycocotools) use the same code.
"""
from __future__ import annotations

import numpy as np


def _stack(parts, like):
    if isinstance(like, np.ndarray):
        return np.stack(parts, axis=-1)
    import torch

    return torch.stack(parts, dim=-1)


def xywh_to_xyxy(boxes):
    x, y, w, h = (boxes[..., i] for i in range(4))
    return _stack([x, y, x + w, y + h], boxes)


def xyxy_to_xywh(boxes):
    x0, y0, x1, y1 = (boxes[..., i] for i in range(4))
    return _stack([x0, y0, x1 - x0, y1 - y0], boxes)


def cxcywh_to_xyxy(boxes):
    cx, cy, w, h = (boxes[..., i] for i in range(4))
    return _stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], boxes)


def box_iou(a, b, crowd=None):
    """(N, M) IoU of xyxy boxes `a` (N, 4) and `b` (M, 4); 0 where the union is empty.

    `crowd` (M booleans, optional) marks boxes of `b` that are crowd regions, for which the overlap is
    measured as pycocotools does: intersection over the area of the `a` box alone.
    """
    numpy = isinstance(a, np.ndarray)
    maximum, minimum, where = (np.maximum, np.minimum, np.where) if numpy else _torch_ops()
    area_a = (a[:, 2] - a[:, 0]).clip(min=0) * (a[:, 3] - a[:, 1]).clip(min=0)
    area_b = (b[:, 2] - b[:, 0]).clip(min=0) * (b[:, 3] - b[:, 1]).clip(min=0)
    lt = maximum(a[:, None, :2], b[None, :, :2])
    rb = minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clip(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    if crowd is not None:
        crowd = np.asarray(crowd, dtype=bool) if numpy else _as_bool_tensor(crowd, a)
        union = where(crowd[None, :], area_a[:, None] + 0 * inter, union)
    return where(union > 0, inter / where(union > 0, union, 1), 0 * inter)


def _torch_ops():
    import torch

    return torch.maximum, torch.minimum, torch.where


def _as_bool_tensor(values, like):
    import torch

    return torch.as_tensor(values, dtype=torch.bool, device=like.device)


def clip_to_image(boxes, width: int, height: int):
    """xyxy pixel boxes clipped to the image, and which still have an area (a box wholly outside the image
    collapses to zero area when clipped: nothing to show). Labelling mode's rule for every family."""
    import torch

    clipped = torch.stack([boxes[:, 0].clamp(0, width), boxes[:, 1].clamp(0, height), boxes[:, 2].clamp(0, width),
                           boxes[:, 3].clamp(0, height)], dim=-1)
    return clipped, (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
