"""Errors of the training package: each message says what was wrong and what to change."""
from __future__ import annotations


class TrainingError(ValueError):
    """Training cannot start or go on with this input or these settings."""


class NotEnoughAnnotations(TrainingError):
    """The project has too few annotations to learn anything from."""


class TrainingCancelled(RuntimeError):
    """The training job was cancelled before it finished."""
