"""One Retrieve Predictions click on more tasks than fit in one answer, against the real Label Studio.

Label Studio and the backend both run with ML_TIMEOUT_PREDICT=10 (tests/e2e/ls_harness.py): the backend
answers after ~8 s with what it finished and imports the rest through Label Studio's API.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.e2e.ls_harness import ARTIFACTS, ML_TIMEOUT_PREDICT, ROOT, start_backend, stop
from tests.e2e.ls_user import (
    E2E_BOX_THRESHOLD, create_project, import_tasks, make_image, retrieve_predictions, task_ids, upload_images,
    versions_stored, wait_until_jobs_finish,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TASKS = 100  # more than one answer carries (~8 s of the tiny model) even on a fast, idle machine


def project_of_many_tasks(ls_client, ls_api, title: str, n: int = TASKS) -> tuple[int, list[int]]:
    """One uploaded image behind `n` tasks (what a big import of the same camera frame looks like)."""
    project = create_project(ls_client, title)
    (first,) = upload_images(ls_api, project, {"frame.png": make_image(7, (320, 240))})
    url = ls_api.get(f"/api/tasks/{first}").json()["data"]["image"]
    import_tasks(ls_api, project, [{"image": url} for _ in range(n - 1)])
    ids = task_ids(ls_api, project)
    assert len(ids) == n
    return project, ids


@pytest.fixture(scope="module")
def deadline_backend(tiny_model_dir, label_studio):
    url, proc, log = start_backend(tiny_model_dir, label_studio, "backend-deadline.log",
                                   {"BOX_THRESHOLD": E2E_BOX_THRESHOLD, "BATCH_SIZE": "1"})
    yield url, proc, log
    stop(proc)


def test_one_click_prelabels_every_task_exactly_once(ls_client, ls_api, label_studio, deadline_backend,
                                                    tiny_model_dir):
    url, _, log = deadline_backend
    project, ids = project_of_many_tasks(ls_client, ls_api, "E2E one click, many tasks")
    ls_client.ml.create(project=project, url=url, title="Grounding DINO", is_interactive=False)
    (record,) = [p for p in httpx.get(f"{url}/status", timeout=5).json()["projects"] if p["project"] == str(project)]
    version = record["model_versions"][-1]
    ls_log_start = label_studio.log.stat().st_size

    answer = retrieve_predictions(ls_api, project)  # Label Studio waits at most ML_TIMEOUT_PREDICT for us
    assert answer["processed_items"] == TASKS
    (job,) = [j for j in httpx.get(f"{url}/status", timeout=5).json()["jobs"] if j["project"] == str(project)]
    # (the background import may already be storing the rest: count what the answer carried)
    assert job["total"] == TASKS and 0 < job["answered"] < TASKS, ("the test needs more tasks than fit in one "
                                                                    "answer", job)

    # A second click while the job runs, and bulk pre-labelling at the same time: no duplicates.
    retrieve_predictions(ls_api, project)
    env = dict(os.environ, LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.token,
               GROUNDING_DINO_MODEL=str(tiny_model_dir), DEVICE="cpu", BOX_THRESHOLD=E2E_BOX_THRESHOLD,
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", ML_TIMEOUT_PREDICT=str(ML_TIMEOUT_PREDICT))
    bulk = subprocess.run([sys.executable, "-m", "backend.prelabel", "--project", str(project), "--no-progress"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    (ARTIFACTS / "prelabel-concurrent.log").write_text(bulk.stdout + bulk.stderr)
    assert bulk.returncode == 0, bulk.stderr[-2000:]

    jobs = wait_until_jobs_finish(url)
    stored = versions_stored(ls_api, ids)
    assert all(v == [version] for v in stored.values()), {t: v for t, v in stored.items() if v != [version]}
    job = [j for j in jobs if j["project"] == str(project)][0]
    assert job["imported"] >= 1, job
    new_ls_log = label_studio.log.read_text(errors="replace")[ls_log_start:]
    assert "Read timed out" not in new_ls_log and "read timeout" not in new_ls_log.lower()
    assert "incorrect prediction" not in new_ls_log, "deferred tasks are answered with [], not an error item"


def test_sigterm_with_a_job_in_flight_exits_within_seconds_and_the_restart_finishes_the_rest(
        ls_client, ls_api, label_studio, tiny_model_dir, tmp_path):
    env = {"BOX_THRESHOLD": E2E_BOX_THRESHOLD, "BATCH_SIZE": "1", "STATE_DIR": str(tmp_path / "state")}
    url, proc, log = start_backend(tiny_model_dir, label_studio, "backend-sigterm.log", env)
    try:
        project, ids = project_of_many_tasks(ls_client, ls_api, "E2E SIGTERM", n=TASKS)
        ls_client.ml.create(project=project, url=url, title="Grounding DINO", is_interactive=False)
        retrieve_predictions(ls_api, project)
        (job,) = httpx.get(f"{url}/status", timeout=5).json()["jobs"]
        assert job["state"] == "running", job
        version = job["model_version"]
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        took = time.monotonic() - started
        assert took < 10, f"SIGTERM took {took:.1f} s with a job in flight"
        # Nothing half-written: each task holds one prediction or none.
        before = versions_stored(ls_api, ids)
        assert all(len(v) <= 1 for v in before.values()), before
        left = [t for t, v in before.items() if not v]
        assert left, "the test needs tasks left unfinished by the stop"
    finally:
        stop(proc)

    # The restart (same STATE_DIR) resumes the kept tasks: each task ends with exactly one prediction.
    url, proc, log = start_backend(tiny_model_dir, label_studio, "backend-sigterm-restart.log", env)
    try:
        (job,) = wait_until_jobs_finish(url)
        assert job["state"] == "done" and job["project"] == str(project), job
        assert job["message"].startswith("resumed after a restart: "), job
        assert job["imported"] + job["already_stored"] == job["total"] >= len(left), (job, len(left))
        after = versions_stored(ls_api, ids)
        assert after == {t: [version] for t in ids}, {t: v for t, v in after.items() if v != [version]}
        assert version in httpx.get(f"{url}/versions", params={"project": project}, timeout=5).json()["versions"]
    finally:
        stop(proc)
