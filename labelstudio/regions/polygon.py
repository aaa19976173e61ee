"""Mask -> Label Studio polygon regions: one per connected part, holes filled, specks dropped, simplified.

OpenCV (its headless build, already installed with label-studio-sdk) finds the parts
(`connectedComponentsWithStats`), their outer contours (`findContours`, which leaves holes out) and
simplifies them (`approxPolyDP`).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .result import as_mask, pct, region_result

_BBOX_STATS = (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT)


@dataclass(frozen=True)
class PolygonConfig:
    # A part is a speck, and dropped, below `min_area` pixels or below `min_part_fraction` of the mask's
    # largest part (SAM's masks often carry a few stray pixels beside the object).
    min_area: int = 25
    min_part_fraction: float = 0.05
    # Simplification: vertices may deviate from the traced outline by `tolerance` x sqrt(part area) pixels
    # (size-relative: a disc keeps 8-16 vertices at any radius from 6 to 300 px, IoU >= 0.96 with the
    # mask), at least `min_tolerance_px` (below that it would trace the pixel staircase); doubled until
    # at most `max_points` vertices remain.
    tolerance: float = 0.02
    min_tolerance_px: float = 0.75
    max_points: int = 100

    def __post_init__(self):
        if self.min_area < 1 or not 0 <= self.min_part_fraction <= 1:
            raise ValueError("min_area must be at least 1 and min_part_fraction within 0..1")
        if self.tolerance < 0 or self.min_tolerance_px <= 0 or self.max_points < 3:
            raise ValueError("tolerance must be >= 0, min_tolerance_px > 0 and max_points at least 3")


def mask_to_polygons(mask: np.ndarray, config: PolygonConfig = PolygonConfig()) -> list[np.ndarray]:
    """Polygons (K, 2) of x, y in continuous pixel coordinates (pixel (i, j) covers [j, j+1] x [i, i+1]),
    one per kept part, largest part first; each lies inside the image."""
    array = np.ascontiguousarray(np.asarray(mask, dtype=bool), dtype=np.uint8)
    height, width = array.shape
    count, labels, stats, _ = cv2.connectedComponentsWithStats(array, connectivity=8)
    if count <= 1:
        return []
    areas = stats[1:, cv2.CC_STAT_AREA]
    threshold = max(config.min_area, config.min_part_fraction * float(areas.max()))
    polygons = []
    for k in np.argsort(-areas, kind="stable") + 1:
        area = int(stats[k, cv2.CC_STAT_AREA])
        if area < threshold:
            break
        x, y, w, h = (int(stats[k, c]) for c in _BBOX_STATS)
        part = (labels[y : y + h, x : x + w] == k).astype(np.uint8)
        outline = _outline(part, area, config)
        if outline is None:
            continue
        # Outline vertices are boundary pixel centres; half a pixel outwards is the pixel edge.
        polygon = _offset_outwards(outline + (x + 0.5, y + 0.5), 0.5)
        polygon[:, 0] = polygon[:, 0].clip(0, width)
        polygon[:, 1] = polygon[:, 1].clip(0, height)
        polygons.append(polygon)
    return polygons


def polygon_regions(
    *,
    region_id: str,
    from_name: str,
    to_name: str,
    label: str,
    score: float,
    size: tuple[int, int],
    mask,
    config: PolygonConfig = PolygonConfig(),
) -> list[dict]:
    """`polygonlabels` results for a (H, W) mask of the image of (width, height) `size` as displayed: the
    largest part gets `region_id`, further parts `region_id-1`, `region_id-2`, ... An empty list when
    nothing but specks is left."""
    width, height = size
    regions = []
    for n, polygon in enumerate(mask_to_polygons(as_mask(mask, size), config)):
        points = [[pct(px, width), pct(py, height)] for px, py in polygon.tolist()]
        value = {"points": points, "polygonlabels": [label]}
        part_id = region_id if n == 0 else f"{region_id}-{n}"
        regions.append(region_result(part_id, from_name, to_name, "polygonlabels", size, value, score))
    return regions


def _outline(part: np.ndarray, area: int, config: PolygonConfig) -> np.ndarray | None:
    """The simplified outer contour of one part as (K, 2) pixel indices, or None under 3 vertices."""
    contours, _ = cv2.findContours(part, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    contour = max(contours, key=len)
    epsilon = max(config.min_tolerance_px, config.tolerance * float(np.sqrt(area)))
    simplified = cv2.approxPolyDP(contour, epsilon, True)
    while len(simplified) > config.max_points:
        epsilon *= 2
        simplified = cv2.approxPolyDP(contour, epsilon, True)
    if len(simplified) < 3:  # a one-pixel-wide line: no area to outline
        return None
    return simplified[:, 0, :].astype(np.float64)


def _offset_outwards(polygon: np.ndarray, distance: float) -> np.ndarray:
    """Move every edge `distance` outwards (mitred corners, mitre capped at 2x `distance`)."""
    x, y = polygon[:, 0], polygon[:, 1]
    signed_area = 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))
    orientation = 1.0 if signed_area > 0 else -1.0
    incoming = polygon - np.roll(polygon, 1, axis=0)
    outgoing = np.roll(polygon, -1, axis=0) - polygon
    n_in = _unit(np.stack([incoming[:, 1], -incoming[:, 0]], axis=1)) * orientation
    n_out = _unit(np.stack([outgoing[:, 1], -outgoing[:, 0]], axis=1)) * orientation
    bisector = n_in + n_out
    length = np.linalg.norm(bisector, axis=1, keepdims=True)
    # A reversal (n_in = -n_out) has no bisector: push along the incoming edge's normal.
    direction = np.where(length > 1e-9, bisector / np.maximum(length, 1e-9), n_in)
    cos_half = np.clip(np.sum(direction * n_in, axis=1, keepdims=True), 0.5, 1.0)
    return polygon + direction * (distance / cos_half)


def _unit(vectors: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norm, 1e-12)

