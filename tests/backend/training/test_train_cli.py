"""`python -m backend.train` on a COCO-format dataset: a model directory the detector loads like any checkpoint."""
from __future__ import annotations

import json

import pytest

from backend.train import main
from tests.backend.training.synthetic import CLASSES


def args(ann, images, model, out, *extra):
    return ["--ann", str(ann), "--images", str(images), "--model", str(model), "--out", str(out),
            "--device", "cpu", "--threads", "1", "--image-size", "96", "--batch-size", "2", "--no-progress", *extra]


@pytest.mark.slow
def test_a_short_run_writes_a_loadable_model_and_its_report(small_shapes, tiny_model_dir, tmp_path, capsys):
    from detection import Detector, DetectorConfig

    ann, images = small_shapes
    out = tmp_path / "model"
    assert main(args(ann, images, tiny_model_dir, out, "--steps", "3", "--val-fraction", "0.25",
                     "--progress-file", str(tmp_path / "progress.jsonl"))) == 0
    printed = capsys.readouterr().out
    assert "held-out on 2 images: AP " in printed and str(out) in printed

    detector = Detector.load(DetectorConfig(model=str(out), device="cpu"))
    # the training size travels with the model: the detector's preprocessing uses it
    assert (detector.preprocessor.shortest_edge, detector.preprocessor.longest_edge) == (96, round(96 * 1333 / 800))
    report = json.loads((out / "training.json").read_text())
    assert report["steps"] == 3 and len(report["losses"]) == 3
    assert len(report["heldout_image_ids"]) == 2 and len(report["train_image_ids"]) == 6
    # classes prompted by the label -> phrase rule of the detection core
    assert [c["phrases"] for c in report["classes"]] == [["red square"], ["green disk"], ["blue triangle"]]
    assert [c["name"] for c in report["classes"]] == [c["name"] for c in CLASSES]
    assert set(report["heldout"]) == {"before", "after", "not_worse"}
    for which in ("before", "after"):  # evaluation run directories: `python -m evaluation.report` reads them
        metrics = json.loads((out / "heldout" / which / "metrics.json").read_text())
        assert metrics["config"]["image_ids"] == report["heldout_image_ids"]
        assert report["heldout"][which]["metrics"]["AP"] == metrics["AP"]
    assert not (out / "checkpoint").exists()  # the optimizer state goes once the model is written
    events = [json.loads(line) for line in (tmp_path / "progress.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["phase"] == "training"] == [1, 2, 3]
    assert events[-1]["phase"] == "done"

    # the same command again is refused rather than silently retraining over the finished model
    assert main(args(ann, images, tiny_model_dir, out, "--steps", "3", "--val-fraction", "0.25")) == 2
    assert "already holds a finished training run" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    ([], "give --project ID"),
    (["--project", "3", "--ann", "a.json", "--out", "x"], "not both"),
    (["--ann", "a.json", "--images", "imgs"], "give --out DIR"),
    (["--ann", "a.json", "--images", "imgs", "--thresholds-only"], "--thresholds-only learns from a Label Studio"),
    (["--ann", "missing.json", "--images", ".", "--out", "x"], "annotation file not found"),
])
def test_bad_input_is_one_error_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_bad_settings_are_named(small_shapes, tiny_model_dir, tmp_path, capsys):
    ann, images = small_shapes
    assert main(args(ann, images, tiny_model_dir, tmp_path / "m", "--steps", "0")) == 2
    assert "--steps must be at least 1" in capsys.readouterr().err
    assert main(args(ann, images, tiny_model_dir, tmp_path / "m", "--val-fraction", "1.5")) == 2
    assert "--val-fraction must be in [0, 1)" in capsys.readouterr().err


def test_an_out_directory_holding_something_else_is_not_written_over(small_shapes, tiny_model_dir, tmp_path, capsys):
    ann, images = small_shapes
    out = tmp_path / "base-model-by-mistake"
    out.mkdir()
    (out / "config.json").write_text("{}")
    assert main(args(ann, images, tiny_model_dir, out, "--steps", "1")) == 2
    assert "is not empty (config.json) and holds no training run" in capsys.readouterr().err
    assert (out / "config.json").read_text() == "{}"
