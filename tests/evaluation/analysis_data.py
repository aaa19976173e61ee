"""Run directories and Label Studio exports with known answers, shared by the evaluation and notebook tests."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation import analysis as A

CATS = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]


def coco_gt(boxes, images=(1, 2), cats=CATS) -> dict:
    """boxes: (image_id, category_id, [x, y, w, h], iscrowd)."""
    anns = [{"id": i + 1, "image_id": im, "category_id": c, "bbox": list(map(float, b)),
             "area": float(b[2] * b[3]), "iscrowd": crowd} for i, (im, c, b, crowd) in enumerate(boxes)]
    return {"images": [{"id": i, "width": 200, "height": 200, "file_name": f"{i}.jpg"} for i in images],
            "categories": list(cats), "annotations": anns}


def write_run(run_dir: Path, gt: dict, dets: list[dict], **config) -> Path:
    """A run directory as `python -m evaluation.coco` writes it (metrics from pycocotools here)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    run_dir.mkdir(parents=True, exist_ok=True)
    ann = run_dir / "gt.json"
    ann.write_text(json.dumps(gt))
    (run_dir / "detections.json").write_text(json.dumps(dets))
    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO(str(ann))
        ev = COCOeval(g, g.loadRes(dets), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    metrics = dict(zip(A.METRICS, map(float, ev.stats)))
    metrics["config"] = {"ann": str(ann.resolve()), "images": "imgs", "dtype": "fp32", "batch_size": 1,
                         "model": "IDEA-Research/grounding-dino-tiny", **config}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    pd.DataFrame([{"category_id": c["id"], "name": c["name"], "AP": 0, "AP50": 0, "AP75": 0, "num_gt": 0}
                  for c in gt["categories"]]).to_csv(run_dir / "per_class.csv", index=False)
    return run_dir


def det(image_id, category_id, box, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": list(map(float, box)), "score": score}


# The hand-built case. cat: GT a, b on image 1 and c on image 2; dog: GT d and a crowd region on image 1.
HAND_GT = coco_gt([
    (1, 1, [0, 0, 10, 10], 0), (1, 1, [20, 0, 10, 10], 0), (2, 1, [0, 0, 20, 20], 0),
    (1, 2, [0, 50, 10, 10], 0), (1, 2, [50, 50, 40, 40], 1),
])
HAND_DETS = [
    det(1, 2, [0, 50, 10, 21], 0.95),   # dog, IoU 100/210 < .5 with d -> FP
    det(1, 1, [0, 0, 10, 10], 0.90),    # cat = a -> TP
    det(1, 1, [1, 0, 10, 10], 0.80),    # duplicate of a, a already taken -> FP
    det(1, 2, [55, 55, 10, 10], 0.70),  # inside the crowd region -> ignored
    det(1, 1, [20, 0, 10, 10], 0.60),   # cat = b -> TP
    det(1, 2, [0, 50, 10, 20], 0.50),   # dog, IoU exactly 0.5 with d -> TP
    det(1, 1, [100, 100, 10, 10], 0.30),  # nothing there -> FP
    det(2, 2, [0, 0, 20, 20], 0.20),    # dog where only a cat is -> FP
]
# by hand: kept (non-ignored) detections in score order: FP .95, TP .9, FP .8, TP .6, TP .5, FP .3, FP .2
# num GT = 4 (crowd excluded)
HAND_EXPECTED = {  # threshold: (tp, fp, precision, recall, f1)
    0.96: (0, 0, np.nan, 0.0, 0.0),
    0.90: (1, 1, 1 / 2, 1 / 4, 2 * (1 / 2) * (1 / 4) / (1 / 2 + 1 / 4)),
    0.60: (2, 2, 2 / 4, 2 / 4, 0.5),
    0.50: (3, 2, 3 / 5, 3 / 4, 2 * 0.6 * 0.75 / 1.35),
    0.31: (3, 2, 3 / 5, 3 / 4, 2 * 0.6 * 0.75 / 1.35),
    0.30: (3, 3, 3 / 6, 3 / 4, 2 * 0.5 * 0.75 / 1.25),
    0.00: (3, 4, 3 / 7, 3 / 4, 2 * (3 / 7) * 0.75 / (3 / 7 + 0.75)),
}


def _region(rid, label, x, y, w, h, score=None):
    r = {"id": rid, "type": "rectanglelabels", "from_name": "label", "to_name": "image",
         "original_width": 640, "original_height": 480,
         "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]}}
    return r if score is None else {**r, "score": score}


def labelstudio_export(path: Path) -> Path:
    """Three tasks whose annotators kept, moved, relabelled and deleted pre-labels and added boxes."""
    def task(tid, preds, finals):
        return {"id": tid, "data": {"image": f"/data/upload/1/{tid}.jpg"},
                "predictions": [{"id": 100 + tid, "model_version": "grounding-dino-tiny", "score": 0.5,
                                 "result": preds}],
                "annotations": [{"id": 200 + tid, "parent_prediction": 100 + tid, "result": finals,
                                 "was_cancelled": False, "updated_at": "2026-11-24T10:00:00Z"}]}
    tasks = [
        task(1, [_region("r1", "Car", 10, 10, 20, 20, 0.9), _region("r2", "Car", 50, 50, 10, 10, 0.5),
                 _region("r3", "Person", 60, 10, 10, 30, 0.7)],
             [_region("r1", "Car", 10, 10, 20, 20), _region("r3", "Person", 61, 10, 10, 30),  # kept, moved
              _region("a1", "Person", 5, 60, 10, 20)]),                                       # added
        task(2, [_region("r4", "Person", 20, 20, 15, 30, 0.8), _region("r5", "Car", 70, 70, 10, 10, 0.35)],
             [_region("r4", "Car", 20, 20, 15, 30), _region("r5", "Car", 70, 70, 10, 10)]),  # relabelled, kept
        task(3, [_region("r6", "Car", 30, 30, 20, 20, 0.6)], [_region("a2", "Car", 0, 0, 10, 10)]),  # deleted, added
    ]
    path.write_text(json.dumps(tasks))
    return path


def labelstudio_run(tmp_path: Path) -> Path:
    import subprocess
    import sys

    out = tmp_path / "ls-run"
    proc = subprocess.run([sys.executable, "-m", "evaluation.labelstudio",
                           str(labelstudio_export(tmp_path / "export.json")), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out


def _square_rle(x0, y0, x1, y1, size=(200, 200)) -> dict:
    from evaluation.masks import masks_to_coco_rle

    mask = np.zeros((size[1], size[0]), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return masks_to_coco_rle(mask[None])[0]


def _l_shape_rle() -> dict:
    """An L (400 pixels) whose bounding box is x 10..30, y 10..40 (600 pixels)."""
    from evaluation.masks import masks_to_coco_rle

    mask = np.zeros((200, 200), dtype=bool)
    mask[10:20, 10:30] = True
    mask[20:40, 10:20] = True
    return masks_to_coco_rle(mask[None])[0]


# A mask run with a known answer: the cat's detection has the L's exact box (box IoU 1) but a full
# rectangle as mask (mask IoU 400/600 = 2/3, a match at IoU .50-.65 only: mask AP .4); the dog is exact.
# Box AP 1.0, mask AP (0.4 + 1) / 2 = 0.7.
MASK_GT = {
    "images": [{"id": 1, "width": 200, "height": 200, "file_name": "1.jpg"}],
    "categories": list(CATS),
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10.0, 10.0, 20.0, 30.0], "area": 400.0, "iscrowd": 0,
         "segmentation": _l_shape_rle()},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [100.0, 100.0, 20.0, 20.0], "area": 400.0, "iscrowd": 0,
         "segmentation": _square_rle(100, 100, 120, 120)},
    ],
}
MASK_DETS = [
    {**det(1, 1, [10, 10, 20, 30], 0.9), "segmentation": _square_rle(10, 10, 30, 40)},
    {**det(1, 2, [100, 100, 20, 20], 0.8), "segmentation": _square_rle(100, 100, 120, 120)},
]


def write_mask_run(run_dir: Path, **config) -> Path:
    """A run directory as `python -m evaluation.coco --iou-type segm` writes it (box and mask metrics from
    pycocotools here)."""
    from evaluation.coco.scoring import coco_gt as gt_object, score

    write_run(run_dir, MASK_GT, [{k: v for k, v in d.items() if k != "segmentation"} for d in MASK_DETS],
              iou_type="segm", sam_model="tiny-sam", **config)
    (run_dir / "detections.json").write_text(json.dumps(MASK_DETS))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["segm"], _, _ = score(gt_object(json.loads(json.dumps(MASK_GT))), MASK_DETS, [1], "segm")
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir
