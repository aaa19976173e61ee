"""A faster multi-scale deformable attention for the CPU, installed on a model instance.

transformers' pure-PyTorch `MultiScaleDeformableAttention` gathers the sampled values with
`grid_sample` once per feature level, on a (batch·heads, head_dim, H, W) layout: every bilinear corner
reads head_dim floats that lie H·W apart, one float per cache line. Here the same sums are one
`embedding_bag(mode="sum", per_sample_weights=…)` over the value tensor in its natural
(batch, tokens, heads, head_dim) layout with a one-pixel zero border around every level: each bag is one
(batch, query, head), its members are the 4 bilinear corners × levels × points, and each member's
weight is its bilinear corner weight × its attention weight. Every corner reads head_dim contiguous
floats. The result equals `grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)`
followed by the attention-weighted sum up to float summation order (tested on random inputs,
out-of-range sampling locations included).

`install(model, architecture)` swaps every transformers `MultiScaleDeformableAttention` kernel module of
either family architecture (each modeling module defines its own copy of the class) for `FastMSDA`;
transformers' files are not edited and `uninstall(model)` restores the originals. On CUDA the hub's
compiled kernel (`kernels-community/deformable-detr`, through the optional `kernels` package) is
preferred when it can be loaded; otherwise the pure-PyTorch path below runs on any device.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from .family import Architecture
from .patching import LeverInstall, modules_of_type, nothing_found

log = logging.getLogger(__name__)

HUB_KERNEL_REPO = "kernels-community/deformable-detr"


def ms_deform_attn_embedding_bag(value, spatial_shapes_list, sampling_locations, attention_weights):
    """transformers' `MultiScaleDeformableAttention` result as one embedding_bag over a zero-bordered table.

    value (B, S, H, D); sampling_locations (B, Q, H, L, P, 2) as (x, y) in [0, 1];
    attention_weights (B, Q, H, L, P). Returns (B, Q, H·D).
    """
    batch, _, heads, dim = value.shape
    queries = sampling_locations.shape[1]
    table, starts, image_pixels = _bordered_table(value, spatial_shapes_list)
    index_dtype = torch.int32 if table.shape[0] < 2**31 else torch.long
    index, weight = _bag_members(sampling_locations, attention_weights, spatial_shapes_list, starts, image_pixels,
                                 index_dtype, table.dtype)
    rows = batch * queries * heads
    out = F.embedding_bag(index.view(rows, -1), table, per_sample_weights=weight.view(rows, -1), mode="sum")
    return out.view(batch, queries, heads * dim)


def _bordered_table(value, spatial_shapes_list) -> tuple[torch.Tensor, list[int], int]:
    """The value table, every level with a one-pixel zero border: (B·pixels·H, D), rows of D contiguous
    values; with each level's first bordered pixel and the bordered pixels of one image."""
    batch, _, heads, dim = value.shape
    parts, starts, start = [], [], 0
    for (h, w), v in zip(spatial_shapes_list, value.split([h * w for h, w in spatial_shapes_list], dim=1)):
        parts.append(F.pad(v.reshape(batch, h, w, heads, dim), (0, 0, 0, 0, 1, 1, 1, 1)).reshape(batch, -1, heads, dim))
        starts.append(start)
        start += (h + 2) * (w + 2)
    table = torch.cat(parts, dim=1).reshape(-1, dim)
    if table.dtype in (torch.float16, torch.bfloat16):
        table = table.float()  # as transformers' path: grid_sample runs in fp32 under autocast
    return table, starts, start


def _bag_members(sampling_locations, attention_weights, spatial_shapes_list, starts: list[int], image_pixels: int,
                 index_dtype: torch.dtype, weight_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per bag (one (batch, query, head)) its members, (B·Q·H, 4, L·P) each: the table rows of the 4
    bilinear corners of every sampling point, and each corner's bilinear weight × its attention weight."""
    batch, queries, heads, levels, points, _ = sampling_locations.shape
    device = sampling_locations.device
    # Everything below works on (rows = B·Q·H, columns = L·P) matrices, so that every elementwise op runs
    # along long contiguous rows; per-level constants are materialised per column. (Broadcasts over small
    # inner dims, e.g. a corner axis of 2, made these ops ~10x slower than the gather itself.)
    rows, cols = batch * queries * heads, levels * points
    coord_dtype = torch.float64 if sampling_locations.dtype == torch.float64 else torch.float32
    loc = sampling_locations.to(coord_dtype).reshape(rows, cols, 2)  # grid_sample's fp32 under autocast

    def per_column(values, dtype):
        return torch.tensor(values, dtype=dtype, device=device).repeat_interleave(points)

    x0, x1, fx = _corners(loc[..., 0], per_column([w for _, w in spatial_shapes_list], coord_dtype), index_dtype)
    y0, y1, fy = _corners(loc[..., 1], per_column([h for h, _ in spatial_shapes_list], coord_dtype), index_dtype)
    row_step = per_column([(w + 2) * heads for _, w in spatial_shapes_list], index_dtype)
    head = torch.arange(heads, dtype=index_dtype, device=device).view(heads, 1)
    base = per_column(starts, index_dtype) * heads + head  # (H, L·P): first row of (level, head)
    row0 = (y0 * row_step).view(-1, heads, cols).add_(base)
    row1 = (y1 * row_step).view(-1, heads, cols).add_(base)
    if batch > 1:
        image = torch.arange(batch, dtype=index_dtype, device=device).view(batch, 1, 1) * (image_pixels * heads)
        row0, row1 = (r.view(batch, -1, cols).add_(image) for r in (row0, row1))
    row0, row1 = row0.view(rows, cols), row1.view(rows, cols)
    col0, col1 = x0.mul_(heads), x1.mul_(heads)

    attn = attention_weights.reshape(rows, cols).to(coord_dtype)
    wy1 = fy * attn
    wy0 = attn - wy1  # (1 - fy) · attn
    wx0 = 1 - fx
    index = torch.empty(rows, 4, cols, dtype=index_dtype, device=device)
    weight = torch.empty(rows, 4, cols, dtype=weight_dtype, device=device)
    for k, (r, c, wy, wx) in enumerate(((row0, col0, wy0, wx0), (row0, col1, wy0, fx), (row1, col0, wy1, wx0), (row1, col1, wy1, fx))):
        torch.add(r, c, out=index[:, k])
        torch.mul(wy, wx, out=weight[:, k])
    return index, weight


def _corners(coord: torch.Tensor, size: torch.Tensor, index_dtype: torch.dtype):
    """The low and high corner of each sampling coordinate in the bordered map, and its fraction past the low one.

    Pixel coordinate as grid_sample with align_corners=False, x·W - 0.5, shifted by +1 into the bordered
    map; corners outside the map are clamped onto its zero border.
    """
    pix = torch.addcmul(torch.tensor(0.5, dtype=coord.dtype, device=coord.device), coord, size)
    low = pix.floor()
    frac = pix - low
    limit = size + 1
    return low.clamp(min=0).minimum(limit).to(index_dtype), (low + 1).clamp(min=0).minimum(limit).to(index_dtype), frac


class FastMSDA(nn.Module):
    """Drop-in for transformers' `MultiScaleDeformableAttention` (same forward signature)."""

    def __init__(self, original: nn.Module | None = None, hub_layer=None):
        super().__init__()
        self._original = [original]  # a list keeps it out of the module tree and the state dict
        self._hub_layer = hub_layer

    def forward(
        self,
        value,
        value_spatial_shapes,
        value_spatial_shapes_list,
        level_start_index,
        sampling_locations,
        attention_weights,
        im2col_step,
    ):
        if self._hub_layer is not None and value.is_cuda:
            return self._hub_layer.forward(
                self, value, value_spatial_shapes, value_spatial_shapes_list, level_start_index,
                sampling_locations, attention_weights, im2col_step,
            )
        shapes = [(int(h), int(w)) for h, w in value_spatial_shapes_list]
        return ms_deform_attn_embedding_bag(value, shapes, sampling_locations, attention_weights)


def _load_hub_layer():
    """The hub's compiled CUDA kernel layer class, or None (no `kernels` package, offline, no build)."""
    try:
        from kernels import get_kernel

        kernel = get_kernel(HUB_KERNEL_REPO, version=1)
        return kernel.layers.MultiScaleDeformableAttention
    except Exception as exc:  # ImportError, offline, no matching build: fall back quietly
        log.info("hub deformable-attention kernel not used (%s); using the pure-PyTorch path", exc)
        return None


def install(model: nn.Module, architecture: Architecture, device: torch.device | str = "cpu") -> LeverInstall:
    """Replace every deformable-attention kernel module of `model` with `FastMSDA`."""
    try:
        cls = architecture.transformers_class("MultiScaleDeformableAttention")
    except LookupError as exc:
        return LeverInstall.unavailable(str(exc))
    already = tuple(path for path, _ in _installed(model))
    targets = modules_of_type(model, cls)
    if not targets and not already:
        return LeverInstall.unavailable(nothing_found(cls.__name__, model))
    hub_layer = _load_hub_layer() if targets and torch.device(device).type == "cuda" else None
    patched = []
    for path, module in targets:
        parent_path, _, name = path.rpartition(".")
        setattr(model.get_submodule(parent_path), name, FastMSDA(module, hub_layer))
        patched.append(path)
    return LeverInstall(tuple(patched), already)


def uninstall(model: nn.Module) -> int:
    """Put transformers' original kernel modules back; returns how many were restored."""
    restored = 0
    for path, module in _installed(model):
        parent_path, _, name = path.rpartition(".")
        setattr(model.get_submodule(parent_path), name, module._original[0])
        restored += 1
    return restored


def _installed(model: nn.Module) -> list[tuple[str, "FastMSDA"]]:
    return [(path, m) for path, m in model.named_modules() if isinstance(m, FastMSDA)]
