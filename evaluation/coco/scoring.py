"""pycocotools scoring (COCOeval bbox or segm, default parameters), per-class AP and the printed summary."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from evaluation.published import COCO_VAL2017, comparison_lines, published_for
from evaluation.runner.summary import header_lines, non_parity_lines

METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
PER_CLASS_COLUMNS = ["category_id", "name", "AP", "AP50", "AP75", "num_gt"]
IOU_TYPES = ("bbox", "segm")
# The field of a result each IoU type reads; the other is dropped before scoring: with a `bbox`,
# pycocotools' loadRes takes a result's area from its box, which would size masks by their boxes in
# segm's small/medium/large (detectron2 drops it for the same reason).
GEOMETRY = {"bbox": "bbox", "segm": "segmentation"}
VAL2017_IMAGES = 5000


def coco_gt(data: dict):
    """A pycocotools COCO object from an already loaded (and validated) annotation dict."""
    gt = COCO()
    gt.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def load_results(gt, detections: list[dict], iou_type: str = "bbox"):
    """COCO results as a pycocotools object, with only `iou_type`'s geometry; an empty list (which
    loadRes refuses) scores 0."""
    other = GEOMETRY["segm" if iou_type == "bbox" else "bbox"]
    if detections:
        return gt.loadRes([{k: v for k, v in d.items() if k != other} for d in detections])
    dt = COCO()
    dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": []}
    dt.createIndex()
    return dt


def score(gt, detections: list[dict], image_ids, iou_type: str = "bbox") -> tuple[dict, object, str]:
    """COCOeval (`iou_type` bbox or segm) over `image_ids`: (metrics as fractions, the evaluated
    COCOeval, summarize() text)."""
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {', '.join(IOU_TYPES)}, got {iou_type!r}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ev = COCOeval(gt, load_results(gt, detections, iou_type), iou_type)
        ev.params.imgIds = sorted(int(i) for i in image_ids)
        ev.evaluate()
        ev.accumulate()
        out.truncate(0)
        out.seek(0)
        ev.summarize()
    metrics = {name: float(v) for name, v in zip(METRICS, ev.stats)}
    return metrics, ev, out.getvalue()


def per_class_table(ev, categories: list[dict]) -> pd.DataFrame:
    """Per category, in annotation-file order: AP, AP50, AP75 (fractions; area all, 100 detections) and
    the non-crowd GT count over the evaluated images. The one per-class table: the run's per_class.csv,
    the analysis and the report (which sorts it for display) all come from it.

    From COCOeval's accumulated precision array [T iou, R recall, K class, A area, M maxDets]; -1
    entries (no ground truth) are left out of the means; a class without ground truth gets NaN.
    """
    precision = ev.eval["precision"]
    k_of = {cid: k for k, cid in enumerate(ev.params.catIds)}
    img_ids = set(ev.params.imgIds)
    num_gt = {}
    for a in ev.cocoGt.dataset["annotations"]:
        if a["image_id"] in img_ids and not a.get("iscrowd", 0):
            num_gt[a["category_id"]] = num_gt.get(a["category_id"], 0) + 1

    def mean(p):
        p = p[p > -1]
        return float(np.mean(p)) if p.size else float("nan")

    rows = []
    for c in categories:
        k = k_of[c["id"]]
        p = precision[:, :, k, 0, -1]  # area "all", maxDets 100
        rows.append({"category_id": int(c["id"]), "name": c["name"], "AP": mean(p), "AP50": mean(p[0]),
                     "AP75": mean(p[5]), "num_gt": int(num_gt.get(c["id"], 0))})
    return pd.DataFrame(rows, columns=PER_CLASS_COLUMNS)


def is_full_val2017(num_images: int, ann_name: str) -> bool:
    """A run over all of COCO val2017: the only runs the published figures can be compared with."""
    return num_images == VAL2017_IMAGES and "val2017" in ann_name


def published_rows(model: str, num_images: int, ann_name: str) -> list[dict]:
    """The published COCO val2017 figures of the run's checkpoint, for a full val2017 run ([] otherwise)."""
    if not is_full_val2017(num_images, ann_name):
        return []
    return [p.as_dict() for p in published_for(model, COCO_VAL2017)]


def summary_text(metrics: dict, config: dict, cocoeval_text: str = "") -> str:
    ap = 100 * metrics["AP"]
    chunked = (config.get("protocol") or {}).get("chunks_prompts", True)
    lines = header_lines(config, f"num_select {config.get('num_select')}, "
                         + (f"{config.get('num_chunks', 1)} prompt chunk(s)" if chunked else "one prompt per category"))
    lines += non_parity_lines(non_parity_reasons(config))
    if config.get("iou_type") == "segm" and config.get("masks"):
        lines.append(f"masks: {config['masks']}, as the model gives them")
    elif config.get("iou_type") == "segm":
        lines.append(f"masks: {config.get('sam_model')} (revision {config.get('sam_revision')}), each cut to its "
                     f"box + {100 * config.get('mask_box_margin', 0):.0f}% per side")
    if cocoeval_text:
        lines.append(cocoeval_text.rstrip())
    lines.append(f"AP {ap:.1f}  AP50 {100 * metrics['AP50']:.1f}  AP75 {100 * metrics['AP75']:.1f}"
                 + ("  (boxes)" if "segm" in metrics else ""))
    if "segm" in metrics:
        segm = metrics["segm"]
        lines.append(f"AP {100 * segm['AP']:.1f}  AP50 {100 * segm['AP50']:.1f}  AP75 {100 * segm['AP75']:.1f}  "
                     "(masks)")
    lines += comparison_lines(ap, config.get("published") or [])
    return "\n".join(lines)


def non_parity_reasons(config: dict, parity_chunk_size: int | None = None, parity_num_select: int | None = None) -> list[str]:
    """Why a run's settings differ from the published protocol's (evaluation/protocols.py, recorded as
    config["protocol"]; Grounding DINO's where a run has none: COCO one caption, LVIS chunks of 40)."""
    protocol = config.get("protocol") or {}
    parity_num_select = parity_num_select or protocol.get("num_select", 300)
    reasons = []
    if config.get("batch_size", 1) != 1 and not protocol.get("batch_invariant", False):
        reasons.append(f"batch size {config['batch_size']} (parity: 1; padding changes the features)")
    if config.get("dtype", "fp32") != "fp32":
        reasons.append(f"dtype {config['dtype']} (parity: fp32)")
    if config.get("num_select", parity_num_select) != parity_num_select:
        reasons.append(f"num_select {config['num_select']} (parity: {parity_num_select})")
    if protocol.get("chunks_prompts", True) and config.get("chunk_size") != parity_chunk_size:
        parity = "one caption" if parity_chunk_size is None else parity_chunk_size
        reasons.append(f"chunk size {config['chunk_size']} (parity: {parity})")
    return reasons
