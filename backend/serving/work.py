"""The values a prediction carries between the predictor's steps (`plan` -> `load` -> `run`): the request's
plan, made once, and each task's work on its way through a batch. The server's background jobs hold them
between steps too (backend/serving/job_types.py)."""
from __future__ import annotations

from dataclasses import dataclass, field

from labelstudio.label_sets import LabelMapping


@dataclass(frozen=True)
class PredictionPlan:
    """What one request predicts: the label sets with their prompts, and the version it stamps."""

    mapping: LabelMapping
    version: str
    prompts: tuple = ()  # ((LabelSet, Prompt), ...)
    error: str | None = None  # every task fails with this (e.g. a typed prompt that maps to nothing)
    notice: str | None = None  # said with every answer (e.g. typed phrases that map to no label)
    smart: tuple = ()  # (SmartPrompt, ...): an interactive smart-tool request, answered by the mask model
    exemplars: tuple = ()  # (ExemplarPrompt, ...): "find all like this", answered by an exemplar family
    label_thresholds: dict = field(default_factory=dict)  # label -> threshold learned for the project

    @property
    def images(self) -> dict[str, str]:
        """image name -> task data key, for the images some label set or smart prompt needs."""
        return {**{s.to_name: s.data_key for s, _ in self.prompts}, **{p.to_name: p.data_key for p in self.smart},
                **{p.to_name: p.data_key for p in self.exemplars}}


@dataclass
class TaskWork:
    """One task on its way through a batch."""

    index: int
    task: dict
    images: dict = field(default_factory=dict)  # image name -> PIL image
    image_errors: dict = field(default_factory=dict)  # image name -> reason
    regions: list = field(default_factory=list)
    error: str | None = None

    @property
    def task_id(self):
        return self.task.get("id") if isinstance(self.task, dict) else None

    @property
    def notes(self) -> list[str]:
        """Failures that did not stop the task (one image of several), for the log and the status page."""
        if self.error is not None:
            return []
        return [f"image {name!r}: {reason}" for name, reason in self.image_errors.items()]
