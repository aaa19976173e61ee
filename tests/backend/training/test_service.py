"""Start Training: the webhook starts one background training run per backend, shown on the status page."""
from __future__ import annotations

import threading

from backend.settings import Settings
from labelstudio.target import LabelStudioTarget
from backend.training.job import JobProgress
from backend.training.service import TrainingRefused, TrainingService
from tests.label_studio_requests import ls_body
from tests.waiting import wait_until


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
    """The newest run of `service` once it is in `state`."""
    return wait_until(lambda: [row.model_dump() for row in service.status()], f"the newest run {state}", timeout,
                      0.02, holds=lambda runs: runs and runs[0]["state"] == state)[0]


def test_one_training_run_at_a_time_with_progress_and_cancel():
    jobs = []

    def factory(project_id, label_config, access):
        jobs.append(StandInJob())
        return jobs[-1], "tiny-abc123"

    served = []
    service = TrainingService(Settings(), factory,
                              served_version=lambda project, config: served.append(project) or "ft-20260101-x1")
    project = {"id": 3, "label_config": ls_body("setup")["schema"]}
    run = service.start(project, LabelStudioTarget())
    running = wait_state(service, "running")
    assert (running["done"], running["total"], running["kind"], running["unit"]) == (3, 10, "training", "steps")
    assert "loss 0.500" in running["message"] and running["project"] == "3"
    assert running["model_version"] == ""  # it has produced nothing yet (the status page shows "—")
    try:
        service.start(project, LabelStudioTarget())
        raise AssertionError("a second run started")
    except TrainingRefused as exc:
        assert "already in progress" in str(exc) and run.id in str(exc)
    jobs[0].release.set()
    done = wait_state(service, "done")
    # the row names the version the run produced (what serves the project now), not the one it started from
    assert done["model_version"] == "ft-20260101-x1" and served == ["3"]
    assert done["message"] == ("thresholds learned for 1 of 2 labels (Cat); the project is served as "
                               "ft-20260101-x1")
    service.start(project, LabelStudioTarget())
    assert service.cancel("3")
    cancelled = wait_state(service, "cancelled")
    assert cancelled["message"] == "cancelled: nothing changed (still served as tiny-abc123)"
    assert cancelled["model_version"] == "tiny-abc123" and served == ["3"]  # not asked again: nothing changed


def test_a_training_row_counts_steps_and_estimates_from_the_timed_steps():
    """Rate and ETA from the training steps only (reading and scoring the project left out), in steps/min."""
    from backend.progress_text import format_rate
    from backend.training.service import TrainingRun

    run = TrainingRun("train-1", "3", "", state="running", phase="training", step=25, total=200,
                      plan="fine-tuning 200 steps at 512 px on the CPU", started_at=1000.0,
                      first_step=(5, 1100.0), last_step_at=1140.0)  # 20 steps in 40 s: 0.5 steps/s
    row = run.snapshot().model_dump()
    assert (row["rate_per_s"], row["eta_s"], row["unit"]) == (0.5, 350.0, "steps")
    assert format_rate(row["rate_per_s"], row["unit"]) == "30.0 steps/min"
    assert row["message"] == ("training; fine-tuning takes about 6 min 40 s for 200 steps; about "
                              "5 min 50 s left (timed over 20 steps); fine-tuning 200 steps at 512 px on the CPU")


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


EVIDENCE = dict(reviewed_boxes=30, precision=None, recall=0.0, tp=0, fp=0, fn=30, work_saved=0.0)


def all_off(model, version, labels=("Cat", "RC", "TrafficLight")):
    """Thresholds of 1.01 for every label, learned on ``model``: that model shows nothing."""
    from backend.training.thresholds import LEARNED, LabelThreshold, LearnedThresholds

    return LearnedThresholds(project="8", model_version=version, reviewed_tasks=30, min_reviewed_boxes=20, model=model,
                             labels={l: LabelThreshold(threshold=1.01, configured=0.3, source=LEARNED, **EVIDENCE)
                                     for l in labels})


def test_an_adopted_model_predicts_with_its_own_thresholds_never_the_base_models(make_client, media_root, tmp_path):
    """The issue's case: the base model's thresholds would be 1.00 for every label; the adopted fine-tuned
    model gets boxes, exactly those of its own scores that reach its own thresholds."""
    from backend.training.store import ProjectStore, TrainedModel
    from backend.training.thresholds import LEARNED, HELDOUT, LabelThreshold, LearnedThresholds
    from tests.model_factory import build_tiny_model

    state = tmp_path / "state"
    store = ProjectStore(state)
    config = ls_body("setup")["schema"]
    task = [{"id": 1, "data": {"image": "/data/local-files/?d=a.jpg"}}]
    tuned = build_tiny_model(store.models_dir("8") / "ft-20260101-000000", seed=1)
    model = TrainedModel(model_dir=str(tuned), base_model="tiny", ap_before=0.0, ap_after=0.1, ap50_before=0.0,
                         ap50_after=0.2, not_worse=True, train_tasks=24, heldout_tasks=6)
    client = make_client(STATE_DIR=state, LOCAL_FILES_DOCUMENT_ROOT=media_root)
    base_model = client.predictor.settings.model
    # Reference: the fine-tuned model's own boxes at the configured threshold (project 11: no thresholds).
    store.save_model("11", TrainedModel(**{**model.__dict__}))
    (ref,) = client.post("/predict", json={"tasks": task, "label_config": config, "project": "11.1"}).json()["results"]
    cat_scores = sorted(r["score"] for r in ref["result"] if r["value"]["rectanglelabels"][0] == "Cat")
    assert len(cat_scores) >= 2 and ref["result"], "the check needs two Cat boxes of the fine-tuned model"
    own_cat = cat_scores[-2]  # its own Cat threshold keeps its two best Cat boxes
    expected = [r["value"] for r in ref["result"]
                if r["value"]["rectanglelabels"][0] != "Cat" or r["score"] >= own_cat]

    base_version = client.post("/setup", json={"project": "8.1", "schema": config}).json()["model_version"]
    store.save_thresholds(all_off(base_model, base_version))
    (base_item,) = client.post("/predict", json={"tasks": task, "label_config": config, "project": "8.1"}).json()["results"]
    assert base_item["result"] == []  # the base model at its own thresholds of 1.01
    (status,) = [p for p in client.get("/status").json()["projects"] if p["project"] == "8"]
    assert status["learned"][0] == "Cat: pre-labels off — its boxes cost more than they save"

    own = LearnedThresholds(project="8", model_version="", reviewed_tasks=6, min_reviewed_boxes=20, model=str(tuned),
                            evidence=HELDOUT, labels={"Cat": LabelThreshold(threshold=own_cat, configured=0.3,
                                                                           source=LEARNED, **EVIDENCE)})
    store.commit("8", [own], model)
    (item,) = client.post("/predict", json={"tasks": task, "label_config": config, "project": "8.1"}).json()["results"]
    assert item["model_version"].startswith("ft-20260101-000000-")
    assert [r["value"] for r in item["result"]] == expected and expected
    # The fine-tuned model's thresholds are its own: the base model never gets them (model.json gone).
    (state / "projects" / "8" / "model.json").unlink()
    (again,) = client.post("/predict", json={"tasks": task, "label_config": config, "project": "8.1"}).json()["results"]
    assert again["model_version"] == base_item["model_version"] and again["result"] == []


class CommittingJob:
    """TrainingJob's interface: at its end commits a fine-tuned model with its own thresholds (as the real job
    does, ProjectStore.commit) — or, cancelled, raises before committing anything."""

    def __init__(self, project_id, snapshot_source, model_version, configured, fetch_image, config,
                 served_model=None, served_thresholds=None):
        self.project, self.config = str(project_id), config
        self.wait_for_cancel = CommittingJob.wait_for_cancel_next

    wait_for_cancel_next = False

    def run(self, cancel, progress):
        from backend.training.errors import TrainingCancelled
        from backend.training.job import TrainingResult
        from backend.training.store import ProjectStore, TrainedModel
        from backend.training.thresholds import LearnedThresholds
        from tests.model_factory import build_tiny_model

        progress(JobProgress("training", step=1, total=2))
        if self.wait_for_cancel:
            if not cancel.wait(30):
                raise AssertionError("never cancelled")
            raise TrainingCancelled("cancelled")
        store = ProjectStore(self.config.state_dir)
        tuned = build_tiny_model(store.models_dir(self.project) / "ft-20260102-000000", seed=1)
        model = TrainedModel(model_dir=str(tuned), base_model="tiny", ap_before=0.00014, ap_after=0.0015,
                             ap50_before=0.0, ap50_after=0.01, not_worse=True, train_tasks=24, heldout_tasks=6)
        own = LearnedThresholds(project=self.project, model_version="", labels={}, reviewed_tasks=6,
                                min_reviewed_boxes=20, model=str(tuned))
        result = TrainingResult(self.project, LearnedThresholds(project=self.project, model_version="", labels={},
                                                                reviewed_tasks=0, min_reviewed_boxes=20),
                                model=model, model_thresholds=own, adopted=True)
        store.commit(self.project, [own], model)
        return result


def test_after_start_training_adopts_a_model_retrieve_predictions_gets_its_boxes(make_client, media_root, tmp_path,
                                                                               monkeypatch):
    """Through the webhook: a cancelled run changes nothing (same version, same boxes); a finished one's row
    names the version /predict stamps from then on, and its boxes are the fine-tuned model's, not empty."""
    import backend.training.service as job_module  # where the factory looks TrainingJob up

    monkeypatch.setattr(job_module, "TrainingJob", CommittingJob)
    config = ls_body("setup")["schema"]
    task = [{"id": 1, "data": {"image": "/data/local-files/?d=a.jpg"}}]
    state = tmp_path / "state"
    client = make_client(STATE_DIR=state, LOCAL_FILES_DOCUMENT_ROOT=media_root, LABEL_STUDIO_URL="http://ls.invalid",
                         LABEL_STUDIO_API_KEY="key")
    base_model = client.predictor.settings.model
    base_version = client.post("/setup", json={"project": "8.1", "schema": config}).json()["model_version"]
    from backend.training.store import ProjectStore

    ProjectStore(state).save_thresholds(all_off(base_model, base_version))
    predict = {"tasks": task, "label_config": config, "project": "8.1"}
    (before,) = client.post("/predict", json=predict).json()["results"]
    start = {"action": "START_TRAINING", "project": {"id": 8, "label_config": config}}

    def newest_run():
        return [j for j in client.get("/status").json()["jobs"] if j.get("kind") == "training"][:1]

    def finished(state_name):
        (row,) = wait_until(newest_run, f"the training run {state_name}", 60,
                            holds=lambda rows: rows[0]["state"] == state_name)
        return row

    CommittingJob.wait_for_cancel_next = True
    assert client.post("/webhook", json=start).status_code == 200
    assert client.post("/training/cancel", params={"project": "8"}).status_code == 200
    row = finished("cancelled")
    # what training keeps (project.json is the backend's record of the versions it served, not training's)
    state_files = sorted(p.relative_to(state).as_posix() for p in state.rglob("*")
                         if p.is_file() and p.name != "project.json")
    assert state_files == ["projects/8/thresholds.json"]
    assert row["model_version"] == before["model_version"]  # the base model with its thresholds, as before
    (same,) = client.post("/predict", json=predict).json()["results"]
    assert same == before and same["result"] == []

    CommittingJob.wait_for_cancel_next = False
    assert client.post("/webhook", json=start).status_code == 200
    row = finished("done")
    (after,) = client.post("/predict", json=predict).json()["results"]
    assert row["model_version"] == after["model_version"] != before["model_version"]
    assert after["model_version"].startswith("ft-20260102-000000-") and after["result"]
    assert "fine-tuned model ft-20260102-000000: held-out AP 0.01 -> 0.15, AP50 0.0 -> 1.0; now serving" in row["message"]
    assert row["message"].endswith(f"the project is served as {after['model_version']}")
