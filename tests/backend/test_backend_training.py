"""Start Training: the webhook starts one background training run per backend, shown on the status page."""
from __future__ import annotations

import threading
import time

from backend.settings import Settings
from backend.app.state import LabelStudioAccess
from backend.training.job import JobProgress
from backend.training.service import TrainingRefused, TrainingService
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


def test_a_project_with_an_adopted_fine_tuned_model_is_served_by_it(make_client, media_root, tmp_path):
    """What Start Training adopts (STATE_DIR/projects/<id>/model.json) serves that project, and only it."""
    from backend.training.store import ProjectStore, TrainedModel
    from tests.model_factory import build_tiny_model

    tuned = build_tiny_model(tmp_path / "ft-2026-12-01", seed=1)  # other weights: other boxes
    state = tmp_path / "state"
    ProjectStore(state).save_model("8", TrainedModel(
        model_dir=str(tuned), base_model="tiny", ap_before=0.1, ap_after=0.3, ap50_before=0.2, ap50_after=0.5,
        not_worse=True, train_tasks=80, heldout_tasks=20))
    client = make_client(STATE_DIR=state, LOCAL_FILES_DOCUMENT_ROOT=media_root)
    config = ls_body("setup")["schema"]
    tuned_version = client.post("/setup", json={"project": "8.1", "schema": config}).json()["model_version"]
    base_version = client.post("/setup", json={"project": "9.1", "schema": config}).json()["model_version"]
    assert tuned_version.startswith("ft-2026-12-01-") and base_version.startswith("tiny-grounding-dino-")
    task = [{"id": 1, "data": {"image": "/data/local-files/?d=a.jpg"}}]
    (tuned_item,) = client.post("/predict", json={"tasks": task, "label_config": config, "project": "8.1"}).json()["results"]
    (base_item,) = client.post("/predict", json={"tasks": task, "label_config": config, "project": "9.1"}).json()["results"]
    assert tuned_item["model_version"] == tuned_version and base_item["model_version"] == base_version
    assert [r["value"] for r in tuned_item["result"]] != [r["value"] for r in base_item["result"]]
    # A record naming a model that is gone: said on the status page, the base model serves the project.
    ProjectStore(state).save_model("10", TrainedModel(
        model_dir=str(tmp_path / "gone"), base_model="tiny", ap_before=None, ap_after=None, ap50_before=None,
        ap50_after=None, not_worse=True, train_tasks=1, heldout_tasks=0))
    assert client.post("/setup", json={"project": "10.1", "schema": config}).json()["model_version"] == base_version
    assert any("gone" in w for w in client.get("/status").json()["model"]["warnings"])


def test_learned_thresholds_hold_each_label_to_its_own_and_name_a_new_version(make_client, media_root, tmp_path):
    """Start Training's per-label thresholds (STATE_DIR) apply to that project only: a Cat threshold of 1.01
    removes every Cat box and nothing else, the version changes, and the status page shows the evidence."""
    from backend.training.store import ProjectStore
    from backend.training.thresholds import LEARNED, LabelThreshold, LearnedThresholds

    config = ls_body("setup")["schema"]
    task = [{"id": 1, "data": {"image": "/data/local-files/?d=a.jpg"}}]
    client = make_client(STATE_DIR=tmp_path, LOCAL_FILES_DOCUMENT_ROOT=media_root)
    base_version = client.post("/setup", json={"project": "9.1", "schema": config}).json()["model_version"]
    (base,) = client.post("/predict", json={"tasks": task, "label_config": config, "project": "9.1"}).json()["results"]
    labels = [r["value"]["rectanglelabels"][0] for r in base["result"]]
    assert "Cat" in labels and set(labels) - {"Cat"}, "the check needs Cat boxes and others on this image"

    evidence = dict(configured=0.3, reviewed_boxes=25, precision=0.9, recall=0.5, tp=9, fp=1, fn=9, work_saved=8.0)
    ProjectStore(tmp_path).save_thresholds(LearnedThresholds(
        project="8", model_version=base_version, reviewed_tasks=30, min_reviewed_boxes=20,
        labels={"Cat": LabelThreshold(threshold=1.01, source=LEARNED, **evidence)}))
    version = client.post("/setup", json={"project": "8.1", "schema": config}).json()["model_version"]
    assert version != base_version and version.startswith("tiny-grounding-dino-")
    (held,) = client.post("/predict", json={"tasks": task, "label_config": config, "project": "8.1"}).json()["results"]
    assert held["model_version"] == version
    assert [r["value"] for r in held["result"]] == [r["value"] for r in base["result"]
                                                     if r["value"]["rectanglelabels"][0] != "Cat"]
    (project,) = [p for p in client.get("/status").json()["projects"] if p["project"] == "8"]
    assert any("Cat: 1.01" in line and "25 reviewed boxes" in line for line in project["learned"]), project["learned"]
