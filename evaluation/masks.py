"""Masks in COCO's result format: compressed RLE for `detections.json` `segmentation`, scored by
pycocotools `COCOeval(..., "segm")`."""
from __future__ import annotations

import numpy as np


def masks_to_coco_rle(masks) -> list[dict]:
    """(N, H, W) bool masks (tensor or array) -> N COCO RLEs {"size": [H, W], "counts": str}.

    pycocotools returns `counts` as bytes; as str it goes into JSON and `COCO.loadRes` reads it back.
    """
    from pycocotools import mask as mask_utils

    array = masks.detach().cpu().numpy() if hasattr(masks, "detach") else np.asarray(masks)
    if array.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {array.shape}")
    if array.shape[0] == 0:
        return []
    # pycocotools wants (H, W, N) uint8 in Fortran order.
    encoded = mask_utils.encode(np.asfortranarray(array.astype(np.uint8).transpose(1, 2, 0)))
    return [{"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in encoded]


def ground_truth_as_detections(gt) -> list[dict]:
    """Every non-crowd annotation of a pycocotools COCO object as a detection with score 1.0, its mask
    (polygon or RLE, rasterised by pycocotools) re-encoded by `masks_to_coco_rle`. Scored with
    COCOeval(gt, gt.loadRes(these), "segm") it gives AP 1.0: the known answer that checks the encoding."""
    detections = []
    for ann in gt.dataset["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        (rle,) = masks_to_coco_rle(gt.annToMask(ann)[None])
        detections.append(
            {"image_id": ann["image_id"], "category_id": ann["category_id"], "segmentation": rle, "score": 1.0}
        )
    return detections
