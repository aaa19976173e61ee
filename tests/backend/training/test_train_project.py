"""`python -m backend.train --project ID`: a Label Studio project read through the SDK (a stand-in client here),
its images through the backend's media fetcher (Local Storage files), thresholds into STATE_DIR."""
from __future__ import annotations

import json

import pytest

import backend.train
from backend.train import main
from backend.training.store import ProjectStore
from tests.backend.training.synthetic import LABEL_CONFIG, labelstudio_tasks


class Model:
    def __init__(self, **data):
        self.__dict__.update(data)

    def model_dump(self):
        return dict(self.__dict__)


def fake_client(tasks):
    class Projects:
        def get(self, id):
            return Model(id=id, label_config=LABEL_CONFIG, title="shapes")

    class Tasks:
        def list(self, **kwargs):
            assert kwargs["fields"] == "all"
            return iter(Model(**t) for t in tasks)

    return Model(projects=Projects(), tasks=Tasks())


@pytest.fixture
def project(small_shapes, tiny_model_dir, monkeypatch, tmp_path):
    """Env as the backend reads it; tasks whose images are Local Storage files; returns (tasks, version)."""
    ann, images = small_shapes
    env = {"LABEL_STUDIO_URL": "http://127.0.0.1:9", "LABEL_STUDIO_API_KEY": "k" * 40,
           "LOCAL_FILES_DOCUMENT_ROOT": str(images.parent), "GROUNDING_DINO_MODEL": str(tiny_model_dir),
           "DEVICE": "cpu", "BOX_THRESHOLD": "0.3", "STATE_DIR": str(tmp_path / "state")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    version = "set-by-the-test"
    tasks = labelstudio_tasks(ann, version)
    for t in tasks:
        t["data"]["image"] = f"/data/local-files/?d=images/{t['data']['image']}"
    monkeypatch.setattr(backend.train, "_client", lambda settings: fake_client(tasks))
    return tasks


def test_too_few_annotated_tasks_to_fine_tune(project, tmp_path, capsys):
    assert main(["--project", "5", "--out", str(tmp_path / "m"), "--min-tasks", "20", "--device", "cpu"]) == 2
    assert "error: project 5 has 8 annotated tasks; at least 20 are needed to fine-tune" in capsys.readouterr().err


@pytest.mark.slow
def test_project_is_exported_then_fine_tuned(project, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["--project", "5", "--out", str(out), "--min-tasks", "8", "--steps", "1", "--val-fraction", "0",
                 "--image-size", "96", "--device", "cpu", "--threads", "1", "--no-progress"]) == 0
    coco = json.loads((out / "data" / "annotations.json").read_text())
    assert len(coco["images"]) == 8 and coco["info"] == {"label_studio_project": "5"}
    report = json.loads((out / "training.json").read_text())
    assert [c["phrases"] for c in report["classes"]] == [["red square"], ["green disk"], ["blue triangle"]]
    assert (out / "model.safetensors").is_file()


@pytest.mark.slow
def test_thresholds_only_uses_the_backends_model_version(project, tiny_detector, make_settings, tmp_path, capsys):
    from backend.serving.predictor import Predictor

    version = Predictor(tiny_detector, make_settings()).model_version(LABEL_CONFIG)
    for t in project:
        t["predictions"][0]["model_version"] = version
    assert main(["--project", "5", "--thresholds-only", "--min-reviewed-boxes", "3"]) == 0
    learned = ProjectStore(tmp_path / "state").load_thresholds(5)
    assert learned.model_version == version and learned.reviewed_tasks == 8
    assert all(0.5 < t.threshold <= 0.9 for t in learned.labels.values())  # right pre-labels .9, wrong .5
    assert "saved to" in capsys.readouterr().out
