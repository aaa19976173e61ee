"""COCO mask RLE for detections.json, scored by pycocotools COCOeval "segm" on data with a known answer."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch

from evaluation.coco.scoring import coco_gt
from evaluation.masks import ground_truth_as_detections, masks_to_coco_rle


def segm_eval(gt, detections) -> np.ndarray:
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        # Through JSON, as detections.json is written and read back.
        ev = COCOeval(gt, gt.loadRes(json.loads(json.dumps(detections))), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def square(height, width, x0, y0, side) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[y0 : y0 + side, x0 : x0 + side] = True
    return mask


def test_rle_round_trips_bit_for_bit_and_is_json():
    from pycocotools import mask as mask_utils

    rng = np.random.RandomState(0)
    masks = torch.from_numpy(rng.rand(3, 37, 53) > 0.6)
    rles = masks_to_coco_rle(masks)
    assert [r["size"] for r in rles] == [[37, 53]] * 3 and all(isinstance(r["counts"], str) for r in rles)
    rles = json.loads(json.dumps(rles))
    decoded = mask_utils.decode([{"size": r["size"], "counts": r["counts"].encode()} for r in rles])
    assert np.array_equal(decoded.transpose(2, 0, 1).astype(bool), masks.numpy())
    assert masks_to_coco_rle(np.zeros((0, 5, 5), dtype=bool)) == []
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        masks_to_coco_rle(np.zeros((5, 5), dtype=bool))


def gt_with_masks() -> dict:
    """Polygons (an L-shape, a triangle) and an RLE annotation over two images and two categories."""
    l_shape = [[20, 10, 50, 10, 50, 70, 130, 70, 130, 100, 20, 100]]
    triangle = [[100, 10, 150, 10, 125, 50]]
    rle = masks_to_coco_rle(square(90, 120, 30, 20, 40)[None])[0]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": l_shape, "bbox": [20, 10, 110, 90], "area": 5100, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "segmentation": triangle, "bbox": [100, 10, 50, 40], "area": 1000, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 2, "segmentation": rle, "bbox": [30, 20, 40, 40], "area": 1600, "iscrowd": 0},
    ]
    images = [{"id": 1, "width": 160, "height": 120, "file_name": "1.png"}, {"id": 2, "width": 120, "height": 90, "file_name": "2.png"}]
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "el"}, {"id": 2, "name": "thing"}]}


def test_ground_truth_masks_as_detections_score_segm_ap_1():
    gt = coco_gt(gt_with_masks())
    detections = ground_truth_as_detections(gt)
    assert len(detections) == 3
    stats = segm_eval(gt, detections)
    assert stats[0] == stats[1] == stats[2] == 1.0  # AP, AP50, AP75


def test_shifted_masks_score_the_thresholds_their_iou_passes():
    # A 20x20 ground-truth square and a detection shifted 4 px: IoU = 16*20 / (24*20) = 2/3, so it
    # matches at IoU thresholds 0.50, 0.55, 0.60, 0.65 and misses at 0.70 .. 0.95: AP = 4/10.
    gt_mask, shifted = square(60, 60, 10, 10, 20), square(60, 60, 14, 10, 20)
    data = {
        "images": [{"id": 1, "width": 60, "height": 60, "file_name": "1.png"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": masks_to_coco_rle(gt_mask[None])[0],
                         "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    detection = {"image_id": 1, "category_id": 1, "segmentation": masks_to_coco_rle(shifted[None])[0], "score": 0.9}
    stats = segm_eval(coco_gt(data), [detection])
    assert stats[:3].tolist() == pytest.approx([0.4, 1.0, 0.0], abs=1e-12)  # AP, AP50, AP75
