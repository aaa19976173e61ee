"""The mask benchmark's machinery on a tiny random SAM (not timed: the figures are not asserted)."""
from __future__ import annotations

import re

from benchmarks.masks import main
from tests.sam_factory import build_tiny_mask_model


def test_mask_benchmark_compares_both_paths_and_ends_with_the_ratio(tmp_path, capsys):
    model_dir = build_tiny_mask_model(tmp_path / "sam", "sam")
    assert main(["--model", str(model_dir), "--boxes", "3", "--images", "2", "--rounds", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"per_box_vs_batched=\d+\.\d\d boxes=3", lines[-1]), lines[-1]
    differ = re.fullmatch(r"masks of the two paths differ on at most (\S+) of a mask's pixels", lines[-2])
    assert differ and float(differ[1]) < 1e-3  # the same masks either way, up to a float-order threshold flip
    assert {line.split("|")[1].strip() for line in lines if line.startswith("| ") and "---" not in line} == {
        "path", "one embedding + 3 boxes in one batch", "one SAM call per box"}


def test_mask_benchmark_measures_masks_against_boxes_alone_in_the_backend(tmp_path, tiny_model_dir, capsys):
    model_dir = build_tiny_mask_model(tmp_path / "sam", "sam")
    assert main(["--model", str(model_dir), "--boxes", "2", "--images", "1", "--rounds", "1",
                 "--detector", str(tiny_model_dir)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"per_box_vs_batched=\d+\.\d\d boxes=2", lines[-1]), lines[-1]
    (ratio,) = [line for line in lines if line.startswith("masks_vs_boxes=")]
    assert re.fullmatch(r"masks_vs_boxes=\d+\.\d\d", ratio)
    assert any(re.fullmatch(r"backend per image: boxes alone \S+ s, boxes \+ masks \S+ s", line) for line in lines)


def test_mask_benchmark_refuses_a_model_it_cannot_load(tmp_path, capsys):
    assert main(["--model", str(tmp_path), "--quick"]) == 2
    assert "has no loadable SAM-family model" in capsys.readouterr().err
