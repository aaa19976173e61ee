"""The Label Studio ML backend HTTP server (the protocol of Label Studio 1.23, spoken directly).

Routes (`routes/`): GET /health, GET / (JSON for Label Studio and curl, the status page for a browser),
GET /status, POST /setup, POST /predict, POST /webhook, GET /versions.

`/predict` answers before Label Studio's ML_TIMEOUT_PREDICT with every task finished by then; the rest
goes on in a background job (`backend.serving.jobs`) that imports its predictions through Label Studio's
API. Interactive pre-annotation runs at once, ahead of any background work. Inference, answers (encoded
item by item), label config parsing and the status document are built in worker threads, so /health and
/setup answer while the model works. Project records and unfinished jobs are kept in STATE_DIR
(`state.py`, `backend.serving.job_journal`) and come back at the next start.

This module assembles the app: its typed state (`context.AppContext`), error handlers (`errors.py`),
Basic auth (`auth.py`), the routes, and the start and stop of the model's parts (`lifespan`).
"""
from __future__ import annotations

import gc
import logging
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from backend.serving.devices import PredictorPool
from backend.serving.engines import ProjectEngines
from backend.serving.job_journal import JobJournal, resume_kept_jobs
from backend.serving.jobs import JobManager
from backend.serving.predictor import Predictor
from backend.settings import Settings
from backend.training.service import TrainingService, make_job_factory
from labelstudio.access import AccessChecker, ProjectTitles
from labelstudio.notes import FailureNotes, sdk_client

from .auth import install_basic_auth
from .context import AppContext, import_target
from .errors import install_error_handlers
from .routes import ROUTERS
from .state import ServerState

log = logging.getLogger(__name__)


def load_predictor(settings: Settings) -> PredictorPool:
    """Load the model once per device (DEVICES, or every visible GPU; usually one), each with its mask model
    when SAM_MODEL chooses one (otherwise that loads on first need), and serve them as one predictor
    (raises ModelLoadError, MaskModelLoadError or ValueError with a clear message)."""
    return PredictorPool.from_settings(settings)


def create_app(settings: Settings, predictor: Predictor | None = None, importer_factory=None,
               notes_client_factory=None) -> FastAPI:
    notes = (FailureNotes(settings.failed_task_field, notes_client_factory or sdk_client)
             if settings.failed_task_field else None)
    ctx = AppContext(settings, ServerState(predictor=predictor, state_dir=settings.state_dir),
                     JobJournal(settings.state_dir), notes)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await start(ctx, importer_factory)
        try:
            yield
        finally:
            ctx.engines.stop()
            ctx.training.stop()
            if ctx.notes is not None:
                ctx.notes.stop()

    app = FastAPI(title="Zero-shot pre-labelling ML backend for Label Studio (Grounding DINO, SAM 3)", lifespan=lifespan)
    app.state.backend = ctx.state
    app.state.context = ctx
    install_error_handlers(app)
    install_basic_auth(app, settings)
    for router in ROUTERS:
        app.include_router(router)
    return app


async def start(ctx: AppContext, importer_factory=None) -> None:
    """Load the model (unless given) and the project records, start the engines and the training service,
    and resume the jobs kept from before a restart (in a thread)."""
    settings, state = ctx.settings, ctx.state
    if state.predictor is None:
        state.predictor = await run_in_threadpool(load_predictor, settings)
    ctx.kept_state_problems.extend(await run_in_threadpool(state.load))

    def make_jobs(predictor) -> JobManager:
        return JobManager(predictor, on_failure=ctx.record_failure, import_timeout=settings.download_timeout * 2,
                          importer_factory=importer_factory, on_success=ctx.record_success, journal=ctx.journal)

    def remember_title(project: str, title: str) -> None:
        record = state.project(project)
        if record is not None and record.title != title:
            record.title = title
            state.save(record)

    engines = ctx.engines = ProjectEngines(settings, state.predictor, make_jobs, load_predictor)

    def served_version(project, label_config) -> str:  # loads a newly adopted model (a worker thread)
        engine = engines.for_project(project)
        return engine.predictor.model_version(label_config, engine.thresholds)

    ctx.training = TrainingService(settings, make_job_factory(settings, engines.for_project, import_target),
                                   served_version=served_version)
    # 2 s of /setup's 3 s (ML_TIMEOUT_SETUP); the label config is checked meanwhile.
    ctx.checker = AccessChecker(state.predictor.fetcher, budget_s=2.0)
    ctx.titles = ProjectTitles(state.predictor.fetcher, remember_title)
    engines.start()

    def resume() -> None:  # in a thread: a kept job's fine-tuned model may take a while to load
        try:
            ctx.kept_state_problems.extend(resume_kept_jobs(ctx.journal, engines, state,
                                                            lambda access: import_target(settings, access)))
        except Exception:
            log.exception("resuming the background jobs kept in %s failed", ctx.journal.root)
            ctx.kept_state_problems.append(f"resuming the background jobs kept in {ctx.journal.root} failed; "
                                           "see the backend's log")

    threading.Thread(target=resume, name="resume-kept-jobs", daemon=True).start()
    # The model and its libraries are hundreds of thousands of objects that live as long as the process.
    # Left to the collector, each full collection walks all of them while holding the interpreter lock:
    # on a busy machine that held /health for most of a second in the middle of a large answer.
    gc.collect()
    gc.freeze()


def app_factory() -> FastAPI:
    """For `uvicorn --factory backend.app.server:app_factory`: settings from the environment."""
    return create_app(Settings.from_env())
