"""The training job under test, built the same way by the job tests and the capability tests."""
from __future__ import annotations

from backend.training.job import TrainingJob, TrainingJobConfig
from backend.training.tasks import ProjectSnapshot
from tests.backend.training.synthetic import CLASSES, LABEL_CONFIG, labelstudio_tasks

VERSION = "tiny-1234abcd"
CONFIGURED = {c["name"]: 0.3 for c in CLASSES}


def make_job(shapes, tiny_model_dir, state_dir, annotated=None, **config):
    ann, images = shapes
    snapshot = ProjectSnapshot("7", LABEL_CONFIG, tuple(labelstudio_tasks(ann, VERSION, annotated)))
    settings = dict(steps=2, batch_size=2, image_size=96, val_fraction=0.25, device="cpu", threads=1,
                    min_annotated_tasks=20, min_reviewed_boxes=10)
    settings.update(config)
    return TrainingJob(7, lambda: snapshot, VERSION, CONFIGURED, lambda url, task_id: (images / url).read_bytes(),
                       TrainingJobConfig(state_dir=state_dir, base_model=str(tiny_model_dir), **settings))
