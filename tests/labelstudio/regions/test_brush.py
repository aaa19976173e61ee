"""Mask -> Label Studio brush RLE: decodable by label-studio-sdk back to the mask, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from label_studio_sdk.converter.brush import decode_rle
from label_studio_sdk.label_interface.control_tags import BrushLabelsValue

from labelstudio.regions import brush_region, mask_to_rle, rle_to_mask


def disc(height, width, cx, cy, r) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r


MASKS = {
    "disc": disc(48, 64, 30, 20, 12),
    "noise": np.random.RandomState(0).rand(37, 53) > 0.5,  # runs of length 1: the converter's literal path
    "empty": np.zeros((10, 7), dtype=bool),
    "full 300x300": np.ones((300, 300), dtype=bool),  # one run of 360,000 values: longer than 2**16
    "one pixel": np.ones((1, 1), dtype=bool),
}


@pytest.mark.parametrize("name", list(MASKS))
def test_rle_decodes_back_to_the_mask_bit_for_bit(name):
    mask = MASKS[name]
    height, width = mask.shape
    rle = mask_to_rle(mask)
    assert all(isinstance(v, int) and 0 <= v <= 255 for v in rle)
    # label-studio-sdk's own decoder: RGBA values, every channel 255 inside the mask, 0 outside
    rgba = decode_rle(rle).reshape(height, width, 4)
    assert np.array_equal(rgba[:, :, 3] == 255, mask) and np.array_equal(rgba[:, :, 3] == 0, ~mask)
    assert (rgba == rgba[:, :, :1]).all()
    assert np.array_equal(rle_to_mask(rle, width, height), mask)


def test_brush_region_has_make_regions_shape_and_a_valid_value():
    from labelstudio.label_sets import LabelSet
    from labelstudio.regions import make_region

    mask = torch.from_numpy(MASKS["disc"])
    region = brush_region(region_id="r1", from_name="brush", to_name="image", label="Cat", score=0.75, size=(64, 48), mask=mask)
    box_region = make_region(7, LabelSet("brush", "image", "image", "rectanglelabels", ()), (64, 48), (1, 2, 30, 40), 0.75, "Cat", 0)
    assert set(region) == set(box_region)
    assert {k: region[k] for k in ("id", "from_name", "to_name", "type", "original_width", "original_height", "image_rotation", "score")} == {
        "id": "r1", "from_name": "brush", "to_name": "image", "type": "brushlabels",
        "original_width": 64, "original_height": 48, "image_rotation": 0, "score": 0.75,
    }
    assert region["value"]["format"] == "rle" and region["value"]["brushlabels"] == ["Cat"]
    BrushLabelsValue.model_validate(region["value"])  # label-studio-sdk's schema for a BrushLabels value
    assert np.array_equal(rle_to_mask(region["value"]["rle"], 64, 48), MASKS["disc"])


def test_mask_in_another_frame_is_refused():
    with pytest.raises(ValueError, match=r"does not match the image's 48x64 \(width x height\)"):
        brush_region(region_id="r", from_name="b", to_name="i", label="L", score=1.0, size=(48, 64), mask=MASKS["disc"])
    with pytest.raises(ValueError, match="do not belong to this mask"):
        rle_to_mask(mask_to_rle(MASKS["disc"]), 48, 48)
