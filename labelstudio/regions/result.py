"""The envelope every Label Studio region result shares, whatever its value."""
from __future__ import annotations

import hashlib

import numpy as np


def region_result(
    region_id: str, from_name: str, to_name: str, kind: str, size: tuple[int, int], value: dict, score: float
) -> dict:
    """One Label Studio result: `kind` is the control's type ("brushlabels", "polygonlabels", ...), `size`
    the (width, height) of the image as displayed (EXIF applied), `value` the kind's own fields."""
    width, height = size
    return {
        "id": region_id,
        "from_name": from_name,
        "to_name": to_name,
        "type": kind,
        "original_width": int(width),
        "original_height": int(height),
        "image_rotation": 0,
        "value": value,
        "score": float(score),
    }


def region_id(task_id, from_name: str, to_name: str, n: int) -> str:
    """The id of a task's n-th region of a control on an image: the same on every run, so that a task
    predicted twice gives the same ids."""
    return hashlib.sha1(f"{task_id}/{from_name}/{to_name}/{n}".encode()).hexdigest()[:10]


def as_mask(mask, size: tuple[int, int]) -> np.ndarray:
    """A (H, W) bool array from a bool/0-1 tensor or array, checked against the image's (width, height)."""
    array = mask.detach().cpu().numpy() if hasattr(mask, "detach") else np.asarray(mask)
    width, height = size
    if array.shape != (height, width):
        raise ValueError(
            f"mask of shape {array.shape} does not match the image's {width}x{height} (width x height): "
            "masks must be (height, width) in the frame of the image as displayed"
        )
    return array.astype(bool, copy=False)


def pct(pixels: float, size: int) -> float:
    """Pixels -> percent of the image's side, within 0..100 (Label Studio's coordinates)."""
    return min(100.0, max(0.0, float(pixels) / size * 100.0))
