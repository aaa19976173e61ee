"""The tcmalloc lever (runtime/allocator.py): found where installed, detected when preloaded, same outputs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from runtime.allocator import active_allocator, cpu_allocator_hint, find_tcmalloc

ROOT = Path(__file__).resolve().parents[2]


def test_active_allocator_reads_the_process_maps(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert active_allocator(maps) == "glibc malloc"
    maps.write_text(maps.read_text() + "7f02-7f03 r-xp 0 08:01 2 /usr/local/lib/libtcmalloc_minimal.so.4\n")
    assert active_allocator(maps) == "tcmalloc"
    assert active_allocator(tmp_path / "missing") == "unknown"


def test_hint_only_for_a_cpu_run_on_glibc(monkeypatch):
    import runtime.allocator as allocator

    monkeypatch.setattr(allocator, "active_allocator", lambda: "glibc malloc")
    monkeypatch.setattr(allocator, "find_tcmalloc", lambda: "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
    assert "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4" in cpu_allocator_hint("cpu")
    assert cpu_allocator_hint("cuda") is None
    monkeypatch.setattr(allocator, "find_tcmalloc", lambda: None)
    assert "apt-get install libtcmalloc-minimal4" in cpu_allocator_hint("cpu")
    monkeypatch.setattr(allocator, "active_allocator", lambda: "tcmalloc")
    assert cpu_allocator_hint("cpu") is None


FORWARD = """
import sys, torch
from runtime.allocator import active_allocator
from detection import Detector, DetectorConfig
from PIL import Image
import numpy as np
det = Detector.load(DetectorConfig(model=sys.argv[1], device="cpu"))
image = Image.fromarray((np.random.RandomState(0).rand(480, 640, 3) * 255).astype(np.uint8))
logits, boxes = det.forward([image], det.prompt(["person", "car", "traffic light"]).chunks[0])
torch.save({"allocator": active_allocator(), "logits": logits, "boxes": boxes}, sys.argv[2])
"""


def _forward_in_process(model_dir, out, preload):
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    if preload:
        env["LD_PRELOAD"] = preload
    env["PYTHONPATH"] = str(ROOT)
    subprocess.run([sys.executable, "-c", FORWARD, str(model_dir), str(out)], env=env, check=True, cwd=ROOT, timeout=300)
    return torch.load(out)


def test_model_on_tcmalloc_gives_the_same_outputs(tiny_model_dir, tmp_path):
    path = find_tcmalloc()
    if path is None:
        pytest.skip("libtcmalloc-minimal4 is not installed (make test installs it)")
    plain = _forward_in_process(tiny_model_dir, tmp_path / "glibc.pt", None)
    fast = _forward_in_process(tiny_model_dir, tmp_path / "tcmalloc.pt", path)
    assert plain["allocator"] == "glibc malloc"
    assert fast["allocator"] == "tcmalloc"
    assert torch.equal(plain["logits"], fast["logits"]) and torch.equal(plain["boxes"], fast["boxes"])
