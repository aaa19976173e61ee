"""pycocotools scoring on data with a known answer, run-directory files, and input errors."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.evaluation.coco.command_line import cli_args, load_json
from tests.evaluation.coco.drawn_dataset import CATEGORIES
from evaluation.coco.cli import build_parser, main
from evaluation.coco.dataset import load_dataset
from evaluation.coco.scoring import METRICS, coco_gt, per_class_table, score


def gt_data(num_images=4):
    """One 'cat' box per image (40x40, medium area) and one 'dog' box on image 1."""
    images = [{"id": i, "file_name": f"{i}.png", "width": 200, "height": 200} for i in range(1, num_images + 1)]
    anns = [{"id": i, "image_id": i, "category_id": 3, "bbox": [50, 50, 40, 40], "area": 1600, "iscrowd": 0}
            for i in range(1, num_images + 1)]
    anns.append({"id": 99, "image_id": 1, "category_id": 7, "bbox": [100, 100, 50, 50], "area": 2500, "iscrowd": 0})
    return {"images": images, "annotations": anns, "categories": CATEGORIES[:2]}


def as_results(anns, score=1.0):
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": score}
            for a in anns]


def test_detections_equal_to_ground_truth_score_ap_1():
    data = gt_data()
    metrics, ev, _ = score(coco_gt(data), as_results(data["annotations"]), [1, 2, 3, 4])
    assert metrics["AP"] == metrics["AP50"] == metrics["AP75"] == metrics["APm"] == 1.0
    assert metrics["APs"] == metrics["APl"] == -1.0  # no small / large ground truth
    assert metrics["AR100"] == 1.0
    table = per_class_table(ev, data["categories"])
    assert table["AP"].tolist() == pytest.approx([1.0, 1.0], abs=1e-12) and table["num_gt"].tolist() == [4, 1]


@pytest.mark.parametrize("shifted_first, expected_precision", [(False, 1.0), (True, 0.5)])
def test_half_the_boxes_shifted_off_gives_the_101_point_ap(shifted_first, expected_precision):
    """4 cat boxes; 2 detected exactly, 2 shifted off (IoU 0), at every IoU threshold alike.

    Exact ones ranked first: precision 1 up to recall 0.5, then no more recall. COCO interpolates at
    the 101 recall points 0, 0.01, ..., 1: the 51 points r <= 0.5 get precision 1, the other 50 get
    0 -> AP = 51/101. Shifted ones ranked first: the precision envelope up to recall 0.5 is
    max(2/4, ...) = 0.5 -> AP = 0.5 * 51/101. The dog class, detected exactly, has AP 1.
    """
    data = gt_data()
    cats = [a for a in data["annotations"] if a["category_id"] == 3]
    dets = []
    for k, a in enumerate(cats):
        x, y, w, h = a["bbox"]
        off = k >= 2
        s = (0.9 if off else 0.5) if shifted_first else (0.5 if off else 0.9)
        dets.append({"image_id": a["image_id"], "category_id": 3, "bbox": [x + 100 if off else x, y, w, h],
                     "score": s - 0.01 * k})
    dets += as_results([a for a in data["annotations"] if a["category_id"] == 7])
    metrics, ev, _ = score(coco_gt(data), dets, [1, 2, 3, 4])
    cat_ap = expected_precision * 51 / 101
    table = per_class_table(ev, data["categories"]).set_index("name")
    assert table.loc["cat", "AP"] == pytest.approx(cat_ap, abs=1e-12)
    assert table.loc["cat", "AP50"] == table.loc["cat", "AP75"] == pytest.approx(cat_ap, abs=1e-12)
    assert table.loc["Dog", "AP"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["AP"] == pytest.approx((cat_ap + 1.0) / 2, abs=1e-12)  # mean over the 2 classes
    assert metrics["AR100"] == pytest.approx((0.5 + 1.0) / 2)


def test_no_detections_score_zero():
    metrics, ev, _ = score(coco_gt(gt_data()), [], [1, 2])
    assert metrics["AP"] == 0.0 and metrics["AR100"] == 0.0


def test_run_directory_files(coco_dataset, fast_model_dir, tmp_path, capsys):
    ann, images = coco_dataset
    out = tmp_path / "run"
    assert main(cli_args(ann, images, fast_model_dir, out, "--limit", "3")) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "Average Precision" in printed and "NON-PARITY" not in printed and "published" not in printed
    from runtime.allocator import active_allocator

    # A CPU run on glibc malloc says how to get tcmalloc (stderr; the results are the same either way).
    assert ("note: running on glibc malloc" in captured.err) == (active_allocator() == "glibc malloc")
    metrics = load_json(out / "metrics.json")
    assert metrics["config"]["allocator"] == active_allocator()
    assert set(METRICS) <= set(metrics) and all(-1 <= metrics[m] <= 1 for m in METRICS)
    cfg = metrics["config"]
    assert cfg["ann"] == str(ann.resolve()) and cfg["images"] == str(images.resolve())
    assert cfg["model"] == str(fast_model_dir) and cfg["dtype"] == "fp32" and cfg["device"] == "cpu"
    assert cfg["num_images"] == 3 and cfg["parity"] is True and cfg["num_chunks"] == 1
    assert cfg["phrases"] == ["cat", "dog", "traffic light", "hair drier"] and "class_phrases" in cfg["phrase_rule"]
    assert {"torch", "transformers", "pycocotools"} <= set(cfg["versions"])
    assert {"inference_s", "model_load_s", "total_s"} <= set(cfg["timings"])
    # Every speed lever installed on this transformers, recorded as such (a silent miss would say why).
    assert {"text_cache", "fusion", "deformable"} <= set(cfg["levers"]), cfg["levers"]
    assert all(v == "active" for k, v in cfg["levers"].items() if k != "thp_allocation"), cfg["levers"]
    assert cfg["lever_warnings"] == [] and cfg["preprocessing"].startswith("official GroundingDINO transforms")
    dets = load_json(out / "detections.json")
    ids = sorted(im["id"] for im in json.loads(ann.read_text())["images"])[:3]
    assert [d["image_id"] for d in dets] == [i for i in ids for _ in range(300)]
    assert {d["category_id"] for d in dets} <= {c["id"] for c in CATEGORIES}
    assert all(len(d["bbox"]) == 4 and d["bbox"][2] >= 0 for d in dets)
    per_class = pd.read_csv(out / "per_class.csv")
    assert list(per_class.columns) == ["category_id", "name", "AP", "AP50", "AP75", "num_gt"]
    assert per_class["category_id"].tolist() == [c["id"] for c in CATEGORIES]  # annotation-file order
    # The files score the same again (what the analysis notebooks recompute).
    again, _, _ = score(coco_gt(load_dataset(ann, images).data), dets, ids)
    assert again["AP"] == metrics["AP"]


def test_non_parity_settings_are_recorded_and_flagged(coco_dataset, fast_model_dir, tmp_path, capsys):
    ann, images = coco_dataset
    out = tmp_path / "run"
    assert main(cli_args(ann, images, fast_model_dir, out, "--limit", "2", "--batch-size", "2",
                         "--chunk-size", "2", "--num-select", "50")) == 0
    assert "NON-PARITY" in capsys.readouterr().out
    cfg = load_json(out / "metrics.json")["config"]
    assert cfg["parity"] is False and cfg["batch_size"] == 2 and cfg["num_chunks"] == 2
    assert len(cfg["non_parity"]) == 3
    dets = load_json(out / "detections.json")
    assert len(dets) == 2 * 2 * 50  # each chunk's own top-50, concatenated


def bad(args, capsys):
    capsys.readouterr()  # what earlier runs printed
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(args))
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2
    assert err.startswith("error:") and len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_bad_input_is_one_line_exit_2(tmp_path, coco_dataset, fast_model_dir, capsys):
    ann, images = coco_dataset
    assert "annotation file not found" in bad(cli_args(tmp_path / "nope.json", images, fast_model_dir, tmp_path / "o"), capsys)
    assert "image directory not found" in bad(cli_args(ann, tmp_path / "nodir", fast_model_dir, tmp_path / "o"), capsys)
    assert "instances_val2017.json" in bad(["--coco-root", str(tmp_path)], capsys)
    notjson = tmp_path / "x.json"
    notjson.write_text("{not json")
    assert "not valid JSON" in bad(cli_args(notjson, images, fast_model_dir, tmp_path / "o"), capsys)
    notcoco = tmp_path / "y.json"
    notcoco.write_text(json.dumps([{"a": 1}]))
    assert "not a COCO detection annotation file" in bad(cli_args(notcoco, images, fast_model_dir, tmp_path / "o"), capsys)
    data = json.loads(ann.read_text())
    data["images"][1]["file_name"] = "missing.png"
    moved = tmp_path / "z.json"
    moved.write_text(json.dumps(data))
    assert "missing.png" in bad(cli_args(moved, images, fast_model_dir, tmp_path / "o"), capsys)
    assert "could not load" in bad(cli_args(ann, images, tmp_path, tmp_path / "o"), capsys)
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in images.iterdir():
        (broken / p.name).write_bytes(p.read_bytes())
    (broken / data["images"][0]["file_name"]).write_bytes(b"not an image")
    capsys.readouterr()
    assert main(cli_args(ann, broken, fast_model_dir, tmp_path / "o")) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert last.startswith("error:") and "img_000.png" in last and "not a readable image" in last


def test_a_rerun_with_other_settings_is_refused(coco_dataset, fast_model_dir, tmp_path, capsys):
    ann, images = coco_dataset
    out = tmp_path / "run"
    assert main(cli_args(ann, images, fast_model_dir, out, "--limit", "1")) == 0
    before = (out / "detections.json").read_bytes()
    err = bad(cli_args(ann, images, fast_model_dir, out, "--limit", "1", "--num-select", "100"), capsys)
    assert "different settings" in err and "num_select" in err
    assert (out / "detections.json").read_bytes() == before  # nothing mixed or lost
    # --no-resume starts over with the new settings.
    assert main(cli_args(ann, images, fast_model_dir, out, "--limit", "1", "--num-select", "100", "--no-resume")) == 0
    assert len(load_json(out / "detections.json")) == 100


def test_help_explains_every_option():
    text = build_parser().format_help()
    for option in ("--coco-root", "--ann", "--images", "--model", "--out", "--device", "--dtype", "--batch-size",
                   "--num-select", "--limit", "--chunk-size", "--no-resume", "download"):
        assert option in text
    assert all(a.help for a in build_parser()._actions)


def test_missing_iscrowd_and_area_are_filled(tmp_path):
    data = gt_data()
    for a in data["annotations"]:
        del a["iscrowd"], a["area"]
    (tmp_path / "imgs").mkdir()
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps(data))
    ds = load_dataset(ann, tmp_path / "imgs", check_files=False)
    metrics, _, _ = score(coco_gt(ds.data), as_results(ds.data["annotations"]), [1, 2, 3, 4])
    assert metrics["AP"] == 1.0
    assert np.isclose(ds.data["annotations"][0]["area"], 1600)


def test_published_figure_only_for_known_checkpoints_on_full_val2017():
    from evaluation.coco.scoring import published_rows, summary_text

    tiny = published_rows("IDEA-Research/grounding-dino-tiny", 5000, "instances_val2017.json")
    assert [(r["ap"], r["source"], r["zero_shot"]) for r in tiny] == [(48.4, "paper", True),
                                                                      (48.5, "official script", True)]
    assert published_rows("/models/grounding-dino-tiny/", 5000, "instances_val2017.json") == tiny  # a local copy
    assert published_rows("IDEA-Research/grounding-dino-tiny", 500, "instances_val2017.json") == []
    assert published_rows("IDEA-Research/grounding-dino-tiny", 5000, "odinw.json") == []
    assert published_rows("my/finetuned-detector", 5000, "instances_val2017.json") == []
    # exact names: the _grit variant is not the plain o365v1_goldg checkpoint
    grit = published_rows("openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_grit", 5000, "instances_val2017.json")
    assert [r["ap"] for r in grit] == [50.5]
    metrics = {m: 0.0 for m in METRICS} | {"AP": 0.4812}
    text = summary_text(metrics, {"published": tiny, "batch_size": 1, "dtype": "fp32", "num_select": 300})
    assert "published 48.4 (paper, arXiv 2303.05499 (Grounding DINO paper), Table 2): ours 48.1, difference -0.3" in text
    assert "published 48.5 (official script" in text and "difference -0.4" in text
    base = published_rows("IDEA-Research/grounding-dino-base", 5000, "instances_val2017.json")
    text = summary_text(metrics, {"published": base, "batch_size": 4, "dtype": "bf16", "num_select": 300})
    assert "not a zero-shot figure" in text and "NON-PARITY" in text and "batch size 4" in text


def test_coco_names_are_unchanged_by_the_phrase_rule_and_custom_names_become_words():
    """The evaluation prompts what the backend would: COCO's names as they are, `TrafficLight` as words."""
    from detection.phrases import class_phrases
    from evaluation.coco.names import COCO_NAMES
    from evaluation.coco.run import CocoScorer

    data = {"categories": [{"id": i + 1, "name": n} for i, n in enumerate(COCO_NAMES)]}
    scorer = CocoScorer(type("D", (), {"category_names": COCO_NAMES, **data})(), "m")
    assert [c for (c,) in scorer.classes()] == COCO_NAMES
    custom = CocoScorer(type("D", (), {"category_names": ["TrafficLight", "fire_hydrant", "Dog"]})(), "m")
    assert custom.classes() == [("traffic light",), ("fire hydrant",), ("dog",)]
    assert custom.classes()[0] == class_phrases("TrafficLight")


def test_exif_rotated_images_use_the_frame_the_annotations_declare(tmp_path):
    """EXIF orientation is applied (as the backend does), unless the annotation file's width/height
    say the boxes were drawn on the stored pixels (the original loader does not transpose)."""
    from PIL import Image

    from evaluation.runner.run import load_image

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 on display
    Image.new("RGB", (60, 40), (10, 200, 10)).save(tmp_path / "r.jpg", exif=exif)
    images = [{"id": 1, "file_name": "r.jpg", "width": 40, "height": 60},
              {"id": 2, "file_name": "r.jpg", "width": 60, "height": 40},
              {"id": 3, "file_name": "r.jpg"}]
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps({"images": images, "annotations": [], "categories": CATEGORIES}))
    ds = load_dataset(ann, tmp_path)
    assert load_image(ds, 1).size == (40, 60)  # displayed frame
    assert load_image(ds, 2).size == (60, 40)  # stored frame, as declared
    assert load_image(ds, 3).size == (40, 60)  # nothing declared: displayed frame
    assert all(load_image(ds, i).mode == "RGB" for i in (1, 2, 3))
