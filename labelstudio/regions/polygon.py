"""Mask -> Label Studio polygon regions: one per part that matters, holes filled, simplified.

A mask is cut into connected parts; the largest is always kept (a non-empty mask never gives nothing),
further ones only while they are few (`max_parts`) and not specks (`min_area`, `min_part_fraction`).
A fragmented mask (a weak model's or a textured object's) would otherwise hand a reviewer hundreds of
slivers for one box.

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
    # Parts kept per mask, largest first (POLYGON_MAX_PARTS). The largest part is always kept; a further
    # part only under this cap and when it is no speck: at least `min_area` pixels and `min_part_fraction`
    # of the whole mask's pixels (POLYGON_MIN_PART_FRACTION; SAM's masks often carry stray pixels beside
    # the object, and a weak model's masks fall into hundreds of fragments).
    max_parts: int = 3
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
        if self.max_parts < 1 or self.min_area < 1 or not 0 <= self.min_part_fraction <= 1:
            raise ValueError("max_parts and min_area must be at least 1 and min_part_fraction within 0..1")
        if self.tolerance < 0 or self.min_tolerance_px <= 0 or self.max_points < 3:
            raise ValueError("tolerance must be >= 0, min_tolerance_px > 0 and max_points at least 3")


def mask_to_polygons(mask: np.ndarray, config: PolygonConfig = PolygonConfig()) -> list[np.ndarray]:
    """Polygons (K, 2) of x, y in continuous pixel coordinates (pixel (i, j) covers [j, j+1] x [i, i+1]),
    one per kept part (`kept_parts`), largest part first; each lies inside the image. Empty only for an
    empty mask."""
    array = np.ascontiguousarray(np.asarray(mask, dtype=bool), dtype=np.uint8)
    height, width = array.shape
    _, labels, stats, _ = cv2.connectedComponentsWithStats(array, connectivity=8)
    polygons = []
    for k in kept_parts(stats[1:, cv2.CC_STAT_AREA], config) + 1:
        x, y, w, h = (int(stats[k, c]) for c in _BBOX_STATS)
        part = (labels[y : y + h, x : x + w] == k).astype(np.uint8)
        polygon = _outline(part, int(stats[k, cv2.CC_STAT_AREA]), config) + (x, y)
        polygon[:, 0] = polygon[:, 0].clip(0, width)
        polygon[:, 1] = polygon[:, 1].clip(0, height)
        polygons.append(polygon)
    return polygons


def kept_parts(areas: np.ndarray, config: PolygonConfig) -> np.ndarray:
    """Indices into `areas` (pixels per connected part) of the parts that become polygons, largest first:
    the largest always, then up to `max_parts` - 1 more of at least `min_area` pixels and
    `min_part_fraction` of all the parts' pixels together."""
    areas = np.asarray(areas, dtype=np.int64)
    if areas.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-areas, kind="stable")
    floor = max(config.min_area, config.min_part_fraction * float(areas.sum()))
    further = order[1:][areas[order[1:]] >= floor][: config.max_parts - 1]
    return np.concatenate([order[:1], further])


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
    largest part gets `region_id`, further parts `region_id-1`, `region_id-2`, ... An empty list only
    for an empty mask."""
    width, height = size
    regions = []
    for n, polygon in enumerate(mask_to_polygons(as_mask(mask, size), config)):
        points = [[pct(px, width), pct(py, height)] for px, py in polygon.tolist()]
        value = {"points": points, "polygonlabels": [label]}
        part_id = region_id if n == 0 else f"{region_id}-{n}"
        regions.append(region_result(part_id, from_name, to_name, "polygonlabels", size, value, score))
    return regions


def _outline(part: np.ndarray, area: int, config: PolygonConfig) -> np.ndarray:
    """The simplified outer contour of one part (a (h, w) crop) as (K, 2) continuous coordinates in the
    crop: traced through the boundary pixels' centres, then half a pixel outwards onto their edges."""
    contours, _ = cv2.findContours(part, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=len)
    epsilon = max(config.min_tolerance_px, config.tolerance * float(np.sqrt(area)))
    simplified = cv2.approxPolyDP(contour, epsilon, True)
    while len(simplified) > config.max_points:
        epsilon *= 2
        simplified = cv2.approxPolyDP(contour, epsilon, True)
    if len(simplified) < 3:  # a pixel or a line one pixel wide: its centres enclose no area
        return _thin_outline(part)
    return _offset_outwards(simplified[:, 0, :].astype(np.float64) + 0.5, 0.5)


def _thin_outline(part: np.ndarray) -> np.ndarray:
    """A thin part (a pixel, a line) as the smallest rotated rectangle around its pixel centres, grown by
    half a pixel on every side: for a line along x or y exactly its pixels, for a diagonal one a strip one
    pixel wide that holds its pixels' centres and no neighbour's."""
    ys, xs = np.nonzero(part)
    (cx, cy), (w, h), angle = cv2.minAreaRect(np.stack([xs, ys], axis=1).astype(np.float32) + 0.5)
    return cv2.boxPoints(((cx, cy), (w + 1.0, h + 1.0), angle)).astype(np.float64)


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

