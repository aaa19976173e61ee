"""The training job the server runs on Start Training: thresholds, fine-tuning in a subprocess, cancel, too few."""
from __future__ import annotations

import json
import threading

import pytest

from backend.training.errors import NotEnoughAnnotations, TrainingCancelled
from backend.training.job import TrainingJob, TrainingJobConfig
from backend.training.store import ProjectStore
from backend.training.tasks import ProjectSnapshot
from tests.backend.training.synthetic import CLASSES, LABEL_CONFIG, labelstudio_tasks, make_shapes_dataset

VERSION = "tiny-1234abcd"
CONFIGURED = {c["name"]: 0.3 for c in CLASSES}


@pytest.fixture(scope="module")
def shapes24(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes24"), num_images=24, size=96, seed=3)


def make_job(shapes, tiny_model_dir, state_dir, annotated=None, **config):
    ann, images = shapes
    snapshot = ProjectSnapshot("7", LABEL_CONFIG, tuple(labelstudio_tasks(ann, VERSION, annotated)))
    settings = dict(steps=2, batch_size=2, image_size=96, val_fraction=0.25, device="cpu", threads=1,
                    min_annotated_tasks=20, min_reviewed_boxes=10)
    settings.update(config)
    return TrainingJob(7, lambda: snapshot, VERSION, CONFIGURED, lambda url, task_id: (images / url).read_bytes(),
                       TrainingJobConfig(state_dir=state_dir, base_model=str(tiny_model_dir), **settings))


@pytest.mark.slow
def test_start_training_learns_thresholds_then_fine_tunes(shapes24, tiny_model_dir, tmp_path):
    from detection import Detector, DetectorConfig

    events = []
    result = make_job(shapes24, tiny_model_dir, tmp_path / "state").run(threading.Event(), events.append)

    store = ProjectStore(tmp_path / "state")
    thresholds = store.load_thresholds(7)
    assert thresholds == result.thresholds and thresholds.model_version == VERSION
    # every right pre-label scores .9 and every wrong one .5: the most work is saved showing only the .9s
    assert all(t.source == "learned" and 0.5 < t.threshold <= 0.9 for t in thresholds.labels.values())

    assert result.model_dir.parent == tmp_path / "state" / "projects" / "7" / "models"
    Detector.load(DetectorConfig(model=str(result.model_dir), device="cpu"))  # served like any checkpoint
    report = json.loads((result.model_dir / "training.json").read_text())
    assert result.model.ap_before == report["heldout"]["before"]["metrics"]["AP"]
    assert result.model.ap_after == report["heldout"]["after"]["metrics"]["AP"]
    assert (result.model.train_tasks, result.model.heldout_tasks) == (18, 6)
    assert result.adopted == result.model.not_worse == report["heldout"]["not_worse"]
    assert store.load_model(7) == (result.model if result.adopted else None)

    phases = [e.phase for e in events]
    assert phases[:3] == ["reading project", "learning thresholds", "fetching images"] and phases[-1] == "done"
    assert [(e.step, e.total) for e in events if e.phase == "training"] == [(1, 2), (2, 2)]
    assert all(e.loss > 0 for e in events if e.phase == "training")
    assert "thresholds learned for 3 of 3 labels" in result.summary()


@pytest.mark.slow
def test_cancel_stops_the_subprocess(shapes24, tiny_model_dir, tmp_path):
    cancel = threading.Event()

    def progress(event):
        if event.phase == "training":
            cancel.set()

    job = make_job(shapes24, tiny_model_dir, tmp_path / "state", steps=500, val_fraction=0.0)
    with pytest.raises(TrainingCancelled, match="project 7 was cancelled"):
        job.run(cancel, progress)
    model_dir = next((tmp_path / "state" / "projects" / "7" / "models").iterdir())
    assert not (model_dir / "training.json").exists()
    assert ProjectStore(tmp_path / "state").load_model(7) is None


def test_too_few_annotations_is_a_clear_message(shapes24, tiny_model_dir, tmp_path):
    job = make_job(shapes24, tiny_model_dir, tmp_path / "state", annotated=4)
    with pytest.raises(NotEnoughAnnotations) as caught:
        job.run()
    message = str(caught.value)
    assert message.startswith("project 7 has 4 annotated tasks; at least 20 are needed to fine-tune; "
                              "thresholds need 10 reviewed boxes per label")
    assert "red_square" in message


def test_thresholds_are_learned_even_when_there_is_too_little_to_fine_tune(shapes24, tiny_model_dir, tmp_path):
    job = make_job(shapes24, tiny_model_dir, tmp_path / "state", min_annotated_tasks=100)
    result = job.run()
    assert result.model is None and not result.adopted
    assert len(result.thresholds.learned_labels) == 3
    assert "at least 100 are needed to fine-tune" in result.summary()
    assert ProjectStore(tmp_path / "state").load_thresholds(7) == result.thresholds
