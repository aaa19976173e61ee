"""--iou-type segm: masks from a SAM-family model scored by COCOeval segm, box AP of the same detections
beside it; in process on known answers, and through the command line on a tiny detector + tiny SAM."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
import pytest
import torch

from detection import Detections
from detection.masks import BOX_MARGIN
from evaluation.coco.dataset import load_dataset
from evaluation.coco.run import CocoScorer
from evaluation.coco.scoring import METRICS, coco_gt
from runtime.errors import InputError
from tests.evaluation.coco.command_line import cli_args, load_json, run_cli
from tests.evaluation.coco.drawn_dataset import make_dataset


@pytest.fixture(scope="module")
def mask_dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("segm-data"), num_images=3, masks=True)


def ground_truth_as_ranked(dataset, image_id):
    """The image's ground truth as `Detections` (label = category index) with its masks."""
    gt = coco_gt(dataset.data)
    anns = gt.loadAnns(gt.getAnnIds(imgIds=[image_id]))
    index = {cid: k for k, cid in enumerate(dataset.category_ids)}
    boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns])
    dets = Detections(torch.linspace(0.9, 0.5, len(anns)), torch.tensor([index[a["category_id"]] for a in anns]), boxes)
    masks = torch.from_numpy(np.stack([gt.annToMask(a) for a in anns]).astype(bool))
    return dets, masks


def finish(scorer, records, ids, tmp_path):
    config = {"timings": {}, "batch_size": 1, "dtype": "fp32", "num_select": 300, "chunk_size": None,
              "iou_type": "segm"}
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        metrics = scorer.finish(tmp_path, iter(records), ids, config)
    return metrics, printed.getvalue()


def test_ground_truth_boxes_and_masks_score_1_and_masks_are_scored_by_mask(mask_dataset, tmp_path):
    dataset = load_dataset(*mask_dataset)
    scorer = CocoScorer(dataset, "model", "segm")
    ids = dataset.image_ids
    exact = [(i, scorer.encode(i, *ground_truth_as_ranked(dataset, i))) for i in ids]
    metrics, printed = finish(scorer, exact, ids, tmp_path)
    assert metrics["AP"] == 1.0 and metrics["segm"]["AP"] == 1.0
    assert "(boxes)" in printed and "(masks)" in printed
    per_class = pd.read_csv(tmp_path / "per_class.csv")
    assert list(per_class.columns[-3:]) == ["segm_AP", "segm_AP50", "segm_AP75"]
    assert per_class["segm_AP"].tolist() == pytest.approx([1.0] * len(per_class), abs=1e-12)

    # Same boxes, every mask emptied but one pixel: box AP stays 1, mask AP is 0 (each field is scored
    # by its own IoU type, and the box does not leak into the mask score).
    def one_pixel(i):
        dets, masks = ground_truth_as_ranked(dataset, i)
        dots = torch.zeros_like(masks)
        dots[:, 0, 0] = True
        return scorer.encode(i, dets, dots)

    metrics, _ = finish(scorer, [(i, one_pixel(i)) for i in ids], ids, tmp_path)
    assert metrics["AP"] == 1.0 and metrics["segm"]["AP"] == 0.0


def test_segm_is_refused_without_instance_masks(tmp_path):
    dataset = load_dataset(*make_dataset(tmp_path, num_images=1))
    with pytest.raises(InputError, match="have no 'segmentation'.*instance masks.*--iou-type bbox"):
        CocoScorer(dataset, "model", "segm")


def test_masks_in_another_frame_than_the_annotations_are_refused(mask_dataset):
    dataset = load_dataset(*mask_dataset)
    image_id = dataset.image_ids[0]
    dets, masks = ground_truth_as_ranked(dataset, image_id)
    with pytest.raises(InputError, match="annotation file declares"):
        CocoScorer(dataset, "model", "segm").encode(image_id, dets, masks[:, :-1])


def segm_stats(ann, detections, ids):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
        dt = gt.loadRes([{k: v for k, v in d.items() if k != "bbox"} for d in detections])
        ev = COCOeval(gt, dt, "segm")
        ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.slow
def test_cli_segm_run_on_tiny_models(mask_dataset, fast_model_dir, tiny_sam_dir, tmp_path):
    from pycocotools import mask as mask_utils

    ann, images = mask_dataset
    out = tmp_path / "run"
    args = cli_args(ann, images, fast_model_dir, out, "--num-select", "20", "--iou-type", "segm",
                    "--sam-model", str(tiny_sam_dir))
    done = run_cli(args)
    assert done.returncode == 0, done.stderr
    assert "(masks)" in done.stdout and "(boxes)" in done.stdout
    metrics = load_json(out / "metrics.json")
    config = metrics["config"]
    assert config["iou_type"] == "segm" and config["sam_model"] == str(tiny_sam_dir)
    assert config["sam_model_type"] == "sam" and config["mask_box_margin"] == BOX_MARGIN
    assert "sam_revision" in config and config["timings"]["mask_s"] > 0
    # The stored numbers are pycocotools' on the stored detections, computed here independently.
    detections = load_json(out / "detections.json")
    ids = config["image_ids"]
    assert len(detections) == 20 * len(ids)
    stats = segm_stats(ann, detections, ids)
    assert [metrics["segm"][m] for m in METRICS] == pytest.approx(stats.tolist(), abs=1e-12)
    gt = load_json(ann)
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    for d in detections:
        rle = d["segmentation"]
        assert tuple(rle["size"]) == sizes[d["image_id"]]
        mask = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
        x, y, w, h = d["bbox"]
        ys, xs = np.nonzero(mask)
        if len(xs):  # every set pixel's centre inside the box grown by the margin
            assert (xs + 0.5 >= x - BOX_MARGIN * w - 1e-4).all() and (xs + 0.5 <= x + w + BOX_MARGIN * w + 1e-4).all()
            assert (ys + 0.5 >= y - BOX_MARGIN * h - 1e-4).all() and (ys + 0.5 <= y + h + BOX_MARGIN * h + 1e-4).all()
    assert any(mask_utils.area(d["segmentation"] | {"counts": d["segmentation"]["counts"].encode()}) for d in detections)
    per_class = pd.read_csv(out / "per_class.csv")
    assert {"AP", "segm_AP", "segm_AP50", "segm_AP75"} <= set(per_class.columns)

    # Resume: the same command finds everything done; a box run into the same directory is refused.
    again = run_cli(args)
    assert again.returncode == 0 and f"resuming: {len(ids)} of {len(ids)}" in again.stderr
    assert load_json(out / "detections.json") == detections
    boxes_only = run_cli(cli_args(ann, images, fast_model_dir, out, "--num-select", "20"))
    assert boxes_only.returncode == 2 and "iou_type: 'segm' then, None now" in boxes_only.stderr


def test_cli_refuses_sam_model_without_segm_and_a_missing_sam_model(mask_dataset, fast_model_dir, tmp_path, capsys):
    from evaluation.coco.cli import main

    ann, images = mask_dataset
    assert main(cli_args(ann, images, fast_model_dir, tmp_path / "a", "--sam-model", "x")) == 2
    assert "--sam-model is used only with --iou-type segm" in capsys.readouterr().err
    no_sam = tmp_path / "no-sam"
    no_sam.mkdir()
    assert main(cli_args(ann, images, fast_model_dir, tmp_path / "b", "--iou-type", "segm", "--sam-model", str(no_sam))) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: could not load mask model") and "no loadable SAM-family model" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "b").exists()
