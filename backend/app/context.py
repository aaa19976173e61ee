"""The HTTP app's state, typed: what the routes share (one object on `app.state.context`).

Created by `create_app`; the parts that need the model (engines, the access checker, the project titles,
the training service) are set by the app's start (`server.lifespan`). The status document is built here,
in one place (`status_document`), from the typed parts each subsystem contributes.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from backend.serving.engines import ProjectEngines
from backend.serving.job_journal import JobJournal
from backend.settings import Settings
from backend.training.service import TrainingService
from detection.families import lever_report
from labelstudio.access import AccessChecker, ProjectTitles
from labelstudio.urls import short_url
from labelstudio.notes import FailureNotes
from labelstudio.target import LabelStudioTarget

from .errors import ApiError
from .state import ServerState
from .status import DeviceRow, FailureRow, ModelStatus, ProjectStatus, ServerStatus, StatusDocument

MAX_FAILURES_SHOWN = 200
# /health's model_class per family (Label Studio shows it; "GroundingDINO" is what it has always said for that family)
MODEL_CLASSES = {"grounding-dino": "GroundingDINO", "sam3": "SAM3"}
try:
    from importlib.metadata import version as _dist_version

    BACKEND_VERSION = _dist_version("grounding-dino-prelabel")
except Exception:  # running from a checkout that was not installed
    BACKEND_VERSION = "unknown"


@dataclass
class AppContext:
    settings: Settings
    state: ServerState
    journal: JobJournal
    notes: FailureNotes | None = None
    started_at: float = field(default_factory=time.time)
    failures: deque[FailureRow] = field(default_factory=lambda: deque(maxlen=MAX_FAILURES_SHOWN))
    kept_state_problems: list[str] = field(default_factory=list)  # STATE_DIR files that could not be read
    configs_reported: set[int] = field(default_factory=set)  # label configs whose skipped labels were logged
    # the Label Studio access message last logged per project: Label Studio calls /setup on every page of a
    # project, so the same warning is logged once until it changes (the status page always shows it)
    access_reported: dict[str, str] = field(default_factory=dict)
    # set once the model is loaded (lifespan)
    engines: ProjectEngines | None = None
    checker: AccessChecker | None = None
    titles: ProjectTitles | None = None
    training: TrainingService | None = None

    # ----- the jobs' callbacks ---------------------------------------------------------------------

    def record_failure(self, job, entry, reason: str) -> None:
        task = entry.work.task if isinstance(entry.work.task, dict) else {}
        data = task.get("data") if isinstance(task.get("data"), dict) else {}
        # the image that failed (the first of the task's images when the task failed as a whole)
        names = list(entry.work.image_errors) or list(job.plan.images)
        urls = [data.get(job.plan.images.get(name)) for name in names]
        urls = [u for u in urls if isinstance(u, str)]
        self.failures.appendleft(FailureRow(at=time.time(), project=job.project, task=entry.work.task_id,
                                            image=short_url(urls[0]) if urls else None, reason=reason))
        if self.notes is not None and entry.item is not None and not entry.item.ok:
            self.notes.failed(job.target, task, reason, job.version)

    def record_success(self, job, entry) -> None:
        if self.notes is not None and isinstance(entry.work.task, dict):
            self.notes.succeeded(job.target, entry.work.task)

    # ----- for the routes ------------------------------------------------------------------------

    async def engine_for(self, project):
        """The model serving this project (the base model, or its fine-tuned one)."""
        if self.state.predictor is None or self.engines is None:
            raise ApiError(503, "the model is not loaded yet")
        return await run_in_threadpool(self.engines.for_project, project)

    def access_of(self, project) -> LabelStudioTarget:
        """Only this project's own /setup credentials (the configured LABEL_STUDIO_URL/_API_KEY win where
        they are used): never another project's token."""
        record = self.state.project(project)
        return record.access if record is not None else LabelStudioTarget()

    def health(self) -> dict:
        detector = getattr(self.state.predictor, "detector", None)
        family = getattr(detector, "family", None)
        name = MODEL_CLASSES.get(family.name, family.title) if family is not None else "loading"
        return {"status": "UP", "model_class": name, "model": self.settings.model}

    def status_document(self) -> StatusDocument:
        """The status document: built here only (blocking: call it from a worker thread)."""
        settings, predictor, engines = self.settings, self.state.predictor, self.engines
        detector = getattr(predictor, "detector", None)
        levers, warnings = lever_report(detector)
        model = ModelStatus(
            name=getattr(predictor, "model_name", settings.model), path=settings.model,
            device=str(getattr(detector, "device", settings.device)), dtype=settings.dtype,
            levers=levers, warnings=warnings + (engines.warnings() if engines else [])
            + self.kept_state_problems)
        server = ServerStatus(
            started_at=self.started_at, predict_deadline_s=settings.predict_deadline,
            ml_timeout_predict_s=settings.ml_timeout_predict, pending_predicts=self.state.pending_predicts,
            batch_size=getattr(predictor, "batch_size", None), version=BACKEND_VERSION)
        projects = [ProjectStatus(**record.snapshot(settings),
                                  learned=engines.learned_lines(record.project) if engines else [])
                    for record in list(self.state.projects.values())]
        jobs = (self.training.status() if self.training else []) + [
            job for engine in (engines.all() if engines else []) for job in engine.jobs.status()]
        devices = [DeviceRow(**d) for d in engines.base.jobs.devices.status()] if engines else []
        return StatusDocument(model=model, server=server, projects=projects, jobs=jobs,
                              failures=list(self.failures), devices=devices)


def import_target(settings: Settings, access: LabelStudioTarget) -> LabelStudioTarget | None:
    """Where background predictions are stored and training reads annotations: the configured Label Studio
    and key, else the project's /setup ones; None without both an address and a key."""
    target = access.under(settings.label_studio_url, settings.label_studio_api_key)
    return target if target.complete else None


def context_of(request: Request) -> AppContext:
    """The app's context, for a route (FastAPI dependency)."""
    return request.app.state.context
