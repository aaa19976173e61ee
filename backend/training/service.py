"""Start Training in Label Studio -> a training job in the background, visible on the status page.

Label Studio 1.23 posts `{"action": "START_TRAINING", "project": {...}}` to /webhook and waits at most
ML_TIMEOUT_PREDICT: the webhook answers at once and the job (backend.training.TrainingJob: per-label
thresholds, then fine-tuning in a subprocess) runs in a thread, one at a time per backend. What it learns
is kept per project under STATE_DIR.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from label_studio_sdk import LabelStudio

from .errors import NotEnoughAnnotations, TrainingCancelled
from .job import TrainingJob, TrainingJobConfig
from .tasks import fetch_project
from .thresholds import configured_thresholds

log = logging.getLogger(__name__)


class TrainingRefused(ValueError):
    """The training cannot start; the message says what to do."""


@dataclass(eq=False)
class TrainingRun:
    id: str
    project: str
    model_version: str
    cancel: threading.Event = field(default_factory=threading.Event)
    state: str = "queued"  # queued | running | done | failed | cancelled
    phase: str = ""
    step: int = 0
    total: int = 0
    loss: float | None = None
    message: str | None = None
    started_at: float | None = None
    finished_at: float | None = None

    def snapshot(self) -> dict:
        """In the status document's job shape (a training run is a job of the project)."""
        now = time.time()
        elapsed = (self.finished_at or now) - self.started_at if self.started_at else None
        rate = self.step / elapsed if elapsed and self.step else None
        loss = f", loss {self.loss:.3f}" if self.loss is not None else ""
        return {"id": self.id, "project": self.project, "model_version": self.model_version, "state": self.state,
                "kind": "training", "total": self.total, "done": self.step, "failed": 0, "imported": 0,
                "rate_per_s": round(rate, 3) if rate else None,
                "eta_s": round((self.total - self.step) / rate, 1) if rate and self.state == "running" else None,
                "started_at": self.started_at, "finished_at": self.finished_at,
                "message": self.message or (f"training: {self.phase}{loss}" if self.phase else "training")}


class TrainingService:
    def __init__(self, settings, job_factory, on_adopted=None):
        """`job_factory(project_id, label_config, access) -> (TrainingJob, model_version)`; `on_adopted(project)`
        is called when a run adopted a fine-tuned model for the project (the server loads it then)."""
        self.settings = settings
        self.job_factory = job_factory
        self.on_adopted = on_adopted
        self._lock = threading.Lock()
        self._runs: list[TrainingRun] = []
        self._ids = itertools.count(1)

    def start(self, project: dict, access) -> TrainingRun:
        project_id = project.get("id") if isinstance(project, dict) else None
        label_config = project.get("label_config") if isinstance(project, dict) else None
        if not isinstance(project_id, int) or not label_config:
            raise TrainingRefused("START_TRAINING without the project's id and label_config: retrain from Label Studio's "
                                  "model settings (Start Training)")
        with self._lock:
            running = [r for r in self._runs if r.state in ("queued", "running")]
            if running:
                raise TrainingRefused(f"a training run is already in progress (project {running[0].project}, "
                                      f"{running[0].id}); one at a time per backend")
            job, version = self.job_factory(project_id, label_config, access)
            run = TrainingRun(f"train-{next(self._ids)}", str(project_id), version)
            self._runs.insert(0, run)
            del self._runs[20:]
        threading.Thread(target=self._run, args=(run, job), name=f"training-{run.id}", daemon=True).start()
        return run

    def cancel(self, project: str) -> bool:
        with self._lock:
            for run in self._runs:
                if run.project == str(project) and run.state in ("queued", "running"):
                    run.cancel.set()
                    return True
        return False

    def status(self) -> list[dict]:
        with self._lock:
            return [r.snapshot() for r in self._runs]

    def stop(self) -> None:
        with self._lock:
            for run in self._runs:
                run.cancel.set()

    def _run(self, run: TrainingRun, job) -> None:
        run.state, run.started_at = "running", time.time()

        def progress(p):
            run.phase, run.step, run.total, run.loss = p.phase, p.step, p.total, p.loss
            if p.message:
                run.message = p.message

        try:
            result = job.run(run.cancel, progress)
            if getattr(result, "adopted", False) and self.on_adopted is not None:
                run.phase, run.message = "loading the fine-tuned model", None
                self.on_adopted(run.project)
            run.state, run.message = "done", result.summary()
            log.info("project %s: training finished: %s", run.project, run.message)
        except TrainingCancelled:
            run.state, run.message = "cancelled", "cancelled"
        except NotEnoughAnnotations as exc:
            run.state, run.message = "failed", str(exc)
            log.warning("project %s: %s", run.project, exc)
        except Exception as exc:  # the job's own errors carry their message; anything else: say so
            run.state, run.message = "failed", f"training failed ({type(exc).__name__}: {exc})"
            log.exception("project %s: training failed", run.project)
        finally:
            run.finished_at = time.time()


def make_job_factory(settings, predictor, import_target):
    """The server's TrainingJob: the project's annotations through the API, its images through media."""

    def factory(project_id: int, label_config: str, access):
        family = predictor.detector.family
        if not family.capabilities.fine_tuning:
            raise TrainingRefused(f"the model {settings.model} is a {family.title} model, which this backend cannot "
                                  "fine-tune: Start Training needs a model of a family that supports it")
        target = import_target(settings, access)
        if target is None:
            raise TrainingRefused("training reads the project's annotations through Label Studio's API: set "
                                  "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")
        client = LabelStudio(base_url=target.url, api_key=target.api_key, timeout=120)
        version = predictor.model_version(label_config)
        configured = configured_thresholds(predictor.mapping(label_config), settings.box_threshold)

        def fetch_image(url, task_id):
            return predictor.fetcher.fetch(url, task_id=task_id, hostname=access.hostname,
                                           access_token=access.access_token)

        config = TrainingJobConfig(state_dir=Path(settings.state_dir), base_model=settings.model,
                                   steps=settings.train_steps, image_size=settings.train_image_size,
                                   device=settings.device)
        job = TrainingJob(project_id, lambda: fetch_project(client, project_id), version, configured,
                          fetch_image, config)
        return job, version

    return factory
