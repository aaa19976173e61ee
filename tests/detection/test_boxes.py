"""detection.boxes: one IoU and the box-format conversions, for torch and numpy alike."""
from __future__ import annotations

import numpy as np
import torch
from pycocotools import mask as mask_utils

from detection.boxes import box_iou, cxcywh_to_xyxy, xywh_to_xyxy, xyxy_to_xywh


def test_conversions_round_trip_on_both_kinds():
    xywh = np.array([[10.0, 20.0, 30.0, 40.0], [0.5, 0.25, 1.0, 2.0]])
    xyxy = xywh_to_xyxy(xywh)
    np.testing.assert_array_equal(xyxy, [[10, 20, 40, 60], [0.5, 0.25, 1.5, 2.25]])
    np.testing.assert_array_equal(xyxy_to_xywh(xyxy), xywh)
    t = torch.tensor(xywh)
    assert torch.equal(xywh_to_xyxy(t), torch.tensor(xyxy)) and isinstance(xyxy_to_xywh(t), torch.Tensor)
    cxcywh = torch.tensor([[[0.5, 0.5, 0.2, 0.4]]])  # batch dims are kept
    assert torch.allclose(cxcywh_to_xyxy(cxcywh), torch.tensor([[[0.4, 0.3, 0.6, 0.7]]]))


def test_iou_equals_pycocotools_with_and_without_crowd_on_random_boxes():
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.uniform(0, 100, (40, 2)), rng.uniform(0, 50, (40, 2))], 1)  # xywh
    b = np.concatenate([rng.uniform(0, 100, (30, 2)), rng.uniform(0, 50, (30, 2))], 1)
    crowd = rng.random(30) < 0.3
    for flags in (np.zeros(30, bool), crowd):
        expected = np.asarray(mask_utils.iou(a, b, flags.astype(np.uint8).tolist()))
        got = box_iou(xywh_to_xyxy(a), xywh_to_xyxy(b), flags if flags.any() else None)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    torch_iou = box_iou(torch.tensor(xywh_to_xyxy(a)), torch.tensor(xywh_to_xyxy(b)), torch.tensor(crowd))
    np.testing.assert_allclose(torch_iou.numpy(), mask_utils.iou(a, b, crowd.astype(np.uint8).tolist()), rtol=1e-12)


def test_iou_of_empty_and_degenerate_boxes():
    assert box_iou(np.zeros((0, 4)), np.ones((3, 4))).shape == (0, 3)
    point = torch.tensor([[5.0, 5.0, 5.0, 5.0]])
    assert box_iou(point, point).item() == 0.0  # empty union: 0, not NaN
    assert box_iou(torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([[0.0, 0.0, 10.0, 20.0]])).item() == 0.5
