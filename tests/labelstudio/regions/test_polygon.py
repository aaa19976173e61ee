"""Mask -> Label Studio polygons: inside the image, covering the mask, one per part that matters (a cap and a
minimum part; the largest always), holes filled."""
from __future__ import annotations

import numpy as np
import pytest
from label_studio_sdk.label_interface.control_tags import PolygonLabelsValue
from matplotlib.path import Path as MplPath
from scipy import ndimage

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


def test_one_region_per_part_largest_first_small_parts_relative_to_the_mask():
    big, other, small = box(5, 5, 65, 65), box(100, 10, 140, 50), box(100, 90, 106, 96)  # 3600, 1600, 36 px
    found = regions(big | other | small)
    assert [r["id"] for r in found] == ["p", "p-1"]  # 36 px < 5% of the mask's 5236: a speck beside this object
    assert iou(rasterise(found[0]["value"]["points"]), big) == 1.0 and iou(rasterise(found[1]["value"]["points"]), other) == 1.0
    assert [r["id"] for r in regions(big | other | small, min_part_fraction=0.0)] == ["p", "p-1", "p-2"]
    assert regions(np.zeros((HEIGHT, WIDTH), dtype=bool)) == []


# A fragmented mask: two objects and 2,784 fragments (a weak mask model's output, or a textured object).
FRAG_W, FRAG_H = 320, 240
RECT = (20, 20, 120, 100)  # x0, y0, x1, y1: 8,000 px
DISC = (230, 120, 40)  # cx, cy, r: 5,024 px


def fragmented() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mask, the rectangle blob, the disc blob). Every fragment is 1 px, a 2x2 speck (4 px) or a 5x6
    patch (30 px: above the 25-px floor, below 5 % of the mask), with a gap of at least one pixel to all else."""
    yy, xx = np.mgrid[0:FRAG_H, 0:FRAG_W]
    rect = np.zeros((FRAG_H, FRAG_W), dtype=bool)
    rect[RECT[1]:RECT[3], RECT[0]:RECT[2]] = True
    cx, cy, r = DISC
    round_blob = (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r
    mask = rect | round_blob
    mask[172::3, 1::3] = True  # 23 x 107 1-px specks below both blobs (y >= 172 > 160, the disc's bottom)
    mask[2:16:4, 2:316:4] = True  # 4 x 79 2x2 specks above the rectangle ...
    mask[3:17:4, 2:316:4] = True
    mask[3:17:4, 3:317:4] = True
    mask[2:16:4, 3:317:4] = True
    for x in range(130, 186, 8):  # ... and seven 30-px patches between the blobs
        mask[30:36, x:x + 5] = True
    return mask, rect, round_blob


def shoelace(polygon) -> float:
    x, y = np.asarray(polygon, dtype=np.float64).T
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)))


def test_a_fragmented_mask_gives_its_two_objects_not_hundreds_of_slivers():
    mask, rect, round_blob = fragmented()
    parts, count = ndimage.label(mask, structure=np.ones((3, 3)))  # scipy: an independent count of the parts
    sizes = np.bincount(parts.ravel())[1:]
    assert count == 2 + 2461 + 316 + 7 and sorted(sizes)[-2:] == [round_blob.sum(), rect.sum()] == [5024, 8000]
    assert (sizes == 30).sum() == 7 and 30 < 0.05 * mask.sum()  # patches: over the floor, under the fraction
    first, second = mask_to_polygons(mask)  # exactly two
    assert sorted(map(tuple, first.tolist())) == [(20.0, 20.0), (20.0, 100.0), (120.0, 20.0), (120.0, 100.0)]
    # The disc: its polygon covers the same pixels (matplotlib, pixel centres) and area, within the stated bound.
    yy, xx = np.mgrid[0:FRAG_H, 0:FRAG_W]
    centres = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], axis=1)
    inside = MplPath(second).contains_points(centres).reshape(FRAG_H, FRAG_W)
    assert iou(inside, round_blob) >= MIN_IOU
    assert shoelace(second) == pytest.approx(round_blob.sum(), rel=0.03)
    # With the specks' own thresholds off, the cap alone still bounds what a reviewer gets.
    assert len(mask_to_polygons(mask, PolygonConfig(min_part_fraction=0.0, min_area=1))) == 3
    assert len(mask_to_polygons(mask, PolygonConfig(min_part_fraction=0.0, min_area=1, max_parts=1000))) == 1000
    assert len(mask_to_polygons(mask, PolygonConfig(min_part_fraction=0.0, max_parts=1000))) == 2 + 7


# Six separate squares, 40 to 15 px a side: 1600, 1225, 900, 625, 400, 225 px (4,975 in all).
SQUARES = [(5, 5, 40), (55, 5, 35), (100, 5, 30), (5, 60, 25), (40, 60, 20), (70, 60, 15)]


def squares() -> np.ndarray:
    return np.logical_or.reduce([box(x, y, x + side, y + side) for x, y, side in SQUARES])


def corners(x, y, side):
    return sorted([(float(x), float(y)), (float(x), float(y + side)), (float(x + side), float(y)),
                   (float(x + side), float(y + side))])


@pytest.mark.parametrize("config, kept", [
    ({}, 3),  # the default cap: the three largest
    ({"max_parts": 5}, 5),  # 225 px < 5% of 4,975 (248.75): a speck
    ({"max_parts": 6, "min_part_fraction": 0.0}, 6),
    ({"max_parts": 6, "min_part_fraction": 0.2}, 2),  # 995 px and more: 1600, 1225
    ({"max_parts": 1, "min_part_fraction": 0.0}, 1),
])
def test_cap_and_minimum_part_are_honoured_largest_first(config, kept):
    found = mask_to_polygons(squares(), PolygonConfig(**config))
    assert [sorted(map(tuple, p.tolist())) for p in found] == [corners(*s) for s in SQUARES[:kept]]


def test_a_mask_of_specks_still_gives_its_largest_part():
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[1::4, 1::4] = True  # 1,199 single pixels ...
    mask[61:63, 81:83] = True  # ... and one 2x2 speck, under min_area: still the mask's largest part
    (region,) = regions(mask)
    assert sorted(map(tuple, region["value"]["points"])) == [
        (81 / WIDTH * 100, 61 / HEIGHT * 100), (81 / WIDTH * 100, 63 / HEIGHT * 100),
        (83 / WIDTH * 100, 61 / HEIGHT * 100), (83 / WIDTH * 100, 63 / HEIGHT * 100)]
    # All parts equal: the first in reading order (top row, then left), one pixel's square.
    only_pixels = np.zeros((HEIGHT, WIDTH), dtype=bool)
    only_pixels[7::5, 9::5] = True
    (polygon,) = mask_to_polygons(only_pixels)
    assert sorted(map(tuple, polygon.tolist())) == [(9.0, 7.0), (9.0, 8.0), (10.0, 7.0), (10.0, 8.0)]


def test_a_line_one_pixel_wide_is_outlined_around_its_pixels():
    (straight,) = mask_to_polygons(box(10, 10, 11, 60))
    assert sorted(map(tuple, straight.round(6).tolist())) == [(10.0, 10.0), (10.0, 60.0), (11.0, 10.0), (11.0, 60.0)]
    diagonal = np.zeros((HEIGHT, WIDTH), dtype=bool)
    diagonal[np.arange(20, 60), np.arange(30, 70)] = True  # 40 pixels corner to corner
    (strip,) = mask_to_polygons(diagonal)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    inside = MplPath(strip).contains_points(np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], axis=1))
    assert np.array_equal(inside.reshape(HEIGHT, WIDTH), diagonal)  # every pixel, and no other centre
    # One pixel wide; as long as from the first centre to the last (39 sqrt 2) and half a pixel beyond each.
    assert shoelace(strip) == pytest.approx(39 * np.sqrt(2) + 1, rel=1e-5)
    (pixel,) = mask_to_polygons(box(7, 9, 8, 10))
    assert sorted(map(tuple, pixel.round(6).tolist())) == [(7.0, 9.0), (7.0, 10.0), (8.0, 9.0), (8.0, 10.0)]


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
    with pytest.raises(ValueError, match="max_parts and min_area must be at least 1"):
        PolygonConfig(max_parts=0)
    with pytest.raises(ValueError, match="does not match the image's 160x120"):
        regions(np.zeros((WIDTH, HEIGHT), dtype=bool))
