"""Masks in COCO's result format: compressed RLE for `detections.json` `segmentation`, scored by
pycocotools `COCOeval(..., "segm")`."""
from __future__ import annotations

import numpy as np
from matplotlib.path import Path as PolygonPath
from pycocotools import mask as mask_utils


def masks_to_coco_rle(masks) -> list[dict]:
    """(N, H, W) bool masks (tensor or array) -> N COCO RLEs {"size": [H, W], "counts": str}.

    pycocotools returns `counts` as bytes; as str it goes into JSON and `COCO.loadRes` reads it back.
    """
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


def mask_iou(detections: list[dict], truths: list[dict], crowd=None) -> np.ndarray:
    """(D, G) IoU of COCO RLEs, as COCOeval segm computes it (pycocotools' `iou`): against a crowd
    region, the intersection over the detection's area."""
    if not detections or not truths:
        return np.zeros((len(detections), len(truths)))
    crowd = np.zeros(len(truths), dtype=np.uint8) if crowd is None else np.asarray(crowd, dtype=np.uint8)
    return np.asarray(mask_utils.iou(list(detections), list(truths), list(crowd)), dtype=np.float64).reshape(
        len(detections), len(truths))


def rle_area(rle: dict) -> float:
    return float(mask_utils.area(rle))


def rle_bbox(rle: dict) -> list[float]:
    """The [x, y, w, h] pixel box around a COCO RLE mask (zeros for an empty mask)."""
    return [float(v) for v in mask_utils.toBbox(rle)]


def polygon_mask(points, width: int, height: int) -> np.ndarray:
    """The (height, width) bool mask of a polygon given as (x, y) in continuous pixel coordinates (pixel
    (i, j) covers [j, j+1] x [i, i+1]): the pixels whose centre lies inside it, as labelstudio.regions traces
    polygons. Label Studio's polygons are percent of the image: scale them first."""
    polygon = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    mask = np.zeros((height, width), dtype=bool)
    if len(polygon) < 3:
        return mask
    # Only the pixels of the polygon's bounding box can be inside: test those centres.
    x0, y0 = np.floor(polygon.min(axis=0)).astype(int).clip(0, [width, height])
    x1, y1 = np.ceil(polygon.max(axis=0)).astype(int).clip(0, [width, height])
    if x1 <= x0 or y1 <= y0:
        return mask
    yy, xx = np.mgrid[y0:y1, x0:x1]
    centres = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], axis=1)
    mask[y0:y1, x0:x1] = PolygonPath(polygon).contains_points(centres).reshape(y1 - y0, x1 - x0)
    return mask
