"""The Label Studio ML backend HTTP server (the protocol of Label Studio 1.23, spoken directly).

Routes: GET /health, GET / (JSON for Label Studio and curl, the status page for a browser), GET /status,
POST /setup, POST /predict, POST /webhook, GET /versions.

`/predict` answers before Label Studio's ML_TIMEOUT_PREDICT with every task finished by then; the rest
goes on in a background job (`jobs.py`) that imports its predictions through Label Studio's API.
Interactive pre-annotation runs at once, ahead of any background work. Inference, answers (encoded item
by item), label config parsing and the status document are built in worker threads, so /health and
/setup answer while the model works. Project records and unfinished jobs are kept in STATE_DIR
(`state.py`, `job_journal.py`) and come back at the next start.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import gc
import json
import logging
import secrets
import threading
import time
from collections import deque
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.serving.devices import PredictorPool
from backend.serving.job_journal import JobJournal, resume_kept_jobs
from backend.serving.jobs import ImportTarget, JobManager, RequestWaiter
from runtime.json_encoding import encode_answer
from labelstudio.label_config import LabelConfigError
from labelstudio.access import AccessChecker, ProjectTitles
from backend.serving.engines import ProjectEngines
from labelstudio.notes import FailureNotes, sdk_client
from backend.training.service import TrainingRefused, TrainingService, make_job_factory
from labelstudio.media import short_url
from backend.serving.predictor import Predictor
from backend.settings import Settings
from .state import LabelStudioAccess, ServerState, project_key
from .status_page import render_status_page

log = logging.getLogger(__name__)
MODEL_CLASS = "GroundingDINO"
try:
    from importlib.metadata import version as _dist_version

    BACKEND_VERSION = _dist_version("grounding-dino-prelabel")
except Exception:  # running from a checkout that was not installed
    BACKEND_VERSION = "unknown"
MAX_FAILURES_SHOWN = 200


class SetupRequest(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    project: str | int | None = None
    label_config: str | None = Field(default=None, alias="schema")
    hostname: str | None = None
    access_token: str | None = None
    extra_params: Any = None


class PredictParams(BaseModel):
    model_config = ConfigDict(extra="allow")

    login: Any = None
    password: Any = None
    context: dict | None = None


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    tasks: list[dict[str, Any]]
    label_config: str | None = None
    project: str | int | None = None
    params: PredictParams | None = None


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def load_predictor(settings: Settings) -> PredictorPool:
    """Load the model once per device (DEVICES, or every visible GPU; usually one), each with its mask model
    when SAM_MODEL chooses one (otherwise that loads on first need), and serve them as one predictor
    (raises ModelLoadError, MaskModelLoadError or ValueError with a clear message)."""
    return PredictorPool.from_settings(settings)


def import_target(settings: Settings, access: LabelStudioAccess) -> ImportTarget | None:
    """Where background predictions are stored: the configured Label Studio and key, else /setup's."""
    url = settings.label_studio_url or (access.hostname.rstrip("/") if access.hostname else None)
    if settings.label_studio_api_key:
        key, source = settings.label_studio_api_key, "LABEL_STUDIO_API_KEY"
    else:
        key, source = access.access_token, "/setup"
    return ImportTarget(url, key, source) if url and key else None


def create_app(settings: Settings, predictor: Predictor | None = None, importer_factory=None,
               notes_client_factory=None) -> FastAPI:
    state = ServerState(predictor=predictor, state_dir=settings.state_dir)
    journal = JobJournal(settings.state_dir)
    kept_state_problems: list[str] = []  # STATE_DIR files that could not be read, for the status page
    notes = (FailureNotes(settings.failed_task_field, notes_client_factory or sdk_client)
             if settings.failed_task_field else None)
    failures: deque[dict] = deque(maxlen=MAX_FAILURES_SHOWN)
    started_at = time.time()

    def record_failure(job, entry, reason: str) -> None:
        task = entry.work.task if isinstance(entry.work.task, dict) else {}
        data = task.get("data") if isinstance(task.get("data"), dict) else {}
        # the image that failed (the first of the task's images when the task failed as a whole)
        names = list(entry.work.image_errors) or list(job.plan.images)
        urls = [data.get(job.plan.images.get(name)) for name in names]
        urls = [u for u in urls if isinstance(u, str)]
        failures.appendleft({"at": time.time(), "project": job.project, "task": entry.work.task_id,
                             "image": short_url(urls[0]) if urls else None, "reason": reason})
        if notes is not None and entry.item is not None and "result" not in entry.item:
            notes.failed(job.target, task, reason, job.version)

    def record_success(job, entry) -> None:
        if notes is not None and isinstance(entry.work.task, dict):
            notes.succeeded(job.target, entry.work.task)

    engines: ProjectEngines | None = None
    checker: AccessChecker | None = None
    titles: ProjectTitles | None = None
    training: TrainingService | None = None
    configs_reported: set[int] = set()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        nonlocal engines, checker, titles, training
        if state.predictor is None:
            state.predictor = await run_in_threadpool(load_predictor, settings)
        kept_state_problems.extend(await run_in_threadpool(state.load))

        def make_jobs(predictor) -> JobManager:
            return JobManager(predictor, on_failure=record_failure, import_timeout=settings.download_timeout * 2,
                              importer_factory=importer_factory, on_success=record_success, journal=journal)

        def remember_title(project: str, title: str) -> None:
            record = state.project(project)
            if record is not None and record.title != title:
                record.title = title
                state.save(record)

        engines = ProjectEngines(settings, state.predictor, make_jobs, load_predictor)
        def served_version(project, label_config) -> str:  # loads a newly adopted model (a worker thread)
            engine = engines.for_project(project)
            return engine.predictor.model_version(label_config, engine.thresholds)

        training = TrainingService(settings, make_job_factory(settings, engines.for_project, import_target),
                                   served_version=served_version)
        # 2 s of /setup's 3 s (ML_TIMEOUT_SETUP); the label config is checked meanwhile.
        checker = AccessChecker(state.predictor.fetcher, budget_s=2.0)
        titles = ProjectTitles(state.predictor.fetcher, remember_title)
        engines.start()

        def resume() -> None:  # in a thread: a kept job's fine-tuned model may take a while to load
            try:
                kept_state_problems.extend(resume_kept_jobs(journal, engines, state,
                                                            lambda access: import_target(settings, access)))
            except Exception:
                log.exception("resuming the background jobs kept in %s failed", journal.root)
                kept_state_problems.append(f"resuming the background jobs kept in {journal.root} failed; "
                                           "see the backend's log")

        threading.Thread(target=resume, name="resume-kept-jobs", daemon=True).start()
        # The model and its libraries are hundreds of thousands of objects that live as long as the process.
        # Left to the collector, each full collection walks all of them while holding the interpreter lock:
        # on a busy machine that held /health for most of a second in the middle of a large answer.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            engines.stop()
            training.stop()
            if notes is not None:
                notes.stop()

    app = FastAPI(title="Grounding DINO ML backend for Label Studio", lifespan=lifespan)
    app.state.backend = state

    # ----- errors: JSON with a message, never a stack trace; 4xx reasons logged for the user -----

    def client_error(request: Request, status: int, message: str, project=None) -> JSONResponse:
        project = project if project is not None else getattr(request.state, "project", None)
        log.warning("%s %s -> %d (project %s): %s", request.method, request.url.path, status,
                    project_key(project) if project is not None else "unknown", message)
        return JSONResponse({"detail": message}, status_code=status)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        if exc.status < 500:
            return client_error(request, exc.status, exc.message)
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(LabelConfigError)
    async def _config_error(request: Request, exc: LabelConfigError):
        return client_error(request, 422, f"bad label config: {exc}")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            if tuple(err.get("loc", ())) == ("body",) and err.get("type") != "missing":
                problems.append("the request body must be a JSON object (Content-Type: application/json)")
            elif err.get("type") == "json_invalid":
                problems.append(f"the request body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')})")
            else:
                problems.append(f"{where}: {err.get('msg')}")
        status = 400 if any(e.get("type") == "json_invalid" for e in exc.errors()) else 422
        body = getattr(exc, "body", None)
        project = body.get("project") if isinstance(body, dict) else None
        return client_error(request, status, "; ".join(problems) or "invalid request", project)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code < 500 and exc.status_code != 404:
            log.warning("%s %s -> %d: %s", request.method, request.url.path, exc.status_code, exc.detail)
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": f"internal error ({type(exc).__name__}); see the ML backend's log"}, status_code=500
        )

    # ----- HTTP Basic auth on everything but /webhook ------------------------------------------

    if settings.auth_enabled:
        user = settings.basic_auth_user.encode()
        password = settings.basic_auth_pass.encode()

        @app.middleware("http")
        async def basic_auth(request: Request, call_next):
            if request.url.path.rstrip("/") == "/webhook":
                return await call_next(request)
            given_user, given_pass = _basic_credentials(request.headers.get("authorization"))
            ok_user = secrets.compare_digest(given_user, user)
            ok_pass = secrets.compare_digest(given_pass, password)
            if not (ok_user and ok_pass):
                log.warning("%s %s -> 401: wrong or missing Basic auth credentials", request.method, request.url.path)
                return JSONResponse(
                    {"detail": "authentication required: use the ML backend's BASIC_AUTH_USER/BASIC_AUTH_PASS"},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Basic realm="ml-backend", charset="UTF-8"'},
                )
            return await call_next(request)

    async def engine_for(project):
        """The model serving this project (the base model, or its fine-tuned one)."""
        if state.predictor is None or engines is None:
            raise ApiError(503, "the model is not loaded yet")
        return await run_in_threadpool(engines.for_project, project)

    # ----- routes ------------------------------------------------------------------------------

    def health_body() -> dict:
        return {"status": "UP", "model_class": MODEL_CLASS, "model": settings.model}

    def status_body() -> dict:
        predictor = state.predictor
        detector = getattr(predictor, "detector", None)
        return {
            "model": {
                "name": getattr(predictor, "model_name", settings.model), "path": settings.model,
                "device": str(getattr(detector, "device", settings.device)), "dtype": settings.dtype,
                "levers": dict(getattr(detector, "lever_report", {}) or {}),
                "warnings": list(getattr(detector, "warnings", []) or []) + (engines.warnings() if engines else [])
                + kept_state_problems,
            },
            "server": {
                "started_at": started_at, "predict_deadline_s": settings.predict_deadline,
                "ml_timeout_predict_s": settings.ml_timeout_predict, "pending_predicts": state.pending_predicts,
                "batch_size": getattr(predictor, "batch_size", None), "version": BACKEND_VERSION,
            },
            "projects": [{**record.snapshot(settings), "learned": engines.learned_lines(record.project) if engines else []}
                         for record in state.projects.values()],
            "jobs": (training.status() if training else [])
            + [job for engine in (engines.all() if engines else []) for job in engine.jobs.status()],
            "failures": list(failures),
            "devices": engines.base.jobs.devices.status() if engines else [],
        }

    @app.get("/health")
    async def health():
        return health_body()

    @app.get("/")
    async def root(request: Request):
        accept = request.headers.get("accept", "")
        if "text/html" in accept:
            # built in a worker thread: a long list of jobs and failures must not hold up /health
            return HTMLResponse(await run_in_threadpool(lambda: render_status_page(status_body())))
        return health_body()

    @app.get("/status")
    async def status():
        return Response(await run_in_threadpool(lambda: json.dumps(status_body()).encode()),
                        media_type="application/json")

    @app.post("/setup")
    async def setup(body: SetupRequest, request: Request):
        request.state.project = body.project
        engine = await engine_for(body.project)
        predictor = engine.predictor
        if not body.label_config:
            raise ApiError(422, "the setup request has no 'schema' (the project's label config)")
        version, check = await asyncio.gather(
            run_in_threadpool(predictor.model_version, body.label_config, engine.thresholds),
            run_in_threadpool(checker.check, body.hostname, body.access_token),
        )
        # memoised by model_version above; a worker thread all the same (a huge config takes a while to parse)
        skipped = await run_in_threadpool(lambda: predictor.mapping(body.label_config).describe_skipped())
        record, changed = state.record_setup(body.project, body.label_config, version, body.hostname,
                                             body.access_token, skipped)
        if changed:
            await run_in_threadpool(state.save, record)
        if record is not None:
            # jobs kept from before a restart that waited for the project's key go on; the title is looked up
            engine.jobs.provide_target(record.project, record.access, import_target(settings, record.access))
            titles.request(record.project, body.hostname, body.access_token)
        where = f"project {project_key(body.project)}" if body.project is not None else "a project"
        if skipped and hash(body.label_config) not in configs_reported:
            configs_reported.add(hash(body.label_config))
            log.warning("%s: serving the usable labels; skipped: %s", where, "; ".join(skipped))
        if check.needs_attention:  # refused, unreachable, or a legacy token that may stop working
            log.warning("%s: Label Studio access: %s", where, check.message)
        if record is not None:
            record.key_check = {"ok": check.ok, "status": check.status, "message": check.message,
                                "checked_at": check.checked_at}
        return {"model_version": version}

    @app.post("/predict")
    async def predict(body: PredictRequest, request: Request):
        arrived = time.monotonic()
        request.state.project = body.project
        engine = await engine_for(body.project)
        predictor = engine.predictor
        project = state.project(body.project)
        # Only this project's own /setup credentials (or the configured LABEL_STUDIO_URL/_API_KEY, which
        # the media fetcher prefers): never another project's token.
        access = project.access if project else LabelStudioAccess()
        label_config = body.label_config or (project.label_config if project else None)
        if not label_config:
            raise ApiError(422, "the predict request has no 'label_config' and no /setup was seen for its project")
        context = body.params.context if body.params else None
        if state.pending_predicts >= settings.max_pending_predicts:
            raise ApiError(
                503, f"busy: {state.pending_predicts} predict requests are already queued (MAX_PENDING_PREDICTS); retry later"
            )
        state.pending_predicts += 1
        try:
            if context or body.project is None:
                # Interactive pre-annotation (or a caller without a project): now, ahead of background jobs.
                results = await run_in_threadpool(
                    predictor.predict_tasks, body.tasks, label_config, context, access.hostname, access.access_token,
                    engine.thresholds,
                )
            else:
                results = await predict_within_deadline(engine, body, label_config, access, arrived, request)
            # Encoded in a worker thread, item by item (json_encoding.py): thousands of regions take long
            # enough to encode that one json.dumps would stall /health past Label Studio's 1 s.
            content = await run_in_threadpool(encode_answer, results)
        finally:
            state.pending_predicts -= 1
        return Response(content=content, media_type="application/json")

    async def predict_within_deadline(engine, body: PredictRequest, label_config: str, access: LabelStudioAccess,
                                      arrived: float, request: Request) -> list:
        jobs = engine.jobs
        plan = await run_in_threadpool(engine.predictor.plan, label_config, None, engine.thresholds)
        if plan.error is not None:
            return [{"model_version": plan.version, "error": plan.error} for _ in body.tasks]
        waiter = RequestWaiter(asyncio.get_running_loop())
        key = project_key(body.project)
        record = state.project(key)
        if record is not None and record.add_version(plan.version):  # served: listed by /versions from now on
            await run_in_threadpool(state.save, record)
        entries = jobs.submit(key, plan, access, import_target(settings, access), body.tasks, waiter, label_config)
        deadline = arrived + settings.predict_deadline
        disconnected = False
        try:
            while any(e is not None and not e.done for e in entries):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                waiter.event.clear()
                if not any(e is not None and not e.done for e in entries):
                    break
                try:
                    await asyncio.wait_for(waiter.event.wait(), timeout=min(left, 0.5))
                except asyncio.TimeoutError:
                    pass
                if await request.is_disconnected():
                    disconnected = True
                    break
        except asyncio.CancelledError:  # the server stops (SIGTERM): the tasks go to the job, which keeps them
            jobs.detach(entries, plan.version, True)
            raise
        results = jobs.detach(entries, plan.version, disconnected)
        later = sum(1 for r in results if r == [])
        if later:
            log.info("project %s: answered %d of %d tasks within %.0f s; the rest continue in the background",
                     key, len(results) - later, len(results), settings.predict_deadline)
        return results

    @app.post("/webhook")
    async def webhook(request: Request):
        # Label Studio waits 1 s for project events (ML_TIMEOUT_PREDICT for Start Training): answer at once.
        try:
            body = await request.body()
            payload = json.loads(body) if body else {}
        except Exception:
            payload = {}
        action = payload.get("action") if isinstance(payload, dict) else None
        if action != "START_TRAINING":
            log.debug("webhook event %s acknowledged", action)
            return {"status": "ok", "action": action}
        project = payload.get("project") if isinstance(payload.get("project"), dict) else {}
        record = state.project(project.get("id"))
        access = record.access if record else LabelStudioAccess()
        try:
            run = await run_in_threadpool(training.start, project, access)
        except (TrainingRefused, LabelConfigError) as exc:
            request.state.project = project.get("id")
            raise ApiError(422, f"Start Training refused: {exc}") from None
        log.info("project %s: training started (%s); progress on the status page", run.project, run.id)
        return {"status": "ok", "action": action, "job": run.id}

    @app.post("/training/cancel")
    async def cancel_training(project: str):
        if not training.cancel(project):
            raise ApiError(404, f"no training run in progress for project {project}")
        return {"status": "cancelling", "project": project}

    @app.get("/versions")
    async def versions(project: str | None = None):
        # Label Studio 1.23 asks without naming the project (GET /versions, no parameters); it calls
        # /setup for the project whose settings are open just before, so that project answers.
        record = state.project(project) if project is not None else state.last_setup_project()
        return {"versions": list(record.versions) if record else []}

    return app


def _basic_credentials(header: str | None) -> tuple[bytes, bytes]:
    if not header or not header.lower().startswith("basic "):
        return b"", b""
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return b"", b""
    user, _, password = decoded.partition(b":")
    return user, password


def app_factory() -> FastAPI:
    """For `uvicorn --factory backend.app.server:app_factory`: settings from the environment."""
    return create_app(Settings.from_env())
