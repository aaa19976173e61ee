"""`torchvision.ops.roi_align` in pure torch, for SAM 3's exemplar (box) prompts where torchvision is absent.

SAM 3's geometry encoder pools the image features under each prompt box with `torchvision.ops.roi_align`
(transformers' modeling_sam3 / modeling_sam3_lite_text call it through their module-level `torchvision`
name, which is undefined when torchvision cannot be imported: a NameError on the first box prompt).
Everything else SAM 3 needs runs without torchvision. Where torchvision imports, nothing is installed and
its kernel runs; where it does not, `install` gives those modules a `torchvision` stand-in whose
`ops.roi_align` is `roi_align` below.

`roi_align` follows torchvision's CPU kernel (`roi_align_kernel.cpp`) operation for operation: the bin
grid, the adaptive sampling count `ceil(roi_size / pooled_size)` when `sampling_ratio <= 0`, the
bilinear weights and their border rules (a sample more than one pixel outside is 0, one within a pixel
is clamped), the `aligned` half-pixel offset, the `max(roi, 1)` minimum size when not aligned, the scalar
arithmetic in the input's type and the accumulation order (sample after sample). docs/sam3.md gives the
measured difference to torchvision's kernel. Loops are per box: SAM 3 prompts have a handful of boxes.
"""
from __future__ import annotations

import math
import sys
import types
from typing import Sequence

import torch

from ..patching import LeverInstall

# The transformers modules whose geometry encoder calls `torchvision.ops.roi_align`.
SAM3_MODELING_MODULES = (
    "transformers.models.sam3.modeling_sam3",
    "transformers.models.sam3_lite_text.modeling_sam3_lite_text",
)


def roi_align(
    input: torch.Tensor,
    boxes: torch.Tensor | Sequence[torch.Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> torch.Tensor:
    """torchvision.ops.roi_align's contract: `boxes` a (K, 5) tensor (batch index, x1, y1, x2, y2) or one
    (Ki, 4) tensor per image; returns (K, C, ph, pw) in `input`'s dtype."""
    pooled_h, pooled_w = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    # The kernel computes in the input's scalar type T (float32 for SAM 3's features).
    dtype = input.dtype if input.dtype in (torch.float32, torch.float64) else torch.float32
    rois = _as_rois(boxes, input).to(dtype)
    out = input.new_zeros((rois.shape[0], input.shape[1], pooled_h, pooled_w))
    height, width = input.shape[-2:]
    scalar = lambda v: torch.tensor(v, dtype=dtype, device=input.device)  # noqa: E731
    scale, offset, one = scalar(spatial_scale), scalar(0.5 if aligned else 0.0), scalar(1.0)
    for k in range(rois.shape[0]):
        batch = int(rois[k, 0])
        start_w, start_h = rois[k, 1] * scale - offset, rois[k, 2] * scale - offset
        roi_w, roi_h = rois[k, 3] * scale - offset - start_w, rois[k, 4] * scale - offset - start_h
        if not aligned:  # force malformed ROIs to be 1x1
            roi_w, roi_h = torch.maximum(roi_w, one), torch.maximum(roi_h, one)
        bin_h, bin_w = roi_h / pooled_h, roi_w / pooled_w
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(float(roi_h / pooled_h))
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(float(roi_w / pooled_w))
        count = scalar(max(grid_h * grid_w, 1))
        ys = _samples(start_h, bin_h, pooled_h, grid_h)  # (ph, gh)
        xs = _samples(start_w, bin_w, pooled_w, grid_w)  # (pw, gw)
        values = _bilinear(input[batch].to(dtype), ys.reshape(-1), xs.reshape(-1), height, width)
        values = values.reshape(values.shape[0], pooled_h, grid_h, pooled_w, grid_w)
        total = values.new_zeros((values.shape[0], pooled_h, pooled_w))  # an empty ROI (no samples) stays 0
        for iy in range(grid_h):  # the kernel's accumulation order: sample row by row, then across
            for ix in range(grid_w):
                total = total + values[:, :, iy, :, ix]
        out[k] = (total / count).to(input.dtype)
    return out


def _as_rois(boxes, like: torch.Tensor) -> torch.Tensor:
    if isinstance(boxes, torch.Tensor):
        if boxes.ndim != 2 or boxes.shape[1] != 5:
            raise ValueError(f"boxes as one tensor must be (K, 5) as (batch index, x1, y1, x2, y2), got {tuple(boxes.shape)}")
        return boxes.to(torch.float64)
    parts = []
    for i, b in enumerate(boxes):
        b = b.reshape(-1, 4).to(torch.float64)
        parts.append(torch.cat([torch.full((b.shape[0], 1), float(i), dtype=torch.float64, device=b.device), b], dim=1))
    return torch.cat(parts) if parts else torch.zeros((0, 5), dtype=torch.float64, device=like.device)


def _samples(start: torch.Tensor, bin_size: torch.Tensor, pooled: int, grid: int) -> torch.Tensor:
    """(pooled, grid): start + p * bin + (i + 0.5) * bin / grid, in the kernel's order and scalar type."""
    p = torch.arange(pooled, dtype=start.dtype, device=start.device)[:, None]
    i = torch.arange(grid, dtype=start.dtype, device=start.device)[None, :]
    return start + p * bin_size + (i + 0.5) * bin_size / grid


def _axis(coords: torch.Tensor, size: int):
    """The kernel's per-axis rule: (low index, high index, weight of high, valid)."""
    valid = (coords >= -1.0) & (coords <= size)
    c = coords.clamp(min=0)
    low = c.floor().to(torch.long)
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    high = torch.where(at_edge, low, low + 1)
    c = torch.where(at_edge, low.to(c.dtype), c)
    frac = c - low.to(c.dtype)
    return low, high, frac, valid


def _bilinear(feature: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(C, H, W) sampled at every (y, x) of the grid ys x xs -> (C, len(ys), len(xs))."""
    y_low, y_high, ly, y_ok = _axis(ys, height)
    x_low, x_high, lx, x_ok = _axis(xs, width)
    hy, hx = 1 - ly, 1 - lx
    w1 = hy[:, None] * hx[None, :]
    w2 = hy[:, None] * lx[None, :]
    w3 = ly[:, None] * hx[None, :]
    w4 = ly[:, None] * lx[None, :]
    rows_low, rows_high = feature[:, y_low], feature[:, y_high]  # (C, Y, W)
    v1, v2 = rows_low[:, :, x_low], rows_low[:, :, x_high]
    v3, v4 = rows_high[:, :, x_low], rows_high[:, :, x_high]
    value = w1 * v1 + w2 * v2 + w3 * v3 + w4 * v4
    return value * (y_ok[:, None] & x_ok[None, :]).to(value.dtype)


def torchvision_importable() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # absent, or a build that does not match torch (fails at import)
        return False
    return True


def install() -> LeverInstall:
    """Give SAM 3's modeling modules the pure-torch roi_align when torchvision cannot be imported.

    With torchvision, nothing is patched (its kernel runs) and the reason says so. Idempotent.
    """
    if torchvision_importable():
        return LeverInstall.unavailable("torchvision is installed: its roi_align kernel runs")
    import importlib

    patched, already = [], []
    for name in SAM3_MODELING_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        current = getattr(module, "torchvision", None)
        if isinstance(current, _TorchvisionStandIn):
            already.append(name)
        elif current is None:
            module.torchvision = _TorchvisionStandIn()
            patched.append(name)
    if not patched and not already:
        return LeverInstall.unavailable("no SAM 3 modeling module of this transformers version calls torchvision")
    return LeverInstall(patched=tuple(patched), already=tuple(already))


def uninstall() -> int:
    removed = 0
    for name in SAM3_MODELING_MODULES:
        module = sys.modules.get(name)
        if module is not None and isinstance(getattr(module, "torchvision", None), _TorchvisionStandIn):
            del module.torchvision
            removed += 1
    return removed


class _TorchvisionStandIn(types.SimpleNamespace):
    """What `torchvision` must offer SAM 3's modeling code: `ops.roi_align`."""

    def __init__(self):
        super().__init__(ops=types.SimpleNamespace(roi_align=roi_align))
