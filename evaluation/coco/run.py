"""The COCO side of an evaluation run: phrases per category, the stored record per image, the scoring.

The run itself (sharding, durable partial results, resume, torchrun) is evaluation.runner.run.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from backend.detection.boxes import xyxy_to_xywh
from backend.detection.phrases import class_phrases
from evaluation.runner.store import atomic_write

from .dataset import CocoDataset

# A custom dataset's `TrafficLight` is prompted "traffic light", as the backend prompts a Label Studio
# label (COCO's own names are already words: unchanged).
PHRASE_RULE = "backend.detection.phrases.class_phrases (the backend's label -> phrase rule)"


def to_coco(image_id: int, dets, category_ids: list[int]) -> list[dict]:
    """Ranked detections of one image -> COCO results ([x, y, w, h] in original pixels)."""
    xywh = xyxy_to_xywh(dets.boxes.float())
    return [
        {"image_id": image_id, "category_id": category_ids[label], "bbox": box, "score": score}
        for label, box, score in zip(dets.labels.tolist(), xywh.tolist(), dets.scores.float().tolist())
    ]


class CocoScorer:
    """pycocotools COCOeval (bbox, default parameters) on a COCO-format dataset."""

    phrase_rule = PHRASE_RULE
    outputs = "detections.json, metrics.json, per_class.csv"

    def __init__(self, dataset: CocoDataset, model: str):
        self.dataset = dataset
        self.model = model

    def classes(self) -> list[tuple[str, ...]]:
        return [class_phrases(name) for name in self.dataset.category_names]

    def encode(self, image_id: int, detections) -> list[dict]:
        return to_coco(image_id, detections, self.dataset.category_ids)

    def finish(self, run_dir: Path, records, ids: list[int], config: dict) -> dict:
        from .scoring import coco_gt, non_parity_reasons, per_class_table, published_rows, score, summary_text

        merged = dict(records)
        detections = [d for i in ids for d in merged[i]]  # in image-id order, whatever the ranks' order
        atomic_write(run_dir / "detections.json", json.dumps(detections, separators=(",", ":")))
        t0 = time.perf_counter()
        metrics, ev, text = score(coco_gt(self.dataset.data), detections, ids)
        config["timings"]["scoring_s"] = round(time.perf_counter() - t0, 3)
        config["published"] = published_rows(self.model, len(ids), self.dataset.ann_path.name)
        config["non_parity"] = non_parity_reasons(config)
        config["parity"] = not config["non_parity"]
        per_class_table(ev, self.dataset.categories).to_csv(run_dir / "per_class.csv", index=False)
        metrics = {**metrics, "config": config}
        print(summary_text(metrics, config, text))
        return metrics
