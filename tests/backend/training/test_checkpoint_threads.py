"""Checkpoint bookkeeping of a run directory, and the CPU thread rule."""
from __future__ import annotations

import pytest
import torch

from backend.training.checkpoint import Checkpoints
from backend.training.errors import TrainingError
from backend.training.threads import choose_threads


def test_a_checkpoint_of_other_settings_is_refused_then_discarded_with_no_resume(tmp_path):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    Checkpoints(tmp_path, {"lr": 1e-4, "seed": 0}).save(3, model, optimizer, [1.0, 0.5, 0.25])
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == ["state.pt"]  # no temporary file left

    same = Checkpoints(tmp_path, {"lr": 1e-4, "seed": 0})
    same.prepare(resume=True)
    state = same.load(map_location="cpu")
    assert state["step"] == 3 and state["losses"] == [1.0, 0.5, 0.25]
    torch.testing.assert_close(state["model"]["weight"], model.weight.detach())

    other = Checkpoints(tmp_path, {"lr": 2e-4, "seed": 0})
    with pytest.raises(TrainingError, match=r"other settings \(lr: 0.0001 then, 0.0002 now\).*--no-resume"):
        other.prepare(resume=True)
    other.prepare(resume=False)
    assert other.load(map_location="cpu") is None


def test_an_unreadable_checkpoint_says_to_start_over(tmp_path):
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="cannot be read: not a checkpoint .*--no-resume"):
        Checkpoints(tmp_path, {}).load(map_location="cpu")


@pytest.mark.parametrize("requested, device, world, env, load, expected", [
    (3, "cpu", 1, {}, 5.0, 3),               # asked for: given
    (None, "cuda", 1, {}, 5.0, None),        # a GPU does the work: torch's choice
    (None, "cpu", 1, {"OMP_NUM_THREADS": "2"}, 0.0, None),  # the user chose through the environment
    (None, "cpu", 1, {}, 1.3, 1),            # another process keeps a core busy: one thread
    (None, "cpu", 2, {}, 0.1, 4),            # idle: the cores shared by the processes
    (None, "cpu", 1, {}, 0.1, 8),
])
def test_threads(requested, device, world, env, load, expected):
    assert choose_threads(requested, device, world, environ=env, cpu_count=8, load=load) == expected


def test_zero_threads_is_refused():
    with pytest.raises(ValueError, match="--threads must be at least 1"):
        choose_threads(0, "cpu")
