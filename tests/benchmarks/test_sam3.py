"""The SAM 3 benchmark end to end on tiny random models (not timed: the figures are not asserted)."""
from __future__ import annotations

import re

import pytest

from benchmarks.sam3 import kth_score, label_counts, main
from tests.sam3_factory import tiny_sam3_dir

SUMMARY = re.compile(r"reuse_vs_full=((?:\d+:\d+\.\d\d,?)+) gdino_sam_vs_sam3=\d+\.\d\d")


def table(lines: list[str], first_cell: str) -> list[list[str]]:
    """The rows (cells) of the markdown table whose header starts with `first_cell`, header and rule excluded."""
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_cell} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("| "):
            break
        rows.append([cell.strip() for cell in line.split("|")[1:-1]])
    return rows


@pytest.fixture(autouse=True)
def _thp_untouched(monkeypatch):
    # main() sets THP_MEM_ALLOC_ENABLE for its process; keep the test process's environment as it was.
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "0")


@pytest.mark.slow
def test_sam3_benchmark_reports_every_row_agreement_and_the_summary(tiny_model_dir, tiny_sam_dir, capsys):
    args = ["--model", str(tiny_sam3_dir()), "--detector", str(tiny_model_dir), "--sam-model", str(tiny_sam_dir),
            "--labels", "1,3,5", "--images", "1", "--rounds", "2", "--detections", "4"]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = SUMMARY.fullmatch(lines[-1])
    assert summary, lines[-1]
    assert [part.split(":")[0] for part in summary[1].split(",")] == ["1", "3", "5"]

    reuse = table(lines, "labels")
    assert [row[0] for row in reuse] == ["1", "3", "5"]
    for row in reuse:
        assert re.fullmatch(r"\d+\.\d\dx \(\d+\.\d\d-\d+\.\d\d\)", row[3]), row
        # The reused embedding gives the full forward's outputs (up to the batching's float order).
        assert float(row[4]) < 1e-5 and float(row[5]) < 1e-5, row

    masks = table(lines, "path")
    assert [row[0] for row in masks] == ["SAM 3 alone (boxes + its own masks)", "Grounding DINO + SAM mask stage"]
    # Thresholds set on the (only) image to keep its 4 best: exactly 4 on each path, every round (the tiny
    # models' scores have no ties there), each Grounding DINO box with its mask.
    assert masks[0][3] == "4.0" and masks[1][3] == "4.0", masks
    assert re.fullmatch(r"boxes \d+\.\d+ \+ masks \d+\.\d+", masks[1][4]), masks[1]
    assert any(line.startswith("thresholds (set on the first image to keep ~4 detections per image)") for line in lines)


@pytest.mark.slow
def test_sam3_benchmark_with_the_default_thresholds(tiny_model_dir, tiny_sam_dir, capsys):
    args = ["--model", str(tiny_sam3_dir()), "--detector", str(tiny_model_dir), "--sam-model", str(tiny_sam_dir),
            "--labels", "2", "--quick", "--detections", "0"]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert SUMMARY.fullmatch(lines[-1]) and lines[-1].startswith("reuse_vs_full=2:"), lines[-1]
    assert any(line.startswith("thresholds (each family's default): SAM 3 score > 0.5, Grounding DINO score >= 0.35")
               for line in lines), lines


def test_sam3_benchmark_refuses_a_checkpoint_that_is_not_sam3(tiny_model_dir, capsys):
    assert main(["--model", str(tiny_model_dir), "--quick"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: could not load") and "not a SAM 3 checkpoint" in err


def test_label_counts_are_checked():
    assert label_counts("1,4,16") == (1, 4, 16)
    for bad in ("", "a,b", "0,4", "81"):
        with pytest.raises(Exception, match="label count"):
            label_counts(bad)


def test_kth_score_is_the_kth_highest_or_the_lowest():
    assert kth_score([0.1, 0.9, 0.5, 0.7], 2) == 0.7
    assert kth_score([0.1, 0.9], 5) == 0.1
    assert kth_score([], 3) == 0.0
