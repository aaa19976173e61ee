"""Learning from a project's own annotations: per-label thresholds and fine-tuning.

- ``learn_thresholds`` / ``LearnedThresholds``: per label, the threshold that saves annotators the most
  work on the tasks they reviewed (thresholds.py), kept per project by ``ProjectStore`` (store.py).
- ``Trainer`` / ``TrainConfig``: fine-tuning on a COCO-format dataset with transformers' loss, resumable,
  under torchrun too (trainer.py); ``python -m backend.train`` is its command line.
- ``TrainingJob``: what *Start Training* runs for a project: thresholds, then fine-tuning in a
  subprocess, cancellable, with progress (job.py).
- ``TrainingError`` and the other errors (errors.py).

Import names from their modules (``from backend.training.store import ProjectStore``): the package itself
imports nothing, so that ``python -m backend.train --help`` can import the errors without loading torch.
"""
