"""Learning from a project's own annotations: per-label thresholds and fine-tuning.

- ``learn_thresholds`` / ``LearnedThresholds``: per label, the threshold that saves annotators the most
  work on the tasks they reviewed (thresholds.py), kept per project by ``ProjectStore`` (store.py).
- ``Trainer`` / ``TrainConfig``: fine-tuning on a COCO-format dataset with transformers' loss, resumable,
  under torchrun too (trainer.py); ``python -m backend.train`` is its command line.
- ``TrainingJob``: what *Start Training* runs for a project: thresholds, then fine-tuning in a
  subprocess, cancellable, with progress (job.py).

Importing this package loads no model and starts nothing; torch is imported by the modules that train.
"""
from .errors import NotEnoughAnnotations, TrainingCancelled, TrainingError
from .store import ProjectStore, StateError, TrainedModel
from .tasks import ProjectSnapshot, fetch_project
from .thresholds import LabelThreshold, LearnedThresholds, configured_thresholds, learn_thresholds

__all__ = [
    "LabelThreshold", "LearnedThresholds", "NotEnoughAnnotations", "ProjectSnapshot", "ProjectStore", "StateError",
    "TrainedModel", "TrainingCancelled", "TrainingError", "configured_thresholds", "fetch_project", "learn_thresholds",
]
