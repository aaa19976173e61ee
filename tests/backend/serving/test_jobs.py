"""Retrieve Predictions larger than one answer: /predict answers before Label Studio's deadline, the rest
is finished in a background job and imported through the API, nothing predicted or stored twice.

The model is the tiny one slowed down to a known time per batch; Label Studio's import API is a stand-in
that records every prediction it is given (the real Label Studio is exercised in tests/e2e).
"""
from __future__ import annotations

import threading
import time

import pytest

from labelstudio.importer import ImportOutcome, PredictionImportError
from tests.label_studio_requests import ls_body
from tests.backend.background_jobs import CONFIG, GatedDetector, post, tasks, wait_for_jobs

class StandInImports:
    """Label Studio's import endpoint: records each task stored; can refuse the key; knows what is stored."""

    def __init__(self):
        self.stored: dict = {}  # task id -> list of predictions
        self.refuse: str | None = None
        self.lock = threading.Lock()
        self.connections: list[tuple] = []

    def factory(self, url, api_key, project, timeout):
        self.connections.append((url, api_key, project))
        return self

    def import_items(self, items, version):
        with self.lock:
            if self.refuse:
                raise PredictionImportError(self.refuse)
            already = [i["task"] for i in items if any(p["model_version"] == version for p in self.stored.get(i["task"], []))]
            fresh = [i for i in items if i["task"] not in already]
            for item in fresh:
                self.stored.setdefault(item["task"], []).append(item)
            return ImportOutcome(imported=[i["task"] for i in fresh], already=already)


def without_ids(regions):
    """Region ids are made from the task id; everything else must be equal."""
    return [{k: v for k, v in r.items() if k != "id"} for r in regions]


@pytest.fixture
def slow(tiny_detector):
    detector = GatedDetector(tiny_detector)
    yield detector
    detector.released.set()


@pytest.fixture
def imports():
    return StandInImports()


@pytest.fixture
def reference(make_client, media_root):
    """Each task's prediction computed directly (no deadline, no job)."""
    client = make_client(LOCAL_FILES_DOCUMENT_ROOT=media_root)
    (item,) = client.predictor.predict_tasks(tasks(1), CONFIG)
    return item


def make(make_client, slow, imports, media_root, timeout=10, **env):
    env = {"LOCAL_FILES_DOCUMENT_ROOT": media_root, "ML_TIMEOUT_PREDICT": timeout,
           "LABEL_STUDIO_URL": "http://label-studio.test:8080", "LABEL_STUDIO_API_KEY": "the-key", **env}
    return make_client(detector=slow, importer_factory=imports.factory, **env)


@pytest.mark.slow
def test_answers_before_the_deadline_and_imports_the_rest(make_client, slow, imports, media_root, reference):
    client = make(make_client, slow, imports, media_root)  # ML_TIMEOUT_PREDICT=10 -> answer by 8 s
    started = time.monotonic()
    results = post(client, tasks(10))  # task 1 goes through; task 2 is held in the model past the deadline
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"/predict took {elapsed:.1f} s; Label Studio gives up after ML_TIMEOUT_PREDICT=10 s"
    assert results[0] == reference, "a finished task is answered with exactly the direct prediction"
    assert results[1:] == [[]] * 9, "the others are answered with no prediction (nothing stored, no error)"
    running = client.get("/status").json()["jobs"]
    assert running[0]["state"] == "running" and running[0]["answered"] == 1 and running[0]["total"] == 10
    slow.released.set()
    (job,) = wait_for_jobs(client)
    assert job["state"] == "done" and job["done"] == 10 and job["imported"] == 9
    assert sorted(imports.stored) == list(range(2, 11)), "the rest, and only the rest, is imported"
    for stored in imports.stored.values():
        assert len(stored) == 1
        assert without_ids(stored[0]["result"]) == without_ids(reference["result"])
        assert stored[0]["model_version"] == reference["model_version"]
    assert imports.connections == [("http://label-studio.test:8080", "the-key", 7)]
    # Label Studio chose a click's tasks before our import landed and sends them now: already stored, so
    # they are answered with no prediction and not run again.
    calls = slow.calls
    assert post(client, tasks(9, start=2)) == [[]] * 9
    assert slow.calls == calls and all(len(v) == 1 for v in imports.stored.values())


@pytest.mark.slow
def test_a_second_click_while_the_job_runs_adds_no_duplicate(make_client, slow, imports, media_root):
    client = make(make_client, slow, imports, media_root)
    first = post(client, tasks(8))
    assert "result" in first[0] and first[1:] == [[]] * 7
    # Label Studio sends again every task without a prediction of this version: the ones in the job.
    started = time.monotonic()
    second = post(client, tasks(7, start=2))
    assert second == [[]] * 7, "tasks already queued or running are not predicted again"
    assert time.monotonic() - started < 3, "nothing new to wait for: answered at once"
    slow.released.set()
    wait_for_jobs(client)
    assert sorted(imports.stored) == list(range(2, 9))
    assert all(len(v) == 1 for v in imports.stored.values())
    assert slow.calls == 8, f"each task went through the model once, not {slow.calls} times"


@pytest.mark.slow
def test_without_a_key_the_rest_is_left_for_the_next_click_and_the_status_says_why(make_client, slow, imports,
                                                                                   media_root):
    client = make(make_client, slow, imports, media_root, LABEL_STUDIO_URL="", LABEL_STUDIO_API_KEY="")
    first = post(client, tasks(8))
    assert "result" in first[0] and first[1:] == [[]] * 7
    slow.released.set()
    (job,) = wait_for_jobs(client)
    assert not imports.stored and job["dropped"] == 7, job
    assert "LABEL_STUDIO_API_KEY" in job["message"] and "next Retrieve Predictions" in job["message"]
    # The next click predicts what was left (not refused as "already queued").
    (second,) = post(client, tasks(1, start=2))
    assert "result" in second, second


@pytest.mark.slow
def test_a_refused_import_is_shown_and_the_next_click_continues(make_client, slow, imports, media_root):
    imports.refuse = ("Label Studio at http://label-studio.test:8080 refused the API key (HTTP 401): set "
                      "LABEL_STUDIO_API_KEY to a valid access token of a user of this project")
    client = make(make_client, slow, imports, media_root)
    first = post(client, tasks(8))
    assert "result" in first[0] and first[1:] == [[]] * 7
    slow.released.set()
    (job,) = wait_for_jobs(client)
    assert job["state"] == "failed" and job["message"] == imports.refuse and job["imported"] == 0
    assert not imports.stored
    imports.refuse = None  # the user fixed the key
    rest = tasks(7, start=2)
    second = post(client, rest)
    answered_now = {t["id"] for t, r in zip(rest, second) if r != []}
    assert all("result" in r for r in second if r != [])
    jobs = wait_for_jobs(client)
    assert jobs[0]["state"] == "done", jobs
    assert set(imports.stored) == set(range(2, 9)) - answered_now
    assert all(len(v) == 1 for v in imports.stored.values())


@pytest.mark.slow
def test_interactive_requests_do_not_wait_behind_a_background_job(make_client, tiny_detector, imports, media_root):
    background = GatedDetector(tiny_detector, free=10**9, seconds=0.3)
    client = make(make_client, background, imports, media_root, ML_TIMEOUT_PREDICT=2)
    post(client, tasks(30))  # answers after 0.5 s; ~29 x 0.3 s remain in the background
    before = client.get("/status").json()["jobs"][0]["done"]
    body = ls_body("predict-interactive")
    body["tasks"][0]["data"]["image"] = "/data/local-files/?d=a.jpg"
    response = client.post("/predict", json=body)
    (item,) = response.json()["results"]
    assert "result" in item and item["result"], item
    after = client.get("/status").json()["jobs"][0]
    # It took the model after at most the batch in flight (and one more while it decoded its image),
    # not after the job's queue.
    assert after["done"] - before <= 2 and after["state"] == "running", (before, after)
    wait_for_jobs(client)


@pytest.mark.slow
def test_a_task_with_one_broken_image_of_two_keeps_the_other_images_boxes(make_client, media_root, reference):
    two_images = (
        '<View><Image name="left" value="$left"/><Image name="right" value="$right"/>'
        '<RectangleLabels name="l1" toName="left"><Label value="Cat" predicted_values="cat, kitten"/></RectangleLabels>'
        '<RectangleLabels name="l2" toName="right"><Label value="Cat" predicted_values="cat, kitten"/></RectangleLabels>'
        "</View>"
    )
    client = make_client(LOCAL_FILES_DOCUMENT_ROOT=media_root)
    task = {"id": 5, "data": {"left": "/data/local-files/?d=a.jpg", "right": "/data/local-files/?d=missing.jpg"}}
    response = client.post("/predict", json={"tasks": [task], "label_config": two_images, "project": "9.1"})
    (item,) = response.json()["results"]
    assert "result" in item and item["result"], item
    assert {r["to_name"] for r in item["result"]} == {"left"}
    failures = client.get("/status").json()["failures"]
    assert failures and failures[0]["task"] == 5 and "right" in failures[0]["reason"], failures
