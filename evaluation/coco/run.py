"""The COCO side of an evaluation run: phrases per category, the stored record per image, the scoring.

The run itself (sharding, durable partial results, resume, torchrun) is evaluation.runner.run.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from detection.boxes import xyxy_to_xywh
from detection.phrases import class_phrases
from evaluation.masks import masks_to_coco_rle
from evaluation.runner.summary import add_mask_columns, record_parity
from runtime.errors import InputError
from runtime.files import atomic_write

from .dataset import CocoDataset
from .scoring import coco_gt, non_parity_reasons, per_class_table, published_rows, score, summary_text

# A custom dataset's `TrafficLight` is prompted "traffic light", as the backend prompts a Label Studio
# label (COCO's own names are already words: unchanged).
PHRASE_RULE = "detection.phrases.class_phrases (the backend's label -> phrase rule)"


def to_coco(image_id: int, dets, category_ids: list[int], masks=None) -> list[dict]:
    """Ranked detections of one image -> COCO results ([x, y, w, h] in original pixels; with `masks`,
    (N, H, W) in the image's frame, also each one's compressed RLE `segmentation`)."""
    xywh = xyxy_to_xywh(dets.boxes.float())
    results = [
        {"image_id": image_id, "category_id": category_ids[label], "bbox": box, "score": score}
        for label, box, score in zip(dets.labels.tolist(), xywh.tolist(), dets.scores.float().tolist())
    ]
    if masks is not None:
        for result, rle in zip(results, masks_to_coco_rle(masks), strict=True):
            result["segmentation"] = rle
    return results


class CocoScorer:
    """pycocotools COCOeval (default parameters) on a COCO-format dataset: bbox, or segm with bbox of the
    same detections beside it.

    metrics.json holds box metrics at the top level in every run (comparable with box runs and the
    published figures); a segm run adds the mask metrics under "segm", and per_class.csv gains
    segm_AP, segm_AP50 and segm_AP75 columns.
    """

    phrase_rule = PHRASE_RULE
    outputs = "detections.json, metrics.json, per_class.csv"
    benchmark_kind = "coco"

    def __init__(self, dataset: CocoDataset, model: str, iou_type: str = "bbox"):
        self.dataset = dataset
        self.model = model
        self.iou_type = "bbox"
        if iou_type == "segm":
            self.use_masks()

    def has_masks(self) -> bool:
        return has_instance_masks(self.dataset)

    def use_masks(self) -> None:
        """Score masks too (segm); refused with what to change when the dataset has none."""
        check_masks(self.dataset)
        self.iou_type = "segm"

    def classes(self) -> list[tuple[str, ...]]:
        return [class_phrases(name) for name in self.dataset.category_names]

    def encode(self, image_id: int, detections, masks=None) -> list[dict]:
        if masks is not None:
            check_mask_frame(self.dataset, image_id, masks)
        return to_coco(image_id, detections, self.dataset.category_ids, masks)

    def finish(self, run_dir: Path, records, ids: list[int], config: dict) -> dict:
        merged = dict(records)
        detections = [d for i in ids for d in merged[i]]  # in image-id order, whatever the ranks' order
        atomic_write(run_dir / "detections.json", json.dumps(detections, separators=(",", ":")))
        t0 = time.perf_counter()
        gt = coco_gt(self.dataset.data)
        metrics, ev, text = score(gt, detections, ids)
        per_class = per_class_table(ev, self.dataset.categories)
        if self.iou_type == "segm":
            segm, segm_ev, segm_text = score(gt, detections, ids, "segm")
            metrics["segm"] = segm
            text = f"boxes (COCOeval bbox):\n{text.rstrip()}\nmasks (COCOeval segm):\n{segm_text}"
            add_mask_columns(per_class, per_class_table(segm_ev, self.dataset.categories))
        config["timings"]["scoring_s"] = round(time.perf_counter() - t0, 3)
        config["published"] = published_rows(self.model, len(ids), self.dataset.ann_path.name)
        record_parity(config, non_parity_reasons(config))
        per_class.to_csv(run_dir / "per_class.csv", index=False)
        metrics = {**metrics, "config": config}
        print(summary_text(metrics, config, text))
        return metrics


def check_mask_frame(dataset: CocoDataset, image_id: int, masks) -> None:
    """Masks must be in the frame the annotation file declares for the image (its ground truth's)."""
    declared = dataset.sizes.get(image_id)
    height, width = masks.shape[-2:]
    if declared and declared != (width, height):
        raise InputError(
            f"{dataset.files[image_id]} is {width}x{height} pixels but the annotation file declares "
            f"{declared[0]}x{declared[1]}: masks must be in the frame the ground-truth masks were drawn in"
        )


def has_instance_masks(dataset: CocoDataset) -> bool:
    """Every annotation has an instance mask and every image its size: mask AP can be scored."""
    data = dataset.data
    return all(a.get("segmentation") for a in data["annotations"]) and all(
        "width" in img and "height" in img for img in data["images"])


def check_masks(dataset: CocoDataset) -> None:
    """segm needs every image's width/height (polygons are rasterised in it) and every annotation's mask."""
    unsized = [img.get("file_name") for img in dataset.data["images"] if "width" not in img or "height" not in img]
    if unsized:
        raise InputError(f"{dataset.ann_path}: image {unsized[0]!r} has no width/height, which --iou-type segm needs "
                         "to rasterise ground-truth polygons; add them to the annotation file")
    bare = [a for a in dataset.data["annotations"] if not a.get("segmentation")]
    if bare:
        raise InputError(
            f"{dataset.ann_path}: {len(bare)} annotations have no 'segmentation' (first: id {bare[0].get('id')} of "
            f"image {bare[0].get('image_id')}); --iou-type segm needs instance masks (polygons or RLE): use an "
            "instance segmentation file, or --iou-type bbox"
        )
