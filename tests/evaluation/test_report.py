"""python -m evaluation.report on run directories written by the tests."""
from __future__ import annotations

import re
import subprocess
import sys

import pandas as pd
import pytest

from tests.evaluation.analysis_data import HAND_DETS, HAND_GT, write_run  # noqa: E402

from evaluation import report  # noqa: E402

SINGLE = {"report.md", "per_class_ap.png", "ap_by_size.png", "pr_curves.png", "score_histograms.png",
          "threshold_sweep.png", "threshold_sweep.csv", "per_class_thresholds.csv", "per_class_ap.csv"}


def test_report_command_writes_every_figure(tmp_path):
    run = write_run(tmp_path / "run", HAND_GT, HAND_DETS)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "evaluation.report", str(run), "--out", str(out),
                           "--precision", "0.6"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "report written to" in proc.stdout
    assert {p.name for p in out.iterdir()} == SINGLE
    md = (out / "report.md").read_text()
    for png in (p for p in SINGLE if p.endswith(".png")):
        assert f"]({png})" in md
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the recommendations of the hand-built case (see test_analysis): max F1 at 0.50, P >= 0.6 from 0.31
    assert re.search(r"\| max F1 \| 0\.500 \| 0\.600 \| 0\.750 \| 0\.667 \|", md), md
    assert re.search(r"\| lowest with precision ≥ 0\.6 \| 0\.310 \|", md), md
    assert "| paper (arXiv 2303.05499 (Grounding DINO paper), Table 2) | 48.4 |" in md
    sweep = pd.read_csv(out / "threshold_sweep.csv")
    assert len(sweep) == 101 and sweep.loc[sweep["threshold"] == 0.5, "tp"].item() == 3


def test_report_compare_default_out(tmp_path):
    a = write_run(tmp_path / "fp32", HAND_GT, HAND_DETS)
    shifted = [dict(d, bbox=[v + 3 for v in d["bbox"]]) for d in HAND_DETS]
    b = write_run(tmp_path / "bf16", HAND_GT, shifted, dtype="bf16")
    assert report.main([str(a), "--compare", str(b), "--classes", "dog"]) == 0
    out = a / "report"
    names = {p.name for p in out.iterdir()}
    assert SINGLE | {"compare_per_class.png", "compare_pr.png", "compare_per_class.csv"} == names
    md = (out / "report.md").read_text()
    assert "## Comparison of 2 runs (A is the reference)" in md
    assert "| A | fp32 | IDEA-Research/grounding-dino-tiny | coco-val2017 | 2 |" in md
    assert "| dtype | fp32 | bf16 |" in md
    assert "Overall (mean over classes) and for: dog." in md


def test_report_labelstudio_section(tmp_path):
    run = write_run(tmp_path / "ls", HAND_GT, HAND_DETS, threshold=0.25, export="export.json")
    report.main([str(run), "--out", str(tmp_path / "o")])
    md = (tmp_path / "o" / "report.md").read_text()
    assert "Label Studio" in md and "Best threshold: **0.50** (1 boxes saved" in md
    # no prelabels.csv: from the matching of pre-labels >= 0.25: cat 2 kept / 2 deleted / 1 GT missed,
    # dog 1 / 1 (the one on the crowd region ignored)
    assert "| cat | 2 | 0 | 0 | 2 | 1 | 4 | 0.500 |" in md and "| dog | 1 | 0 | 0 | 1 | 0 | 2 | 0.500 |" in md


@pytest.mark.parametrize("make", ["empty", "missing", "file"])
def test_report_rejects_non_run_dirs(tmp_path, capsys, make):
    target = tmp_path / "x"
    if make == "empty":
        target.mkdir()
    elif make == "file":
        target.write_text("{}")
    assert report.main([str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(target) in err
    if make == "empty":
        assert "not an evaluation run directory" in err and "python -m evaluation.coco" in err
