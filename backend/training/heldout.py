"""AP on the held-out images, by the evaluation module: the detector's ranking mode (the official
zero-shot protocol) turned into COCO results by ``evaluation.coco.run.to_coco`` and scored once by
``evaluation.coco.scoring`` (pycocotools COCOeval). No second scorer here.

Under torchrun each rank ranks its share of the images (r, r + N, ...); rank 0 gathers and scores.
The result is also written as an evaluation run directory (``detections.json``, ``metrics.json``,
``per_class.csv``), so ``python -m evaluation.report OUT/heldout/after --compare OUT/heldout/before``
shows where the fine-tuned model gained or lost.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from runtime.distributed import Dist
from evaluation.coco.run import to_coco
from evaluation.coco.scoring import coco_gt, per_class_table, score
from runtime.files import atomic_write

from .data import TrainingData
from .errors import TrainingCancelled


@dataclass(frozen=True)
class HeldoutScore:
    model: str
    metrics: dict  # AP, AP50, ... as fractions (pycocotools stats; -1 = no ground truth in that range)
    per_class: list[dict]  # category_id, name, AP, AP50, AP75, num_gt (None where there is no ground truth)
    num_images: int

    @property
    def ap(self) -> float:
        return self.metrics["AP"]

    @property
    def ap50(self) -> float:
        return self.metrics["AP50"]

    def as_dict(self) -> dict:
        return {"model": self.model, "num_images": self.num_images, "metrics": self.metrics,
                "per_class": self.per_class}


def score_heldout(detector, model_name: str, data: TrainingData, image_ids, dist: Dist = Dist(),
                  run_dir: Path | None = None, num_select: int = 300) -> HeldoutScore | None:
    """Rank the held-out images with ``detector`` and score them; the score on rank 0, None elsewhere."""
    ids = sorted(int(i) for i in image_ids)
    prompt = detector.prompt(data.class_phrases)
    mine = []
    for image_id in ids[dist.rank :: dist.world_size]:
        ranked = detector.rank([data.load_image(image_id)], prompt, num_select)[0]
        mine.extend(to_coco(image_id, ranked, data.dataset.category_ids))
    everyone = dist.gather(mine)
    if not dist.is_main:
        return None
    detections = sorted((d for part in everyone for d in part), key=lambda d: d["image_id"])
    metrics, ev, _ = score(coco_gt(data.dataset.data), detections, ids)
    per_class = per_class_table(ev, data.dataset.categories)
    rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in per_class.to_dict("records")]
    result = HeldoutScore(model_name, metrics, rows, len(ids))
    if run_dir is not None:
        write_run_dir(run_dir, result, detections, per_class, data, ids)
    return result


def write_run_dir(run_dir: Path, result: HeldoutScore, detections, per_class, data: TrainingData, ids) -> None:
    """The files ``python -m evaluation.report`` reads (config.ann + image_ids select the held-out images)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / "detections.json", json.dumps(detections, separators=(",", ":")))
    per_class.to_csv(run_dir / "per_class.csv", index=False)
    config = {"ann": str(data.dataset.ann_path), "images": str(data.dataset.images_dir), "model": result.model,
              "num_images": len(ids), "image_ids": list(ids), "batch_size": 1, "dtype": "fp32", "num_select": 300,
              "heldout": True}
    atomic_write(run_dir / "metrics.json", json.dumps({**result.metrics, "config": config}, indent=2))


def load_score(run_dir: Path) -> HeldoutScore | None:
    """A held-out score written earlier by ``write_run_dir`` (a resumed run does not score twice)."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    config = metrics.pop("config", {})
    per_class = pd.read_csv(run_dir / "per_class.csv").astype(object)
    rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in per_class.to_dict("records")]
    return HeldoutScore(config.get("model", "?"), metrics, rows, int(config.get("num_images", 0)))


def labelled_detections(detector, data: TrainingData, image_ids, threshold: float, nms_iou: float | None,
                        cancel=None) -> list[dict]:
    """The boxes the backend would show on the held-out images (labelling mode: each query's best class,
    at ``threshold``, with the server's NMS) as COCO results: what a model's own thresholds are learned on.
    Thresholding these at t keeps exactly what detecting at t keeps (suppression runs highest score first)."""
    prompt = detector.prompt(data.class_phrases)
    out: list[dict] = []
    for image_id in sorted(int(i) for i in image_ids):
        if cancel is not None and cancel.is_set():
            raise TrainingCancelled("cancelled while scoring the fine-tuned model")
        (dets,) = detector.detect([data.load_image(image_id)], prompt, threshold, nms_iou=nms_iou)
        out.extend(to_coco(image_id, dets, data.dataset.category_ids))
    return out


def heldout_ground_truth(data: TrainingData, image_ids) -> dict:
    """The COCO dataset restricted to the held-out images (category names are the labels)."""
    ids = {int(i) for i in image_ids}
    coco = data.dataset.data
    return {"images": [im for im in coco["images"] if im["id"] in ids],
            "annotations": [a for a in coco["annotations"] if a["image_id"] in ids],
            "categories": list(coco["categories"])}
