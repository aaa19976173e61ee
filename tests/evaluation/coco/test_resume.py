"""Resume: killed with SIGKILL at several points and rerun, the result equals an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.evaluation.coco.command_line import REPO, cli_args, env, run_cli
from tests.evaluation.coco.drawn_dataset import make_dataset
from tests.waiting import wait_until
from evaluation.runner.store import PartialStore, read_lines

pytestmark = pytest.mark.slow
NUM_IMAGES = 5


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("resume-data"), num_images=NUM_IMAGES)


@pytest.fixture(scope="module")
def reference(dataset, fast_model_dir, tmp_path_factory):
    """detections.json of one uninterrupted run (same subprocess environment as the killed ones)."""
    out = tmp_path_factory.mktemp("resume-ref") / "run"
    done = run_cli(cli_args(*dataset, fast_model_dir, out))
    assert done.returncode == 0, done.stderr
    return (out / "detections.json").read_bytes()


def lines_done(out):
    path = out / "partial" / "results.jsonl"
    return len(read_lines(path)[0]) if path.exists() else 0


@pytest.mark.parametrize("kill_after", [0, 1, 3])
def test_sigkill_then_rerun_equals_uninterrupted(dataset, fast_model_dir, reference, tmp_path, kill_after):
    out = tmp_path / "run"
    args = cli_args(*dataset, fast_model_dir, out)
    proc = subprocess.Popen([sys.executable, "-m", "evaluation.coco", *args], cwd=REPO, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: lines_done(out) >= kill_after or proc.poll() is not None,
                   f"{kill_after} images stored (or the run ended)", 240, 0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done_before = lines_done(out)
    assert done_before >= kill_after and not (out / "detections.json").exists()
    rerun = run_cli(args)
    assert rerun.returncode == 0, rerun.stderr
    assert (out / "detections.json").read_bytes() == reference
    if done_before:
        assert f"resuming: {done_before} of {NUM_IMAGES}" in rerun.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["resumed_images"] == done_before
    assert metrics["config"]["timings"]["images_this_run"] == NUM_IMAGES - done_before


def test_torn_last_line_is_detected_and_redone(dataset, fast_model_dir, reference, tmp_path):
    """A line cut off mid-write (as by a kill during the write) is dropped and that image is redone."""
    out = tmp_path / "run"
    args = cli_args(*dataset, fast_model_dir, out, "--limit", "3")
    assert run_cli(args).returncode == 0
    path = out / "partial" / "results.jsonl"
    data = path.read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(data[: last_start + (len(data) - last_start) // 2])  # half of the third line
    records, good = read_lines(path)
    assert len(records) == 2 and good == last_start
    store = PartialStore(out)
    store.open()  # cuts the torn tail before appending
    store.close()
    assert path.read_bytes() == data[:last_start]
    path.write_bytes(data[: last_start + 10])  # torn again, now the command itself must cope
    rerun = run_cli(cli_args(*dataset, fast_model_dir, out))  # all 5 images: 3 more to do
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming: 2 of 5" in rerun.stderr
    assert (out / "detections.json").read_bytes() == reference
    assert [json.loads(line)["image_id"] for line in path.read_text().splitlines()] == sorted(
        json.loads(line)["image_id"] for line in path.read_text().splitlines())
