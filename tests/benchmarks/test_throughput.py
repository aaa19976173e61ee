"""The benchmark's machinery end to end on the tiny model (not timed: the figures are not asserted)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_benchmark_runs_every_path_and_ends_with_the_summary_line(tiny_model_dir):
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.throughput", "--model", str(tiny_model_dir), "--rounds", "2",
         "--images", "2", "--dtypes", "fp32", "--batch-sizes", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert re.fullmatch(r"backend_vs_model_card=\d+\.\d\d eval_vs_model_card=\d+\.\d\d", lines[-1]), lines[-1]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in lines if line.startswith("| ")}
    expected = {"model-card loop, 5 LS labels", "model-card loop, 80 COCO names", "backend /predict, 5 LS labels, fp32",
                "evaluation rank, batch 1 (parity), fp32", "evaluation rank, batch 2, fp32"}
    assert expected <= set(rows), sorted(rows)
    # The fast paths reproduce the model card on the tiny model (no ties): same top-100 queries, same
    # boxes, every reference detection found and nothing extra.
    for name in ("backend /predict, 5 LS labels, fp32", "evaluation rank, batch 1 (parity), fp32"):
        logit, box, overlap = rows[name][6], rows[name][7], rows[name][8]
        assert float(logit.split()[0]) < 1e-3 and float(box) < 1e-4 and overlap == "1.00", (name, rows[name])
    matched = re.fullmatch(r"(\d+)/(\d+) matched, \+0, max Δscore (\S+)", rows["backend /predict, 5 LS labels, fp32"][9])
    assert matched and matched[1] == matched[2] and int(matched[2]) > 0 and float(matched[3]) < 1e-4
