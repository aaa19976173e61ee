"""The LVIS side of an evaluation run: phrases per category, the packed record per image, Fixed AP.

The run itself (sharding, durable partial results, resume, torchrun) is evaluation.runner.run.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.coco.dataset import CocoDataset
from evaluation.coco.run import check_mask_frame, check_masks, has_instance_masks
from evaluation.coco.scoring import non_parity_reasons
from evaluation.protocols import GROUNDING_DINO_PROTOCOL
from evaluation.published import comparison_lines, published_for
from evaluation.runner.summary import add_mask_columns, header_lines, non_parity_lines, record_parity

from . import fixed_ap
from .dataset import benchmark_of
from .scoring import FIXED_AP_TOPK, METRICS, LvisEvaluator
from .names import PHRASE_RULE, clean_name

PARITY_CHUNK_SIZE = GROUNDING_DINO_PROTOCOL.lvis_chunk_size  # mmdetection's chunked_size (40): the published figures'


class LvisScorer:
    """Fixed AP with APr/APc/APf on an LVIS-format dataset."""

    phrase_rule = PHRASE_RULE
    outputs = "detections.npz, metrics.json, per_class.csv"
    benchmark_kind = "lvis"

    def __init__(self, dataset: CocoDataset, model: str, topk: int = FIXED_AP_TOPK):
        self.dataset, self.model, self.topk = dataset, model, topk
        self.benchmark = benchmark_of(dataset.ann_path)
        self.iou_type = "bbox"

    def classes(self) -> list[tuple[str, ...]]:
        return [(clean_name(name),) for name in self.dataset.category_names]

    def has_masks(self) -> bool:
        return has_instance_masks(self.dataset)

    def use_masks(self) -> None:
        """Score masks too (LVIS's rules on mask IoU), box AP of the same detections beside it."""
        check_masks(self.dataset)
        self.iou_type = "segm"

    def encode(self, image_id: int, detections, masks=None) -> dict:
        if masks is not None:
            check_mask_frame(self.dataset, image_id, masks)
        return fixed_ap.encode(detections, masks)

    def finish(self, run_dir: Path, records, ids: list[int], config: dict) -> dict:
        position = {image_id: n for n, image_id in enumerate(ids)}
        category_ids = np.asarray(self.dataset.category_ids, dtype=np.int64)
        budget = fixed_ap.TopKPerCategory(self.topk)
        total = 0
        for image_id, payload in records:
            labels, scores, boxes = fixed_ap.decode(payload)
            budget.add(position[image_id], category_ids[labels], scores, np.full(len(scores), image_id),
                       fixed_ap.boxes_xywh(boxes), fixed_ap.decode_masks(payload))
            total += len(scores)
        dets = budget.result()
        _save_detections(run_dir / "detections.npz", dets)
        t0 = time.perf_counter()
        evaluator = LvisEvaluator(self.dataset.data, ids)
        metrics, ev = evaluator.evaluate(dets, max_dets_per_image=None)
        per_class = pd.DataFrame(evaluator.per_class(ev))
        if self.iou_type == "segm":
            metrics["segm"], segm_ev = evaluator.evaluate(dets, max_dets_per_image=None, iou_type="segm")
            add_mask_columns(per_class, pd.DataFrame(evaluator.per_class(segm_ev)))
        config["timings"]["scoring_s"] = round(time.perf_counter() - t0, 3)
        short = sorted(c for c, n in zip(*np.unique(dets.category_id, return_counts=True)) if n < self.topk)
        config.update({
            "benchmark": self.benchmark, "metric": f"Fixed AP (top {self.topk} per category, no per-image cap)",
            "fixed_ap_topk": self.topk, "detections_stored": total, "detections_scored": len(dets),
            "categories_below_topk": len(short) + len(set(self.dataset.category_ids) - set(dets.category_id.tolist())),
        })
        full = not config.get("limit")
        config["published"] = [p.as_dict() for p in published_for(self.model, self.benchmark)] if full else []
        protocol = config.get("protocol") or {}
        record_parity(config, non_parity_reasons(config, protocol.get("lvis_chunk_size", PARITY_CHUNK_SIZE),
                                                 protocol.get("lvis_num_select")))
        per_class.to_csv(run_dir / "per_class.csv", index=False)
        print(summary_text(metrics, config))
        return {**metrics, "config": config}


def _save_detections(path: Path, dets) -> None:
    """The scored detections (Fixed AP's per-category top-k) as arrays, written atomically."""
    tmp = path.with_name(path.name + ".tmp.npz")
    masks = {} if dets.segmentation is None else {"segmentation_json": np.array(json.dumps(list(dets.segmentation)))}
    np.savez_compressed(tmp, image_id=dets.image_id, category_id=dets.category_id, score=dets.score,
                        bbox_xywh=dets.bbox, **masks)
    os.replace(tmp, path)


def summary_text(metrics: dict, config: dict) -> str:
    pct = {k: 100 * v if v >= 0 else float("nan") for k, v in metrics.items() if k in METRICS}
    lines = header_lines(config, (f"num_select {config.get('num_select')} per chunk, {config.get('num_chunks')} prompt "
                                  f"chunks of {config.get('chunk_size')} categories; " if config.get("chunk_size") else
                                  f"num_select {config.get('num_select')} per image, one prompt per category; ")
                         + f"{config.get('metric')}")
    lines += non_parity_lines(config.get("non_parity") or [])
    lines.append("  ".join(f"{k} {pct[k]:.1f}" for k in ("AP", "AP50", "AP75", "APr", "APc", "APf")))
    lines.append("  ".join(f"{k} {pct[k]:.1f}" for k in ("APs", "APm", "APl", "AR")))
    if "segm" in metrics:
        segm = {k: 100 * v if v >= 0 else float("nan") for k, v in metrics["segm"].items() if k in METRICS}
        lines.append(f"masks ({config.get('masks') or config.get('sam_model')}): "
                     + "  ".join(f"mask {k} {segm[k]:.1f}" for k in ("AP", "AP50", "AP75", "APr", "APc", "APf")))
    lines += comparison_lines(pct["AP"], config.get("published") or [])
    return "\n".join(lines)
