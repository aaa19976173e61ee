"""Mask -> Label Studio brush region, in Label Studio's RLE (label-studio-sdk's converter), and back."""
from __future__ import annotations

import numpy as np
from label_studio_sdk.converter.brush import decode_rle, mask2rle

from .result import as_mask, region_result

# The converter encodes an RGBA image; Label Studio draws the brush from its alpha channel.
_OPAQUE = 255
_CHANNELS = 4


def mask_to_rle(mask: np.ndarray) -> list[int]:
    """Label Studio's brush RLE of a (H, W) bool mask (every channel 255 where set, as LS's own export)."""
    array = np.asarray(mask, dtype=bool).astype(np.uint8) * _OPAQUE
    return [int(v) for v in mask2rle(array)]


def rle_to_mask(rle: list[int], width: int, height: int) -> np.ndarray:
    """The (H, W) bool mask of a brush RLE, by label-studio-sdk's decoder (alpha channel set)."""
    flat = decode_rle(list(rle))
    if flat.size != width * height * _CHANNELS:
        raise ValueError(
            f"brush RLE holds {flat.size} values, not {width}x{height}x{_CHANNELS}: "
            "original_width/original_height do not belong to this mask"
        )
    return flat.reshape(height, width, _CHANNELS)[:, :, 3] > 0


def brush_region(
    *, region_id: str, from_name: str, to_name: str, label: str, score: float, size: tuple[int, int], mask
) -> dict:
    """One `brushlabels` result for a (H, W) mask of the image of (width, height) `size` as displayed."""
    value = {"format": "rle", "rle": mask_to_rle(as_mask(mask, size)), "brushlabels": [label]}
    return region_result(region_id, from_name, to_name, "brushlabels", size, value, score)
