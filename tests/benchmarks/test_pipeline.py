"""The download-overlap benchmark end to end on the tiny model (not timed: the ratio is not asserted)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_pipeline_benchmark_compares_serial_and_overlapped_on_equal_predictions(tiny_model_dir):
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.pipeline", "--model", str(tiny_model_dir), "--images", "3",
         "--rounds", "1", "--latency-ms", "50", "--device", "cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    # The script exits non-zero when the two paths' predictions differ.
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert re.fullmatch(r"overlap_vs_serial=\d+\.\d\d", lines[-1]), lines[-1]
    assert any(re.match(r"\s+serial\s+\d+\.\d ms per image", line) for line in lines), lines
    assert any(re.match(r"\s+overlapped\s+\d+\.\d ms per image", line) for line in lines), lines
