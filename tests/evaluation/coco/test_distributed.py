"""torchrun with 2 CPU processes (gloo): sharded, each rank its own file, merged = single process."""
from __future__ import annotations

import json

import pytest

from tests.evaluation.coco.command_line import cli_args, env, run_cli
from tests.evaluation.coco.drawn_dataset import make_dataset
from tests.torchrun import run_torchrun

pytestmark = pytest.mark.slow


def test_two_processes_equal_one(tmp_path, fast_model_dir):
    ann, images = make_dataset(tmp_path / "data", num_images=5)
    single = tmp_path / "single"
    one = run_cli(cli_args(ann, images, fast_model_dir, single))
    assert one.returncode == 0, one.stderr
    out = tmp_path / "dist"
    two = run_torchrun("evaluation.coco", cli_args(ann, images, fast_model_dir, out), env(), timeout=240)
    assert two.returncode == 0, two.stderr[-3000:]
    assert (out / "detections.json").read_bytes() == (single / "detections.json").read_bytes()
    shards = sorted(p.name for p in (out / "partial").glob("*.jsonl"))
    assert shards == ["rank000-of-002.jsonl", "rank001-of-002.jsonl"]
    ids = sorted(im["id"] for im in json.loads(ann.read_text())["images"])
    for rank, name in enumerate(shards):  # rank r took images[r::2]
        got = [json.loads(line)["image_id"] for line in (out / "partial" / name).read_text().splitlines()]
        assert got == ids[rank::2]
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (single, out))
    assert m2["config"]["world_size"] == 2 and m1["AP"] == m2["AP"]
    assert two.stdout.count("Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all") == 1  # scored once
