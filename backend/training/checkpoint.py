"""Resumable training state in OUT/checkpoint/, guarded by a fingerprint of the settings it belongs to.

``state.pt`` holds the step reached, the model and optimizer state and the loss history. It is written
to a temporary file, fsynced and renamed over the old one, so a run killed at any moment (SIGKILL
included) finds either the previous checkpoint or the new one, never half of one. Because the batches
and the dropout noise of every step are functions of (seed, step) alone (``BatchSchedule``,
``step_seed``), a resumed run continues exactly as the uninterrupted run would have.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from evaluation.runner.store import describe_diff  # the evaluation's wording of "what differs"

from .errors import TrainingError

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.pt"
FINISHED_FILE = "training.json"
# What a run directory holds before its model is written (data/: a Label Studio project's export;
# progress.jsonl and train.log: written by the backend's training job).
RUN_ENTRIES = {CHECKPOINT_DIR, "heldout", "data", "progress.jsonl", "train.log"}


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of one step on one rank (dropout noise): the same on every resume."""
    return (seed * 1_000_003 + step * 8_191 + rank * 131) % (2**63 - 1)


class Checkpoints:
    def __init__(self, out: Path, fingerprint: dict):
        self.out = Path(out)
        self.dir = self.out / CHECKPOINT_DIR
        self.path = self.dir / STATE_FILE
        self.fingerprint = fingerprint

    def prepare(self, resume: bool) -> None:
        """Refuse to mix settings in one OUT or to write over a directory that is not a run; with
        ``resume=False`` start over. Rank 0 only."""
        finished = self.out / FINISHED_FILE
        if not resume:
            shutil.rmtree(self.dir, ignore_errors=True)
            finished.unlink(missing_ok=True)
            shutil.rmtree(self.out / "heldout", ignore_errors=True)
            return
        running = self._read_fingerprint()
        if running is not None:
            if running != self.fingerprint:
                raise TrainingError(f"{self.out} holds a training run with other settings "
                                    f"({describe_diff(running, self.fingerprint)}); "
                                    "use another --out, or --no-resume to discard it")
            return
        if finished.is_file():
            try:
                done = json.loads(finished.read_text()).get("fingerprint") or {}
            except json.JSONDecodeError:
                done = {}
            if done == self.fingerprint:
                raise TrainingError(f"{self.out} already holds a finished training run with these settings; "
                                    "use another --out, or --no-resume to train again from the start")
            raise TrainingError(f"{self.out} holds a finished training run with other settings "
                                f"({describe_diff(done, self.fingerprint)}); use another --out, or --no-resume to replace it")
        foreign = sorted(p.name for p in self.out.iterdir() if p.name not in RUN_ENTRIES) if self.out.is_dir() else []
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise TrainingError(f"{self.out} is not empty ({shown}) and holds no training run: give --out a new "
                                "directory (the fine-tuned model is written there)")

    def _read_fingerprint(self) -> dict | None:
        if not self.path.is_file():
            return None
        return self.load(map_location="cpu", check=False)["fingerprint"]

    def load(self, map_location, check: bool = True) -> dict | None:
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location=map_location, weights_only=True)
        except Exception as exc:  # a file this code did not write, or another torch's
            detail = " ".join(str(exc).split())[:120]
            raise TrainingError(f"{self.path} cannot be read: not a checkpoint this version wrote "
                                f"({type(exc).__name__}: {detail}...); use --no-resume to start over") from None
        if check and state.get("fingerprint") != self.fingerprint:
            raise TrainingError(f"{self.path} belongs to other settings; use --no-resume to start over")
        return state

    def save(self, step: int, model, optimizer, losses: list[float]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(STATE_FILE + ".tmp")
        state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "fingerprint": self.fingerprint, "losses": list(losses)}
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def discard(self) -> None:
        """After a finished run: the model directory is what matters, the optimizer state is 2x its size."""
        shutil.rmtree(self.dir, ignore_errors=True)
