"""One backend, several devices (backend/serving/devices.py): which devices, the least busy one for interactive
requests, and the background jobs spread over two model instances on the CPU standing in for two GPUs."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from backend.serving.devices import PredictorPool, device_names
from labelstudio.importer import PredictionImporter
from backend.serving.predictor import Predictor
from backend.app.server import create_app
from backend.settings import Settings, SettingsError
from tests.label_studio_requests import ls_body
from tests.backend.background_jobs import CONFIG, tasks, wait_for_jobs
from tests.backend.standin_label_studio import StandInLabelStudio

IMAGE = "/data/local-files/?d=a.jpg"  # the image of background_jobs.tasks


def without_ids(regions):
    """Region ids are made from the task id; everything else must be equal."""
    return [{k: v for k, v in r.items() if k != "id"} for r in regions]


@pytest.mark.parametrize("env, cuda_count, expected", [
    ({"DEVICES": "cuda:1,cuda:3"}, 4, ("cuda:1", "cuda:3")),
    ({"DEVICES": "cpu,cpu"}, 0, ("cpu", "cpu")),
    ({}, 2, ("cuda:0", "cuda:1")),  # DEVICE=auto: every visible GPU
    ({"DEVICE": "cuda"}, 3, ("cuda:0", "cuda:1", "cuda:2")),
    ({}, 1, ("auto",)),  # one GPU: as before
    ({"DEVICE": "cuda:1"}, 4, ("cuda:1",)),  # one chosen GPU: only that one
    ({"DEVICE": "cpu"}, 4, ("cpu",)),
])
def test_the_devices_a_backend_uses(env, cuda_count, expected):
    assert device_names(Settings.from_env(env), cuda_count=cuda_count) == expected


@pytest.mark.parametrize("env, message", [
    ({"DEVICES": "cuda:0,gpu1"}, "DEVICES='cuda:0,gpu1': 'gpu1' is not a device"),
    ({"DEVICES": "cuda:0,,cuda:1"}, "an empty entry is not a device"),
    ({"DEVICES": "cuda:0", "DEVICE": "cpu"}, "DEVICE=cpu contradicts DEVICES=cuda:0"),
])
def test_unusable_devices_are_refused_naming_the_variable(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


class StandInPredictor:
    def __init__(self, name):
        self.detector = SimpleNamespace(device=name)
        self.calls = 0

    def predict_tasks(self, tasks, label_config, context=None, hostname=None, access_token=None, thresholds=None):
        self.calls += 1
        return [{"result": []} for _ in tasks]


def test_an_interactive_request_goes_to_the_least_busy_device():
    first, second = StandInPredictor("cuda:0"), StandInPredictor("cuda:1")
    pool = PredictorPool([first, second])
    pool.predict_tasks(tasks(1), CONFIG)
    assert (first.calls, second.calls) == (1, 0), "all idle: the first device"
    with pool.slots[0].working(4):  # a job's batch of 4 is in cuda:0's model
        assert pool.status() == [{"name": "cuda:0", "busy": True, "done": 1},
                                 {"name": "cuda:1", "busy": False, "done": 0}]
        pool.predict_tasks(tasks(2), CONFIG)
    assert (first.calls, second.calls) == (1, 1)
    assert pool.status() == [{"name": "cuda:0", "busy": False, "done": 5}, {"name": "cuda:1", "busy": False, "done": 2}]
    assert [s["name"] for s in PredictorPool([first, first]).status()] == ["cuda:0#0", "cuda:0#1"]


class RendezvousDetector:
    """A model instance whose first call waits until the other device is in its model too (so both
    provably work), and whose later calls wait for `released` (so some tasks outlive the answer)."""

    def __init__(self, detector, rendezvous: threading.Barrier, released: threading.Event):
        self._detector, self.rendezvous, self.released = detector, rendezvous, released
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._detector, name)

    def detect(self, *args, **kwargs):
        self.calls += 1
        if self.calls == 1:
            self.rendezvous.wait()
        else:
            assert self.released.wait(120), "the test never released the model"
        return self._detector.detect(*args, **kwargs)


@pytest.fixture(scope="module")
def second_detector(tiny_model_dir):
    from detection import Detector, DetectorConfig

    return Detector.load(DetectorConfig(model=str(tiny_model_dir), device="cpu"))


@pytest.mark.slow
def test_two_devices_share_the_jobs_and_predict_each_task_once_as_one_device_would(
        tiny_detector, second_detector, make_settings, media_root):
    settings = make_settings(LOCAL_FILES_DOCUMENT_ROOT=media_root, ML_TIMEOUT_PREDICT=3,
                             LABEL_STUDIO_URL="http://label-studio.test:8080", LABEL_STUDIO_API_KEY="the-key")
    (reference,) = Predictor(tiny_detector, settings).predict_tasks(tasks(1), CONFIG)
    rendezvous, released = threading.Barrier(2, timeout=60), threading.Event()
    models = [RendezvousDetector(d, rendezvous, released) for d in (tiny_detector, second_detector)]
    pool = PredictorPool([Predictor(m, settings) for m in models], ["cpu:a", "cpu:b"])
    label_studio = StandInLabelStudio(tasks(6), CONFIG, project_id=7)
    app = create_app(settings, pool, importer_factory=lambda url, key, project, timeout: PredictionImporter(
        label_studio, url, project))
    with TestClient(app) as client:
        response = client.post("/predict", json={"tasks": tasks(6), "label_config": CONFIG, "project": "7.1"})
        released.set()
        answered = {i + 1: r for i, r in enumerate(response.json()["results"]) if r != []}
        (job,) = wait_for_jobs(client)
        devices = client.get("/status").json()["devices"]
    assert job["state"] == "done" and job["done"] == 6, job
    imported = {t: preds for t in range(1, 7) if (preds := label_studio.predictions(t))}
    assert set(answered) | set(imported) == set(range(1, 7)) and not set(answered) & set(imported)
    assert all(len(preds) == 1 for preds in imported.values()), "no task stored twice"
    for item in list(answered.values()) + [preds[0] for preds in imported.values()]:
        assert item["model_version"] == reference["model_version"]
        assert without_ids(item["result"]) == without_ids(reference["result"]), "as one device would"
    assert sum(m.calls for m in models) == 6, "each task went through one model once"
    assert [d["name"] for d in devices] == ["cpu:a", "cpu:b"]
    assert all(d["done"] > 0 for d in devices) and sum(d["done"] for d in devices) == 6, devices


@pytest.mark.slow
def test_devices_cpu_cpu_loads_two_models_and_the_status_shows_both(make_settings, media_root):
    settings = make_settings(DEVICES="cpu,cpu", LOCAL_FILES_DOCUMENT_ROOT=media_root)
    with TestClient(create_app(settings)) as client:
        pool = client.app.state.backend.predictor
        first, second = (slot.predictor for slot in pool.slots)
        assert first.detector is not second.detector and first.masks is not second.masks, "a model each"
        assert client.get("/status").json()["devices"] == [
            {"name": "cpu#0", "busy": False, "done": 0}, {"name": "cpu#1", "busy": False, "done": 0}]
        setup = client.post("/setup", json=ls_body("setup"))
        assert setup.status_code == 200 and setup.json()["model_version"], setup.text
        body = ls_body("predict-interactive")
        body["tasks"][0]["data"]["image"] = IMAGE
        (item,) = client.post("/predict", json=body).json()["results"]
        assert "result" in item, item
        assert [d["done"] for d in client.get("/status").json()["devices"]] == [1, 0]


def test_one_device_reports_its_work_on_the_status_page(make_client, media_root):
    client = make_client(LOCAL_FILES_DOCUMENT_ROOT=media_root)
    results = client.post("/predict", json={"tasks": tasks(2), "label_config": CONFIG, "project": "3.1"}).json()
    assert all("result" in r for r in results["results"]), results
    assert client.get("/status").json()["devices"] == [{"name": "cpu", "busy": False, "done": 2}]
