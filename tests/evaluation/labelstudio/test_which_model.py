"""`python -m evaluation.labelstudio EXPORT.json --model A --model B`: each model over the export's images,
AP per label and the work-saved recommendation, on a tiny Grounding DINO and a tiny SAM 3.

The team's final regions are made from the models' own detections ("cat" from Grounding DINO's top boxes,
"dog" from SAM 3's), so the two models differ per label; AP per label is checked against pycocotools run
here per category, and the recommendation against the work-saved rule applied by hand to the detections
the run wrote.
"""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from evaluation.labelstudio.cli import main
from tests.evaluation.coco.command_line import load_json

pytestmark = pytest.mark.slow
LABELS = ["cat", "dog"]
SIZES = [(160, 120), (200, 150), (180, 180)]
PER_LABEL = 2  # final regions per label and image


@pytest.fixture(scope="module")
def sam3_dir():
    from tests.sam3_factory import tiny_sam3_dir

    return tiny_sam3_dir()


def draw(path, size, n):
    image = Image.new("RGB", size, (30 * n, 120, 200))
    d = ImageDraw.Draw(image)
    d.rectangle([10, 10, 60 + 10 * n, 70], fill=(250, 220, 30))
    d.ellipse([80, 30, 150, 100], fill=(20, 20, 20))
    image.save(path)
    return image


def top_inside(dets, label, size, count):
    """The `count` best detections of class `label` whose boxes lie inside the image (a drawn region does)."""
    w, h = size
    rows = [(s, b) for s, l, b in zip(dets.scores.tolist(), dets.labels.tolist(), dets.boxes.tolist())
            if l == label and b[0] >= 0 and b[1] >= 0 and b[2] <= w and b[3] <= h and b[2] - b[0] > 2 and b[3] - b[1] > 2]
    return [b for _, b in rows[:count]]


def rectangle(rid, label, box, size):
    w, h = size
    x0, y0, x1, y1 = box
    return {"id": rid, "type": "rectanglelabels", "from_name": "label", "to_name": "image", "original_width": w,
            "original_height": h, "image_rotation": 0,
            "value": {"x": 100 * x0 / w, "y": 100 * y0 / h, "width": 100 * (x1 - x0) / w, "height": 100 * (y1 - y0) / h,
                      "rotation": 0, "rectanglelabels": [label]}}


@pytest.fixture(scope="module")
def project(tmp_path_factory, fast_model_dir, sam3_dir):
    from detection import DetectorConfig, load_detector
    from detection.phrases import class_phrases

    root = tmp_path_factory.mktemp("which-model")
    images_dir = root / "images"
    images_dir.mkdir()
    classes = [class_phrases(label) for label in LABELS]
    gdino = load_detector(DetectorConfig(model=str(fast_model_dir), device="cpu"))
    sam3 = load_detector(DetectorConfig(model=str(sam3_dir), device="cpu"))
    tasks = []
    for n, size in enumerate(SIZES):
        name = f"shot-{n}.png"
        image = draw(images_dir / name, size, n)
        (g,) = gdino.rank([image], gdino.prompt(classes), 300)
        (s,) = sam3.rank([image], sam3.prompt(classes), 100)
        boxes = [("cat", b) for b in top_inside(g, 0, size, PER_LABEL)] + [("dog", b) for b in top_inside(s, 1, size, PER_LABEL)]
        result = [rectangle(f"r{n}-{k}", label, box, size) for k, (label, box) in enumerate(boxes)]
        tasks.append({"id": 100 + n, "data": {"image": f"/data/upload/3/{name}"},
                      "annotations": [{"id": 200 + n, "result": result}], "predictions": []})
    tasks.append({"id": 999, "data": {"image": "/data/upload/3/none.png"}, "annotations": [], "predictions": []})
    export = root / "export.json"
    export.write_text(json.dumps(tasks))
    return export, images_dir


def cocoeval_ap_per_category(gt_path, detections):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out = {}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        dt = gt.loadRes(detections)
        for cat in gt.getCatIds():
            ev = COCOeval(gt, dt, "bbox")
            ev.params.catIds = [cat]
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            out[cat] = ev.stats[0]
    return out


def iou(a, b):
    ax0, ay0, aw, ah = a
    bx0, by0, bw, bh = b
    iw = max(0.0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    ih = max(0.0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter)


def best_by_hand(gt, detections, category_id, iou_threshold=0.5):
    """The work-saved rule by hand: for t = 0.00 .. 1.00 the detections scoring >= t, each matched in score
    order to the unmatched final region of its label and image with the highest IoU >= 0.5; saved = matched -
    unmatched; the best t (the highest on ties)."""
    truths = [a for a in gt["annotations"] if a["category_id"] == category_id]
    dets = sorted((d for d in detections if d["category_id"] == category_id), key=lambda d: -d["score"])
    best = None
    for t in np.round(np.arange(0.0, 1.0 + 1e-9, 0.01), 2):
        used, tp, fp = set(), 0, 0
        for d in (d for d in dets if d["score"] >= t):
            cands = [(iou(d["bbox"], g["bbox"]), k) for k, g in enumerate(truths)
                     if g["image_id"] == d["image_id"] and k not in used]
            top = max(cands, default=(0.0, None))
            if top[1] is not None and top[0] >= iou_threshold:
                used.add(top[1])
                tp += 1
            else:
                fp += 1
        if best is None or tp - fp >= best[1]:
            best = (float(t), tp - fp)
    return best


def test_each_model_scored_per_label_and_recommended_by_the_work_saved_rule(project, fast_model_dir, sam3_dir,
                                                                             tmp_path, capsys):
    export, images = project
    out = tmp_path / "run"
    models = [str(fast_model_dir), str(sam3_dir)]
    assert main([str(export), "--model", models[0], "--model", models[1], "--images", str(images), "--device", "cpu",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    metrics = load_json(out / "metrics.json")
    gt = load_json(out / "ground_truth.json")
    assert [c["name"] for c in gt["categories"]] == LABELS and len(gt["images"]) == len(SIZES)
    assert metrics["config"]["num_select"] == {models[0]: 300, models[1]: 100}
    rows = {(r["model"], r["label"]): r for r in metrics["comparison"]}
    by_hand = {}
    for model, name in zip(models, ("tiny-grounding-dino-160", "sam3-0")):
        detections = load_json(out / "models" / name / "detections.json")
        assert {d["image_id"] for d in detections} == {100, 101, 102}
        ap = cocoeval_ap_per_category(out / "ground_truth.json", detections)
        for cat in gt["categories"]:
            row = rows[(model, cat["name"])]
            assert row["AP"] == pytest.approx(ap[cat["id"]], abs=1e-12)
            threshold, saved = best_by_hand(gt, detections, cat["id"])
            assert (row["threshold"], row["saved"]) == (pytest.approx(threshold), saved)
            by_hand[(model, cat["name"])] = (saved, ap[cat["id"]])
    for label in LABELS:  # the most work saved; ties: the higher AP, then the first model given
        expected = max(models, key=lambda m: (by_hand[(m, label)][0], by_hand[(m, label)][1], -models.index(m)))
        (chosen,) = [r for r in metrics["recommendation"] if r["label"] == label]
        assert chosen["model"] == expected and f"{label}: {expected} at threshold {chosen['threshold']:.2f}" in printed
    # The final regions came from each model's own best boxes: Grounding DINO wins "cat", SAM 3 "dog".
    assert [r["model"] for r in metrics["recommendation"]] == models
    md = (out / "comparison.md").read_text()
    assert "| cat | " + models[0] in md and "| dog | " + models[1] in md and "](comparison.png)" in md
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"comparison.csv", "recommendation.csv"} <= {p.name for p in out.iterdir()}


def test_missing_image_and_images_without_model_are_one_line_errors(project, fast_model_dir, tmp_path, capsys):
    export, images = project
    assert main([str(export), "--images", str(images)]) == 2
    assert "--images is used only with --model" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(export), "--model", str(fast_model_dir), "--images", str(empty), "--device", "cpu",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: task 100: its image '/data/upload/3/shot-0.png' is not in --images {empty} "
                   "(looked for shot-0.png)")


def polygon(rid, label, box, size):
    """The rectangle `box` as a polygon region (percent points): a mask project."""
    w, h = size
    x0, y0, x1, y1 = box
    points = [[100 * x / w, 100 * y / h] for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
    return {"id": rid, "type": "polygonlabels", "from_name": "poly", "to_name": "image", "original_width": w,
            "original_height": h, "image_rotation": 0, "value": {"points": points, "polygonlabels": [label]}}


def test_a_mask_project_scores_own_masks_by_mask_iou_and_box_only_models_by_box(project, fast_model_dir, sam3_dir,
                                                                                tmp_path, capsys):
    export, images = project
    tasks = json.loads(export.read_text())
    for task in tasks:
        for ann in task["annotations"]:
            for r in ann["result"]:
                v, size = r["value"], (r["original_width"], r["original_height"])
                box = [v["x"] * size[0] / 100, v["y"] * size[1] / 100, (v["x"] + v["width"]) * size[0] / 100,
                       (v["y"] + v["height"]) * size[1] / 100]
                r.update(polygon(r["id"], v["rectanglelabels"][0], box, size))
    masked = tmp_path / "masks.json"
    masked.write_text(json.dumps(tasks))
    out = tmp_path / "run"
    models = [str(fast_model_dir), str(sam3_dir)]
    assert main([str(masked), "--model", models[0], "--model", models[1], "--images", str(images), "--device", "cpu",
                 "--out", str(out)]) == 0
    metrics = load_json(out / "metrics.json")
    assert metrics["config"]["iou_type"] == "segm"
    rows = {(r["model"], r["label"]): r for r in metrics["comparison"]}
    # Grounding DINO makes no masks: its rows are matched by box and have no mask AP; SAM 3's by its masks.
    assert {rows[(models[0], label)]["matched_by"] for label in LABELS} == {"box"}
    assert all(rows[(models[0], label)]["mask_AP"] != rows[(models[0], label)]["mask_AP"] for label in LABELS)  # NaN
    assert {rows[(models[1], label)]["matched_by"] for label in LABELS} == {"mask"}
    sam3_dets = load_json(out / "models" / "sam3-0" / "detections.json")
    assert all("segmentation" in d for d in sam3_dets)
    gt = load_json(out / "ground_truth.json")
    assert all("segmentation" in a for a in gt["annotations"])  # the polygons, rasterised
    for cat in gt["categories"]:  # mask AP per label = pycocotools segm on the same detections
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(out / "ground_truth.json"))
            ev = COCOeval(coco, coco.loadRes([{k: v for k, v in d.items() if k != "bbox"} for d in sam3_dets]), "segm")
            ev.params.catIds = [cat["id"]]
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        assert rows[(models[1], cat["name"])]["mask_AP"] == pytest.approx(ev.stats[0], abs=1e-12)
