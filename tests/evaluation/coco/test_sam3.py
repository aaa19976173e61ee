"""`python -m evaluation.coco` / `evaluation.lvis` with a SAM 3 checkpoint: box and mask AP from SAM 3's own
masks (no --sam-model), by SAM 3's protocol (one prompt per category, top 100 per image); resume and the
report as for Grounding DINO.

The ground truth is made from the tiny model's own detections (a few per image, their boxes and masks),
so box and mask AP are neither 0 nor 1 and the stored numbers can be checked against pycocotools
computed here, on the detections the run wrote, and those detections against `Sam3Detector.rank` called
directly.
"""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from evaluation.coco.scoring import METRICS
from evaluation.masks import masks_to_coco_rle
from tests.evaluation.coco.command_line import cli_args, load_json, run_cli
from tests.evaluation.coco.drawn_dataset import CATEGORIES, make_dataset

pytestmark = pytest.mark.slow
NUM_IMAGES = 3
GT_PER_IMAGE = 3


@pytest.fixture(scope="module")
def sam3_dir():
    from tests.sam3_factory import tiny_sam3_dir

    return tiny_sam3_dir()


@pytest.fixture(scope="module")
def direct(sam3_dir):
    """Sam3Detector.rank as SAM 3's protocol runs it: one phrase per category, top 100, masks."""
    from detection.phrases import class_phrases
    from detection.sam3 import Sam3Detector, Sam3DetectorConfig

    detector = Sam3Detector.load(Sam3DetectorConfig(model=str(sam3_dir), device="cpu"))
    return detector, [class_phrases(c["name"]) for c in CATEGORIES]


@pytest.fixture(scope="module")
def sam3_dataset(tmp_path_factory, direct):
    """Images of make_dataset; as ground truth the top GT_PER_IMAGE detections of the tiny model per image
    (box and RLE mask), under other categories for one of them so that some detections are wrong."""
    from detection import open_image

    detector, classes = direct
    root = tmp_path_factory.mktemp("sam3-data")
    ann, images_dir = make_dataset(root, num_images=NUM_IMAGES, masks=True)
    data = json.loads(ann.read_text())
    annotations = []
    for n, img in enumerate(data["images"]):
        (dets,) = detector.rank([open_image(images_dir / img["file_name"])], classes, top_k=100, masks=True)
        for k in range(GT_PER_IMAGE):
            (rle,) = masks_to_coco_rle(dets.masks[k : k + 1])
            x0, y0, x1, y1 = dets.boxes[k].tolist()
            label = int(dets.labels[k]) if k else (int(dets.labels[k]) + 1) % len(CATEGORIES)
            annotations.append({"id": len(annotations) + 1, "image_id": img["id"],
                                "category_id": CATEGORIES[label]["id"], "bbox": [x0, y0, x1 - x0, y1 - y0],
                                "area": float(dets.masks[k].sum()), "iscrowd": 0, "segmentation": rle})
    data["annotations"] = annotations
    ann.write_text(json.dumps(data))
    return ann, images_dir


def cocoeval_stats(ann, detections, ids, iou_type):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    other = "bbox" if iou_type == "segm" else "segmentation"
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
        ev = COCOeval(gt, gt.loadRes([{k: v for k, v in d.items() if k != other} for d in detections]), iou_type)
        ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats.tolist()


def run_sam3(module, args):
    return run_cli(args, module=module)


def test_box_and_mask_ap_of_sam3_equal_pycocotools_on_its_own_detections(sam3_dataset, sam3_dir, direct, tmp_path):
    from pycocotools import mask as mask_utils

    from detection import open_image

    ann, images = sam3_dataset
    out = tmp_path / "run"
    args = cli_args(ann, images, sam3_dir, out)
    done = run_sam3("evaluation.coco", args)
    assert done.returncode == 0, done.stderr
    assert "masks: the detector's own (SAM 3)" in done.stdout and "one prompt per category" in done.stdout
    assert "NON-PARITY" not in done.stdout
    metrics = load_json(out / "metrics.json")
    config = metrics["config"]
    assert config["iou_type"] == "segm" and config["family"] == "sam3" and config["num_select"] == 100
    assert config["protocol"]["num_select"] == 100 and "sam_model" not in config and config["non_parity"] == []
    detections = load_json(out / "detections.json")
    ids = config["image_ids"]

    # The stored numbers are pycocotools' on the stored detections, box and mask, computed here.
    box, segm = cocoeval_stats(ann, detections, ids, "bbox"), cocoeval_stats(ann, detections, ids, "segm")
    assert [metrics[m] for m in METRICS] == pytest.approx(box, abs=1e-12)
    assert [metrics["segm"][m] for m in METRICS] == pytest.approx(segm, abs=1e-12)
    assert 0 < metrics["AP"] < 1 and 0 < metrics["segm"]["AP"] < 1

    # The stored detections are SAM 3's own: rank's top 100 per image with its masks, category ids mapped.
    detector, classes = direct
    data = load_json(ann)
    by_image = {}
    for d in detections:
        by_image.setdefault(d["image_id"], []).append(d)
    for img in data["images"]:
        (dets,) = detector.rank([open_image(images / img["file_name"])], classes, top_k=100, masks=True)
        stored = by_image[img["id"]]
        assert len(stored) == len(dets) == 4 * 20  # every query of the 4 prompts (tiny model: 20 < 100 / 4)
        assert [d["category_id"] for d in stored] == [CATEGORIES[i]["id"] for i in dets.labels.tolist()]
        assert [d["score"] for d in stored] == pytest.approx(dets.scores.tolist(), abs=1e-7)
        xyxy = np.array([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in stored)])
        assert xyxy == pytest.approx(dets.boxes.numpy(), abs=1e-3)
        decoded = np.stack([mask_utils.decode({"size": d["segmentation"]["size"],
                                               "counts": d["segmentation"]["counts"].encode()}) for d in stored])
        assert np.array_equal(decoded.astype(bool), dets.masks.numpy())

    # Resume: the same command finds every image done and writes the same detections.
    again = run_sam3("evaluation.coco", args)
    assert again.returncode == 0 and f"resuming: {NUM_IMAGES} of {NUM_IMAGES}" in again.stderr
    assert load_json(out / "detections.json") == detections

    # The report of the run: the summary holds both box and mask AP.
    from evaluation import report

    with contextlib.redirect_stdout(io.StringIO()):
        assert report.main([str(out), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert (tmp_path / "report" / "per_class_ap.png").is_file()
    assert f"{100 * metrics['AP']:.1f}" in md


def test_sam3_refuses_a_sam_model_and_a_chunk_size(sam3_dataset, sam3_dir, tmp_path):
    ann, images = sam3_dataset
    done = run_sam3("evaluation.coco", cli_args(ann, images, sam3_dir, tmp_path / "a", "--iou-type", "segm",
                                                "--sam-model", "facebook/sam-vit-base"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: --sam-model: {sam3_dir} is a SAM 3 checkpoint, which makes its own masks (no SAM stage): "
        "drop --sam-model")
    done = run_sam3("evaluation.coco", cli_args(ann, images, sam3_dir, tmp_path / "b", "--chunk-size", "2"))
    assert done.returncode == 2 and "prompts each category on its own: drop --chunk-size" in done.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_sam3_box_only_dataset_scores_boxes_and_other_settings_are_flagged(sam3_dir, tmp_path):
    ann, images = make_dataset(tmp_path / "data", num_images=2)  # no instance masks: box AP only
    out = tmp_path / "run"
    done = run_sam3("evaluation.coco", cli_args(ann, images, sam3_dir, out, "--num-select", "7", "--batch-size", "2"))
    assert done.returncode == 0, done.stderr
    config = load_json(out / "metrics.json")["config"]
    assert config["iou_type"] == "bbox" and "segm" not in load_json(out / "metrics.json")
    # SAM 3 resizes every image to one square: the batch size is not a parity setting; num_select is.
    assert config["non_parity"] == ["num_select 7 (parity: 100)"]
    assert len(load_json(out / "detections.json")) == 2 * 7


def lvis_from_coco(ann, images, root):
    """The SAM 3 dataset in LVIS's format: images under val2017/ named by coco_url, a frequency per category,
    every category absent from an image listed as negative there (then LVIS's rules equal COCOeval's)."""
    data = json.loads(ann.read_text())
    (root / "val2017").mkdir(parents=True)
    present = {}
    for a in data["annotations"]:
        present.setdefault(a["image_id"], set()).add(a["category_id"])
    for img in data["images"]:
        (root / "val2017" / img["file_name"]).write_bytes((images / img["file_name"]).read_bytes())
        img["coco_url"] = f"http://images.cocodataset.org/val2017/{img.pop('file_name')}"
        img["neg_category_ids"] = [c["id"] for c in data["categories"] if c["id"] not in present.get(img["id"], ())]
        img["not_exhaustive_category_ids"] = []
    for c, frequency in zip(data["categories"], "rcff"):
        c["frequency"] = frequency
    out = root / "lvis_sam3.json"
    out.write_text(json.dumps(data))
    return out


def test_lvis_with_sam3_box_and_mask_fixed_ap_equal_cocoeval(sam3_dataset, sam3_dir, tmp_path):
    ann = lvis_from_coco(*sam3_dataset, tmp_path / "lvis")
    out = tmp_path / "run"
    done = run_sam3("evaluation.lvis", ["--ann", str(ann), "--images", str(tmp_path / "lvis"), "--model",
                                        str(sam3_dir), "--out", str(out), "--device", "cpu"])
    assert done.returncode == 0, done.stderr
    assert "num_select 300 per image, one prompt per category" in done.stdout
    assert "masks (the detector's own (SAM 3)): mask AP" in done.stdout
    metrics = load_json(out / "metrics.json")
    config = metrics["config"]
    assert config["num_select"] == 300 and config["chunk_size"] is None and config["non_parity"] == []
    assert config["iou_type"] == "segm"
    # the tiny model has 20 queries per prompt: 4 categories give 80 candidates per image, all under 300
    assert config["detections_stored"] == NUM_IMAGES * 4 * 20
    # Every absent category is a negative and nothing is capped: LVIS's rules are COCOeval's, box and mask.
    stored = np.load(out / "detections.npz")
    rles = json.loads(str(stored["segmentation_json"]))
    detections = [{"image_id": int(i), "category_id": int(c), "score": float(s), "bbox": [float(v) for v in b],
                   "segmentation": r}
                  for i, c, s, b, r in zip(stored["image_id"], stored["category_id"], stored["score"],
                                           stored["bbox_xywh"], rles)]
    ids = config["image_ids"]
    box, segm = cocoeval_stats(ann, detections, ids, "bbox"), cocoeval_stats(ann, detections, ids, "segm")
    assert [metrics[k] for k in ("AP", "AP50", "AP75")] == pytest.approx(box[:3], abs=1e-12)
    assert [metrics["segm"][k] for k in ("AP", "AP50", "AP75")] == pytest.approx(segm[:3], abs=1e-12)
    assert 0 < metrics["segm"]["AP"] < 1


def test_torchrun_two_processes_equal_one_with_masks(sam3_dataset, sam3_dir, tmp_path):
    from tests.evaluation.coco.command_line import env
    from tests.torchrun import run_torchrun

    ann, images = sam3_dataset
    single = tmp_path / "single"
    assert run_sam3("evaluation.coco", cli_args(ann, images, sam3_dir, single)).returncode == 0
    out = tmp_path / "dist"
    two = run_torchrun("evaluation.coco", cli_args(ann, images, sam3_dir, out), env(), timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert (out / "detections.json").read_bytes() == (single / "detections.json").read_bytes()
    assert sorted(p.name for p in (out / "partial").glob("*.jsonl")) == ["rank000-of-002.jsonl", "rank001-of-002.jsonl"]
    m1, m2 = load_json(single / "metrics.json"), load_json(out / "metrics.json")
    assert m2["config"]["world_size"] == 2 and (m1["AP"], m1["segm"]) == (m2["AP"], m2["segm"])
    assert two.stdout.count("(masks)") == 1  # scored once
