"""Mask -> Label Studio polygons: inside the image, covering the mask, one per part, holes and specks dropped."""
from __future__ import annotations

import numpy as np
import pytest
from label_studio_sdk.label_interface.control_tags import PolygonLabelsValue
from matplotlib.path import Path as MplPath

from labelstudio.regions import PolygonConfig, mask_to_polygons, polygon_regions
from labelstudio.regions.polygon import _offset_outwards

WIDTH, HEIGHT = 160, 120
# Stated bound: the rasterised polygon and the mask agree to IoU >= 0.95 (measured 0.98-1.0 here).
MIN_IOU = 0.95


def disc(cx, cy, r) -> np.ndarray:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    return (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r


def box(x0, y0, x1, y1) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


L_SHAPE = box(20, 10, 50, 100) | box(20, 70, 130, 100)


def rasterise(points_pct) -> np.ndarray:
    """Pixels whose centre lies inside the polygon (matplotlib, independent of OpenCV)."""
    polygon = np.asarray(points_pct) / 100.0 * [WIDTH, HEIGHT]
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    centres = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], axis=1)
    return MplPath(polygon).contains_points(centres).reshape(HEIGHT, WIDTH)


def iou(a, b) -> float:
    return float((a & b).sum() / (a | b).sum())


def regions(mask, **config):
    return polygon_regions(region_id="p", from_name="poly", to_name="image", label="Thing", score=0.5,
                           size=(WIDTH, HEIGHT), mask=mask, config=PolygonConfig(**config))


@pytest.mark.parametrize("name, mask", [("disc r=20", disc(80, 60, 20)), ("disc r=6", disc(30, 30, 6)), ("L-shape", L_SHAPE)])
def test_polygon_lies_inside_the_image_and_covers_the_mask(name, mask):
    (region,) = regions(mask)
    points = region["value"]["points"]
    PolygonLabelsValue.model_validate(region["value"])  # label-studio-sdk's schema for a PolygonLabels value
    assert region["type"] == "polygonlabels" and region["value"]["polygonlabels"] == ["Thing"]
    assert (region["original_width"], region["original_height"], region["id"], region["score"]) == (WIDTH, HEIGHT, "p", 0.5)
    assert 3 <= len(points) <= 40
    assert all(0.0 <= v <= 100.0 for point in points for v in point)
    assert iou(rasterise(points), mask) >= MIN_IOU


def test_a_rectangle_is_traced_along_its_pixel_edges():
    (polygon,) = mask_to_polygons(box(10, 5, 30, 15))
    assert sorted(map(tuple, polygon.tolist())) == [(10.0, 5.0), (10.0, 15.0), (30.0, 5.0), (30.0, 15.0)]
    (region,) = regions(np.ones((HEIGHT, WIDTH), dtype=bool))  # touching every border: clamped to 0..100
    assert sorted(map(tuple, region["value"]["points"])) == [(0.0, 0.0), (0.0, 100.0), (100.0, 0.0), (100.0, 100.0)]


def test_holes_are_filled_and_specks_dropped():
    ring = disc(80, 60, 40) & ~disc(80, 60, 15)
    specks = box(2, 2, 3, 3) | box(150, 110, 154, 114)  # 1 and 16 pixels, under min_area=25
    (region,) = regions(ring | specks)
    assert iou(rasterise(region["value"]["points"]), disc(80, 60, 40)) >= MIN_IOU


def test_one_region_per_part_largest_first_small_parts_relative_to_the_largest():
    big, other, small = box(5, 5, 65, 65), box(100, 10, 140, 50), box(100, 90, 106, 96)  # 3600, 1600, 36 px
    found = regions(big | other | small)
    assert [r["id"] for r in found] == ["p", "p-1"]  # 36 px < 5% of 3600: a speck beside this object
    assert iou(rasterise(found[0]["value"]["points"]), big) == 1.0 and iou(rasterise(found[1]["value"]["points"]), other) == 1.0
    assert [r["id"] for r in regions(big | other | small, min_part_fraction=0.0)] == ["p", "p-1", "p-2"]
    assert regions(np.zeros((HEIGHT, WIDTH), dtype=bool)) == []
    assert regions(box(10, 10, 11, 60)) == []  # a one-pixel-wide line has no area to outline


def test_simplification_respects_max_points():
    rng = np.random.RandomState(0)
    jagged = disc(80, 60, 45) & ~(rng.rand(HEIGHT, WIDTH) < 0.08)  # ragged edge, scattered holes
    (region,) = regions(jagged, max_points=12)
    assert len(region["value"]["points"]) <= 12
    assert iou(rasterise(region["value"]["points"]), disc(80, 60, 45)) >= 0.85


@pytest.mark.parametrize("clockwise", [False, True])
def test_offset_moves_edges_outwards_in_either_winding(clockwise):
    square = np.array([[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0]])
    if clockwise:
        square = square[::-1]
    grown = _offset_outwards(square, 0.5)
    assert sorted(map(tuple, grown.tolist())) == [(-0.5, -0.5), (-0.5, 4.5), (4.5, -0.5), (4.5, 4.5)]


def test_bad_config_and_frame_are_refused():
    with pytest.raises(ValueError, match="max_points at least 3"):
        PolygonConfig(max_points=2)
    with pytest.raises(ValueError, match="does not match the image's 160x120"):
        regions(np.zeros((WIDTH, HEIGHT), dtype=bool))
