"""Label Studio rectangle geometry, in one place: a stored rectangle -> its corners and its enclosing box
in image pixels.

Label Studio stores a rectangle as x, y, width, height in percent of the image and a `rotation` in
degrees, clockwise on screen (y points down), about the rectangle's top-left corner (x, y). Scoring an
export (COCO ground truth, masks of rectangles) and training (targets) both read rectangles through
these functions, so the same annotation is the same box in evaluation and in training.
"""
from __future__ import annotations

import math

import numpy as np


def rectangle_corners(x: float, y: float, w: float, h: float, rotation: float,
                      width: float, height: float) -> np.ndarray:
    """(4, 2) corners in pixels (top-left, top-right, bottom-right, bottom-left before rotation) of a
    rectangle stored in percent of a `width` x `height` image, rotated `rotation` degrees clockwise about
    its top-left corner."""
    x, y, w, h = x * width / 100, y * height / 100, w * width / 100, h * height / 100
    angle = math.radians(rotation)
    cos, sin = math.cos(angle), math.sin(angle)
    offsets = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    return np.stack([x + offsets[:, 0] * cos - offsets[:, 1] * sin, y + offsets[:, 0] * sin + offsets[:, 1] * cos], axis=1)


def rectangle_box(x: float, y: float, w: float, h: float, rotation: float,
                  width: float, height: float) -> tuple[float, float, float, float]:
    """The pixel box (x, y, w, h) enclosing that rectangle: the rectangle itself when it is not rotated
    (exactly, without trigonometry), else the axis-aligned box around its rotated corners. Not clipped."""
    if not rotation:
        return x * width / 100, y * height / 100, w * width / 100, h * height / 100
    corners = rectangle_corners(x, y, w, h, rotation, width, height)
    (x0, y0), (x1, y1) = corners.min(axis=0), corners.max(axis=0)
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)
