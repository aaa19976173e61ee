"""`python -m evaluation.lvis` on a small LVIS-format dataset with the tiny random model, then the report."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from evaluation import report
from evaluation.lvis.cli import build_parser, main
from tests.evaluation.coco.command_line import load_json
from tests.evaluation.lvis.ground_truth import make_lvis_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lvis_dataset(tmp_path_factory):
    return make_lvis_dataset(tmp_path_factory.mktemp("lvis"), num_images=3)


def args(ann, root, model, out, *extra):
    return ["--ann", str(ann), "--images", str(root), "--model", str(model), "--out", str(out), "--device", "cpu",
            "--chunk-size", "2", *extra]


def test_run_scores_every_chunk_with_fixed_ap_and_reports(lvis_dataset, fast_model_dir, fast_detector, tmp_path, capsys):
    ann, root = lvis_dataset
    out = tmp_path / "run"
    assert main(args(ann, root, fast_model_dir, out, "--num-select", "20")) == 0
    printed = capsys.readouterr().out
    assert "Fixed AP (top 10000 per category" in printed and "APr" in printed
    assert "NON-PARITY" in printed and "chunk size 2 (parity: 40)" in printed
    metrics = load_json(out / "metrics.json")
    cfg = metrics["config"]
    assert cfg["phrases"] == ["ball", "traffic light", "hair drier", "yo-yo"]  # mmdetection's cleaning
    assert cfg["num_chunks"] == 2 and cfg["chunk_size"] == 2 and cfg["benchmark"] == "lvis-custom"
    assert {"AP", "APr", "APc", "APf"} <= set(metrics) and cfg["published"] == []
    # The scored detections are each chunk's own top-20 of every image (3 x 2 x 20 < 10,000 per category):
    # recompute them from the detector directly.
    from evaluation.lvis.dataset import load_lvis
    from evaluation.runner.run import load_image

    ds = load_lvis(ann, root)
    prompt = fast_detector.prompt([(p,) for p in cfg["phrases"]], 2)
    expected = []
    for image_id in ds.image_ids:
        (d,) = fast_detector.rank([load_image(ds, image_id)], prompt, 20)
        for label, score in zip(d.labels.tolist(), d.scores.tolist()):
            expected.append((image_id, ds.category_ids[label], round(score, 6)))
    saved = np.load(out / "detections.npz")
    got = list(zip(saved["image_id"].tolist(), saved["category_id"].tolist(), np.round(saved["score"], 6).tolist()))
    assert sorted(got) == sorted(expected) and len(got) == 3 * 2 * 20
    per_class = pd.read_csv(out / "per_class.csv")
    assert per_class["name"].tolist() == ["ball_(sports)", "traffic_light", "hair_drier", "yo-yo"]
    assert per_class["frequency"].tolist() == ["f", "c", "r", "r"] and per_class["num_gt"].sum() == 6

    # A second run into another directory (a resumed copy: nothing left to run) and a report on both.
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    assert main(args(ann, root, fast_model_dir, copy, "--num-select", "20")) == 0
    assert "resuming: 3 of 3 images" in capsys.readouterr().err
    assert report.main([str(out), str(copy), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Comparison of 2 runs (A is the reference)" in md and "| APr |" in md
    assert "lvis-custom" in md and "compare_per_class.png" in md and "pr_curves.png" not in md
    cmp = pd.read_csv(tmp_path / "rep" / "compare_per_class.csv")
    assert (cmp["B − A"].dropna() == 0).all()


def test_bad_lvis_input_is_one_line_exit_2(lvis_dataset, fast_model_dir, tmp_path, capsys):
    ann, root = lvis_dataset
    data = json.loads(ann.read_text())
    del data["categories"][0]["frequency"]
    broken = tmp_path / "b.json"
    broken.write_text(json.dumps(data))
    assert main(args(broken, root, fast_model_dir, tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "frequency" in err and len(err.splitlines()) == 1
    assert main(["--lvis-root", str(tmp_path), "--model", str(fast_model_dir)]) == 2
    assert "lvis_v1_minival_inserted_image_name.json" in capsys.readouterr().err


def test_help_names_the_protocol():
    text = build_parser().format_help()
    for option in ("--lvis-root", "--split", "--ann", "--images", "--chunk-size", "--topk", "--no-resume", "download"):
        assert option in text
