"""Start Training: the webhook starts one background training run per backend, shown on the status page."""
from __future__ import annotations

import threading
import time

from backend.settings import Settings
from backend.state import LabelStudioAccess
from backend.training.job import JobProgress
from backend.training_service import TrainingRefused, TrainingService
from tests.backend.backend_helpers import ls_body


class StandInJob:
    """TrainingJob's interface: reports progress, waits to be released or cancelled."""

    def __init__(self):
        self.release = threading.Event()

    def run(self, cancel, progress):
        from backend.training.errors import TrainingCancelled

        progress(JobProgress("training", step=3, total=10, loss=0.5))
        while not self.release.wait(0.02):
            if cancel.is_set():
                raise TrainingCancelled("cancelled")

        class Result:
            def summary(self):
                return "thresholds learned for 1 of 2 labels (Cat)"

        return Result()


def wait_state(service, state, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = service.status()
        if runs and runs[0]["state"] == state:
            return runs[0]
        time.sleep(0.02)
    raise AssertionError(service.status())


def test_one_training_run_at_a_time_with_progress_and_cancel():
    jobs = []

    def factory(project_id, label_config, access):
        jobs.append(StandInJob())
        return jobs[-1], "tiny-abc123"

    service = TrainingService(Settings(), factory)
    project = {"id": 3, "label_config": ls_body("setup")["schema"]}
    run = service.start(project, LabelStudioAccess())
    running = wait_state(service, "running")
    assert (running["done"], running["total"], running["kind"]) == (3, 10, "training")
    assert "loss 0.500" in running["message"] and running["project"] == "3"
    try:
        service.start(project, LabelStudioAccess())
        raise AssertionError("a second run started")
    except TrainingRefused as exc:
        assert "already in progress" in str(exc) and run.id in str(exc)
    jobs[0].release.set()
    done = wait_state(service, "done")
    assert done["message"] == "thresholds learned for 1 of 2 labels (Cat)"
    service.start(project, LabelStudioAccess())
    assert service.cancel("3")
    assert wait_state(service, "cancelled")["message"] == "cancelled"


def test_start_training_without_label_studio_credentials_is_refused_with_what_to_set(make_client):
    client = make_client()
    body = {"action": "START_TRAINING", "project": {"id": 4, "label_config": ls_body("setup")["schema"]}}
    response = client.post("/webhook", json=body)
    assert response.status_code == 422
    assert "LABEL_STUDIO_URL" in response.json()["detail"] and "LABEL_STUDIO_API_KEY" in response.json()["detail"]
    # other project events are acknowledged at once, as before
    assert client.post("/webhook", json={"action": "ANNOTATION_CREATED"}).json()["status"] == "ok"
