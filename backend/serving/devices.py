"""One backend, several devices: one model (a `Predictor`) per device, the work spread over them.

`DEVICES=cuda:0,cuda:1` names the devices; with DEVICES unset and DEVICE `auto` or `cuda`, every visible GPU
is used; anything else is one device, where nothing changes. `DEVICES=cpu,cpu` runs two model instances on
the CPU (the tests' stand-in for two GPUs).

`PredictorPool` is what the server holds in place of a single Predictor: label configs, versions and
plans come from the first device (every device has the same weights, so the same `model_version`), an
interactive request goes to the least busy device, and the background jobs run one worker thread per
device (`jobs.JobManager`), all pulling batches from the same queues.
"""
from __future__ import annotations

import threading
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from typing import Sequence

import torch

from backend.settings import Settings
from detection import DetectorConfig, load_detector

from .mask_stage import MaskModelHolder
from .predictor import Predictor


def device_names(settings: Settings, cuda_count: int | None = None) -> tuple[str, ...]:
    """The devices the backend loads a model on, in order."""
    if settings.devices:
        return settings.devices
    if settings.device in ("auto", "cuda"):
        if cuda_count is None:
            cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if cuda_count > 1:
            return tuple(f"cuda:{i}" for i in range(cuda_count))
    return (settings.device,)


def load_on(settings: Settings, device: str, fetcher=None) -> Predictor:
    """The detector on one device with a mask model of its own on that device, loaded now when SAM_MODEL
    chooses one, else on first need (raises ModelLoadError, MaskModelLoadError or ValueError). A family with
    masks of its own (SAM 3) needs the mask model only for smart clicks: it is then loaded on first need."""
    detector = load_detector(DetectorConfig(model=settings.model, device=device, dtype=settings.dtype))
    masks = MaskModelHolder(replace(settings, device=device))
    if settings.sam_model and not detector.family.capabilities.own_masks:
        masks.load_now()
    return Predictor(detector, settings, fetcher, masks=masks)


class DeviceSlot:
    """One device's model and what it is doing: tasks in its model now, tasks done since the start."""

    def __init__(self, name: str, predictor: Predictor):
        self.name = name
        self.predictor = predictor
        self._lock = threading.Lock()
        self.in_flight = 0
        self.done = 0

    @contextmanager
    def working(self, tasks: int):
        """Count `tasks` as in this device's model for the duration of the block."""
        with self._lock:
            self.in_flight += tasks
        try:
            yield self.predictor
        finally:
            with self._lock:
                self.in_flight -= tasks
                self.done += tasks

    def snapshot(self) -> dict:
        return {"name": self.name, "busy": self.in_flight > 0, "done": self.done}


class PredictorPool:
    """Several Predictors, one per device, used by the server as one (the Predictor methods it calls)."""

    def __init__(self, predictors: Sequence[Predictor], names: Sequence[str] | None = None):
        if not predictors:
            raise ValueError("a PredictorPool needs at least one Predictor")
        names = list(names) if names is not None else [str(getattr(p.detector, "device", "cpu")) for p in predictors]
        if len(set(names)) < len(names):  # DEVICES=cpu,cpu: tell the two apart on the status page
            names = [f"{name}#{i}" for i, name in enumerate(names)]
        self.slots = [DeviceSlot(name, p) for name, p in zip(names, predictors)]
        self._choose = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> "PredictorPool":
        """One model per device of `device_names(settings)`; the devices share one media fetcher."""
        names = device_names(settings)
        first = load_on(settings, names[0])
        predictors = [first] + [load_on(settings, name, first.fetcher) for name in names[1:]]
        return cls(predictors, [str(p.detector.device) for p in predictors])

    @classmethod
    def around(cls, predictor) -> "PredictorPool":
        """The pool itself, or a one-device pool around a single Predictor (the jobs' worker uses slots)."""
        return predictor if isinstance(predictor, cls) else cls([predictor])

    @property
    def primary(self) -> Predictor:
        return self.slots[0].predictor

    # ----- what does not depend on the device: the first device answers ---------------------------

    @property
    def settings(self) -> Settings:
        return self.primary.settings

    @property
    def detector(self):
        return self.primary.detector

    @property
    def fetcher(self):
        return self.primary.fetcher

    @property
    def model_name(self) -> str:
        return self.primary.model_name

    @property
    def batch_size(self) -> int:
        return self.primary.batch_size

    @property
    def box_threshold(self) -> float:
        return self.primary.box_threshold

    def model_version(self, label_config: str, thresholds=None) -> str:
        return self.primary.model_version(label_config, thresholds)

    def mapping(self, label_config: str):
        return self.primary.mapping(label_config)

    def plan(self, label_config: str, context: dict | None = None, thresholds=None):
        # Prompts hold CPU tensors that each detector moves to its own device: a plan runs anywhere.
        return self.primary.plan(label_config, context, thresholds)

    def load(self, plan, work, access=None):
        return self.primary.load(plan, work, access)

    # ----- inference: the least busy device ------------------------------------------------------

    @contextmanager
    def least_busy(self, tasks: int):
        """The device with the fewest tasks in its model (the first of equals), counted busy meanwhile."""
        with ExitStack() as stack:
            with self._choose:  # choose and count in one step: two requests never pick one idle device
                slot = min(self.slots, key=lambda s: s.in_flight)
                predictor = stack.enter_context(slot.working(tasks))
            yield predictor

    def predict_tasks(self, tasks: list[dict], label_config: str, context: dict | None = None,
                      hostname: str | None = None, access_token: str | None = None, thresholds=None) -> list[dict]:
        with self.least_busy(len(tasks)) as predictor:
            return predictor.predict_tasks(tasks, label_config, context, hostname, access_token, thresholds)

    def status(self) -> list[dict]:
        return [slot.snapshot() for slot in self.slots]
