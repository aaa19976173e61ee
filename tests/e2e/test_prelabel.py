"""`python -m backend.prelabel` against the real Label Studio: predicts what is missing, imports it,
skips what a previous (killed or finished) run imported, and reports failures by task."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.e2e.ls_harness import ARTIFACTS, ROOT
from tests.e2e.ls_user import (
    E2E_BOX_THRESHOLD, backend_setup_version, create_project, import_tasks, make_image, predictions_of,
    task_ids, upload_images,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def run_prelabel(project: int, label_studio, model_dir, log_name: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS")}
    env.update(
        LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.token,
        GROUNDING_DINO_MODEL=str(model_dir), DEVICE="cpu", BATCH_SIZE="2", BOX_THRESHOLD=E2E_BOX_THRESHOLD,
        HF_HUB_OFFLINE="1",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "backend.prelabel", "--project", str(project),
         "--batch-size", "2", "--page-size", "2", "--import-chunk", "2"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    (ARTIFACTS / log_name).write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    return proc


def counts(stdout: str) -> dict[str, int]:
    return {key: int(re.search(rf"^{key}\D*(\d+)", stdout, re.M).group(1)) for key in ("predicted", "skipped", "failed")}


def test_prelabel_twice_predicts_each_task_once_and_reports_failures(
        ls_client, ls_api, label_studio, tiny_model_dir, backend):
    project = create_project(ls_client, "E2E bulk prelabel")
    good = upload_images(ls_api, project, {f"bulk_{i}.png": make_image(40 + i) for i in range(5)})
    import_tasks(ls_api, project, [{"image": f"/data/upload/{project}/vanished.png"}])
    missing = sorted(set(task_ids(ls_api, project)) - set(good))
    version = backend_setup_version(backend)  # same model and threshold as the command below

    # a run killed after its first import chunk left one task predicted with this version
    ls_client.predictions.create(task=good[0], model_version=version, score=0.5, result=[])

    first = run_prelabel(project, label_studio, tiny_model_dir, "prelabel-run1.log")
    assert first.returncode == 1, first.stderr[-3000:]  # one task failed
    assert counts(first.stdout) == {"predicted": 4, "skipped": 1, "failed": 1}, first.stdout
    assert f"task {missing[0]}:" in first.stdout
    assert "vanished.png" in first.stdout  # the reason names what went wrong

    boxes = 0
    for task in good:
        preds = predictions_of(ls_api, task)
        assert len(preds) == 1 and preds[0]["model_version"] == version, (task, preds)
        boxes += len(preds[0]["result"])
        for region in preds[0]["result"]:
            assert region["value"]["rectanglelabels"][0] in {"Cat", "RC", "TrafficLight"}
    assert boxes > 0
    assert predictions_of(ls_api, missing[0]) == []

    second = run_prelabel(project, label_studio, tiny_model_dir, "prelabel-run2.log")
    assert counts(second.stdout) == {"predicted": 0, "skipped": 5, "failed": 1}, second.stdout
    for task in good:
        assert len(predictions_of(ls_api, task)) == 1
