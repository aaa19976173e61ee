"""Killed with SIGKILL mid-training and rerun = uninterrupted; torchrun with 2 CPU processes = 1 process."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.evaluation.coco.command_line import REPO, env, run_cli
from tests.torchrun import run_torchrun
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


def train_args(ann, images, model, out, *extra):
    return ["--ann", str(ann), "--images", str(images), "--model", str(model), "--out", str(out), "--device", "cpu",
            "--threads", "1", "--image-size", "96", "--val-fraction", "0", "--no-progress", *extra]


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def assert_same_weights(a: Path, b: Path, **tolerance) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], msg=lambda m: f"{name}: {m}", **tolerance)


def test_sigkill_mid_training_then_rerun_equals_uninterrupted(small_shapes, tiny_model_dir, tmp_path):
    ann, images = small_shapes
    common = ("--steps", "8", "--checkpoint-every", "2", "--batch-size", "2")  # dropout on: seeded per step
    reference = tmp_path / "reference"
    done = run_cli(train_args(ann, images, tiny_model_dir, reference, *common), module="backend.train")
    assert done.returncode == 0, done.stderr[-3000:]

    out, progress = tmp_path / "killed", tmp_path / "progress.jsonl"
    command = [sys.executable, "-m", "backend.train",
               *train_args(ann, images, tiny_model_dir, out, *common, "--progress-file", str(progress))]
    proc = subprocess.Popen(command, cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def step_5_runs():
        if any(json.loads(line).get("step", 0) >= 5 for line in _lines(progress)):
            return True
        assert proc.poll() is None, "the run ended before it could be killed"
        return False

    try:  # kill as step 5 runs: the checkpoint of step 4 is on disk, steps 5.. are lost
        wait_until(step_5_runs, "progress: step 5 of the run to kill", 300)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not (out / "model.safetensors").exists() and (out / "checkpoint" / "state.pt").exists()

    rerun = run_cli(train_args(ann, images, tiny_model_dir, out, *common), module="backend.train")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    resumed_at = int(rerun.stderr.split("resuming from step ")[1].split()[0])
    assert resumed_at in (4, 6)  # not from the start
    assert_same_weights(reference, out, rtol=1e-5, atol=1e-6)
    ref_losses = json.loads((reference / "training.json").read_text())["losses"]
    assert json.loads((out / "training.json").read_text())["losses"] == pytest.approx(ref_losses, rel=1e-5)


def _lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().splitlines() if line.endswith("}")]
    except FileNotFoundError:
        return []


def test_torchrun_two_processes_equal_one_with_the_same_effective_batch(small_shapes, tiny_model_dir, tmp_path):
    ann, images = small_shapes
    common = ("--steps", "3", "--batch-size", "4", "--no-dropout")
    single = tmp_path / "single"
    one = run_cli(train_args(ann, images, tiny_model_dir, single, *common), module="backend.train")
    assert one.returncode == 0, one.stderr[-3000:]

    out = tmp_path / "two"
    two = run_torchrun("backend.train", train_args(ann, images, tiny_model_dir, out, *common), env(), timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    report = json.loads((out / "training.json").read_text())
    assert report["world_size"] == 2
    assert report["losses"] == pytest.approx(json.loads((single / "training.json").read_text())["losses"], rel=1e-4)
    # the same gradients, summed in another order: Adam's first steps amplify float noise a little
    assert_same_weights(single, out, rtol=1e-4, atol=1e-5)
