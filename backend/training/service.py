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

from label_studio_sdk import LabelStudio

from backend.progress_text import format_duration
from backend.serving.job_status import JobRow, JobState, rate_and_eta
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
    model_version: str  # "" while running; at the end, the version the project is served with (what it produced)
    cancel: threading.Event = field(default_factory=threading.Event)
    state: JobState = JobState.QUEUED
    phase: str = ""
    step: int = 0
    total: int = 0
    loss: float | None = None
    message: str | None = None
    plan: str | None = None  # what fine-tuning will do and which settings make it shorter
    started_at: float | None = None
    finished_at: float | None = None
    first_step: tuple[int, float] | None = None  # (step, time) of the first training step seen
    last_step_at: float | None = None

    def __post_init__(self):
        self.state = JobState(self.state)  # a state given by name ("running") is the Enum's member

    def steps_per_s(self) -> float | None:
        """Training steps per second, measured from the first step seen (reading and scoring left out)."""
        if self.first_step is None or self.last_step_at is None or self.step <= self.first_step[0]:
            return None
        return (self.step - self.first_step[0]) / max(self.last_step_at - self.first_step[1], 1e-9)

    def estimate(self) -> str | None:
        """``"about 9 min 40 s left, estimated from the first 5 steps"`` once some steps are timed."""
        rate = self.steps_per_s()
        if rate is None or self.phase != "training":
            return None
        measured = self.step - self.first_step[0]
        return (f"fine-tuning takes about {format_duration(self.total / rate)} for {self.total:,} steps; about "
                f"{format_duration((self.total - self.step) / rate)} left (timed over {measured:,} steps)")

    def snapshot(self) -> JobRow:
        """In the status document's job shape (a training run is a job of the project; its rate counts steps)."""
        active = self.state.active
        if active:
            loss = f", loss {self.loss:.3f}" if self.loss is not None else ""
            parts = [f"{self.phase}{loss}" if self.phase else "training", self.estimate(), self.plan]
            message = "; ".join(p for p in parts if p)
        else:
            message = self.message or str(self.state)
        rate, eta = rate_and_eta(self.steps_per_s(), self.total - self.step, self.phase == "training" and active,
                                 digits=4)
        return JobRow(id=self.id, project=self.project, model_version=self.model_version, state=self.state,
                      kind="training", unit="steps", total=self.total, done=self.step, failed=0, imported=0,
                      rate_per_s=rate, eta_s=eta, started_at=self.started_at, finished_at=self.finished_at,
                      message=message)


class TrainingService:
    def __init__(self, settings, job_factory, served_version=None):
        """`job_factory(project_id, label_config, access) -> (TrainingJob, model_version)`;
        `served_version(project, label_config) -> str` is called when a run finished: the version the project is
        served with now (the server loads an adopted model then), shown as what the run produced."""
        self.settings = settings
        self.job_factory = job_factory
        self.served_version = served_version
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
            running = [r for r in self._runs if r.state.active]
            if running:
                raise TrainingRefused(f"a training run is already in progress (project {running[0].project}, "
                                      f"{running[0].id}); one at a time per backend")
            job, version = self.job_factory(project_id, label_config, access)
            run = TrainingRun(f"train-{next(self._ids)}", str(project_id), "")
            self._runs.insert(0, run)
            del self._runs[20:]
        threading.Thread(target=self._run, args=(run, job, label_config, version), name=f"training-{run.id}",
                         daemon=True).start()
        return run

    def cancel(self, project: str) -> bool:
        with self._lock:
            for run in self._runs:
                if run.project == str(project) and run.state.active:
                    run.cancel.set()
                    return True
        return False

    def status(self) -> list[JobRow]:
        with self._lock:
            return [r.snapshot() for r in self._runs]

    def stop(self) -> None:
        with self._lock:
            for run in self._runs:
                run.cancel.set()

    def _run(self, run: TrainingRun, job, label_config: str, version_before: str) -> None:
        run.state, run.started_at = JobState.RUNNING, time.time()

        def progress(p):
            now = time.time()
            run.phase, run.step, run.total, run.loss = p.phase, p.step, p.total, p.loss
            if p.phase == "training":
                if run.first_step is None:
                    run.first_step = (p.step, now)
                run.last_step_at = now
            if p.phase == "fine-tuning" and p.message:
                run.plan = p.message

        try:
            result = job.run(run.cancel, progress)
            run.phase = "loading the fine-tuned model" if getattr(result, "adopted", False) else "done"
            run.model_version = (self.served_version(run.project, label_config) if self.served_version is not None
                                 else version_before)
            run.message = result.summary() + (f"; the project is served as {run.model_version}"
                                               if run.model_version != version_before else "")
            rate = run.steps_per_s()
            if rate is not None:
                run.message += f"; fine-tuning ran at {60 * rate:.1f} steps/min"
            run.state = JobState.DONE
            log.info("project %s: training finished: %s", run.project, run.message)
        except TrainingCancelled:
            run.model_version = version_before
            run.state, run.message = JobState.CANCELLED, f"cancelled: nothing changed (still served as {version_before})"
        except NotEnoughAnnotations as exc:
            run.model_version = version_before
            run.state, run.message = JobState.FAILED, str(exc)
            log.warning("project %s: %s", run.project, exc)
        except Exception as exc:  # the job's own errors carry their message; anything else: say so
            run.model_version = version_before
            run.state, run.message = JobState.FAILED, f"training failed ({type(exc).__name__}: {exc})"
            log.exception("project %s: training failed", run.project)
        finally:
            run.finished_at = time.time()


def make_job_factory(settings, serving, import_target):
    """The server's TrainingJob: the project's annotations through the API, its images through media.
    ``serving(project) -> Engine`` is the model serving the project now, with its own learned thresholds."""

    def factory(project_id: int, label_config: str, access):
        engine = serving(str(project_id))
        predictor = engine.predictor
        family = predictor.detector.family
        # A family this backend cannot fine-tune still learns per-label thresholds; the job says so.
        not_tunable = None if family.capabilities.fine_tuning else (
            f"{family.title} cannot be fine-tuned by this backend (model {settings.model}): thresholds only")
        target = import_target(settings, access)
        if target is None:
            raise TrainingRefused("training reads the project's annotations through Label Studio's API: set "
                                  "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")
        client = LabelStudio(base_url=target.url, api_key=target.key, timeout=120)
        version = predictor.model_version(label_config, engine.thresholds)
        configured = configured_thresholds(predictor.mapping(label_config), predictor.box_threshold)

        def fetch_image(url, task_id):
            return predictor.fetcher.fetch(url, task_id=task_id, hostname=access.url,
                                           access_token=access.key)

        config = TrainingJobConfig.for_device(settings.state_dir, settings.model, settings.device,
                                              steps=settings.train_steps, image_size=settings.train_image_size,
                                              nms_iou=settings.nms_iou, not_tunable=not_tunable)
        job = TrainingJob(project_id, lambda: fetch_project(client, project_id), version, configured,
                          fetch_image, config, served_model=engine.model, served_thresholds=engine.thresholds)
        return job, version

    return factory
