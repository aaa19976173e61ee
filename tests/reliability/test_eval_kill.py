"""`python -m evaluation.coco` killed with SIGKILL at random moments (seeded), rerun until it finishes:
every rerun resumes, and the final detections.json equals an uninterrupted run's, byte for byte.

tests/evaluation/coco/test_resume.py kills at fixed points (after N images are stored); here the kill
times are drawn over the whole run (imports, model loading, fingerprint, inference, merge, scoring,
the final writes), and a rerun may itself be killed again.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


from tests.evaluation.coco.command_line import REPO, cli_args, env, run_cli  # noqa: E402
from tests.evaluation.coco.drawn_dataset import make_dataset  # noqa: E402
from tests.model_factory import with_input_size  # noqa: E402

pytestmark = [pytest.mark.reliability, pytest.mark.slow]
NUM_IMAGES = 12
CHAINS = 4  # independent run directories
KILLS_PER_CHAIN = 2  # each killed run is rerun, and the rerun may be killed again
SEED = 20260408


@pytest.fixture(scope="module")
def fast_model(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model at 480 px: inference is a good part of each run, so kill moments land in it too."""
    return with_input_size(tiny_model_dir, tmp_path_factory.mktemp("kill-model") / "tiny-480", 480, 800)


def partial_ids(out: Path) -> list[int]:
    ids = []
    for path in sorted((out / "partial").glob("*.jsonl")) if (out / "partial").exists() else []:
        for line in path.read_bytes().split(b"\n")[:-1]:  # only newline-terminated lines count as stored
            try:
                ids.append(int(json.loads(line)["image_id"]))
            except (ValueError, KeyError, TypeError):
                pass  # a torn last line
    return ids


def reference_run(args: list[str], out: Path) -> tuple[bytes, float, tuple[float, float]]:
    """The uninterrupted run, watched: its detections.json, its duration and the window in which it stored
    images (the inference window)."""
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "evaluation.coco", *args],
                            cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stored_at = {}
    while proc.poll() is None and time.monotonic() - t0 < 300:
        n = len(partial_ids(out))
        if n and n not in stored_at:
            stored_at[n] = time.monotonic() - t0
        time.sleep(0.01)
    full_time = time.monotonic() - t0
    assert proc.wait() == 0
    first = min(stored_at.values(), default=0.0)
    last = max(stored_at.values(), default=full_time)
    window = (max(0.0, first - (last - first) / max(1, NUM_IMAGES - 1)), last)
    reference = (out / "detections.json").read_bytes()
    assert json.loads(reference), "the reference run found no detections"
    return reference, full_time, window


def run_killed_after(args: list[str], out: Path, delay: float, reference: bytes) -> tuple[bool, int]:
    """One run, SIGKILLed after `delay` s unless it finished first: (killed, images stored). What it left
    is never wrong: no image stored twice, detections.json whole and right or absent."""
    proc = subprocess.Popen([sys.executable, "-m", "evaluation.coco", *args], cwd=REPO, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        proc.wait(timeout=delay)
        finished = True
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        finished = False
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if finished:
        assert proc.returncode == 0, stderr
    ids = partial_ids(out)
    assert len(ids) == len(set(ids)), f"an image stored twice: {ids}"
    if (out / "detections.json").exists():  # written atomically: whole and right, or absent
        assert (out / "detections.json").read_bytes() == reference
    return not finished, len(ids)


def rerun_to_the_end(args: list[str], out: Path, reference: bytes, before: int, chain_log: list[dict]) -> None:
    """The last rerun resumes from the `before` images stored and ends as the uninterrupted run did."""
    rerun = run_cli(args)
    assert rerun.returncode == 0, rerun.stderr
    stored = len(set(partial_ids(out)))
    assert (out / "detections.json").read_bytes() == reference, f"chain {out.name}: {chain_log}"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["resumed_images"] == before
    assert metrics["config"]["timings"]["images_this_run"] == NUM_IMAGES - before
    if before:
        assert f"resuming: {before} of {NUM_IMAGES}" in rerun.stderr
    assert stored == NUM_IMAGES
    ids = partial_ids(out)
    assert sorted(ids) == sorted(set(ids)), "an image stored twice"


def test_sigkill_at_random_moments_then_rerun_equals_uninterrupted(fast_model, tmp_path):
    ann, images = make_dataset(tmp_path / "data", num_images=NUM_IMAGES)
    reference, full_time, window = reference_run(cli_args(ann, images, fast_model, tmp_path / "reference"),
                                                 tmp_path / "reference")
    rng = random.Random(SEED)
    log = []
    for chain in range(CHAINS):
        out = tmp_path / f"run{chain}"
        args = cli_args(ann, images, fast_model, out)
        for attempt in range(KILLS_PER_CHAIN):
            # the first kill anywhere in the run, the second one (of the rerun) while images are processed
            delay = rng.uniform(0.0, 1.1 * full_time) if attempt == 0 else rng.uniform(*window)
            killed, stored = run_killed_after(args, out, delay, reference)
            log.append({"chain": chain, "kill_after_s": round(delay, 2), "killed": killed, "images_stored": stored})
        rerun_to_the_end(args, out, reference, log[-1]["images_stored"], log[-KILLS_PER_CHAIN:])
    killed = [e for e in log if e["killed"]]
    mid = [e for e in killed if 0 < e["images_stored"] < NUM_IMAGES]
    print(f"\nevaluation kills (uninterrupted run {full_time:.1f} s, images stored {window[0]:.1f}-{window[1]:.1f} s; "
          f"{len(killed)} of {len(log)} runs killed, {len(mid)} during inference): {json.dumps(log)}")
    assert len(killed) >= CHAINS, "most runs should have been killed"
