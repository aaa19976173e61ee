"""The Label Studio ML backend HTTP server (the protocol of Label Studio 1.23, spoken directly).

Routes: GET /health and GET / , POST /setup, POST /predict, POST /webhook, GET /versions.
Inference runs in a worker thread (the event loop stays free, so /health and /setup answer fast
during a long /predict); at most MAX_PENDING_PREDICTS predict requests wait or run at once.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .label_config import LabelConfigError
from .predictor import Predictor
from .settings import Settings
from .state import LabelStudioAccess, ServerState

log = logging.getLogger(__name__)
MODEL_CLASS = "GroundingDINO"


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


def load_predictor(settings: Settings) -> Predictor:
    """Load the detector once (raises ModelLoadError / ValueError with a clear message)."""
    from .detection import Detector, DetectorConfig

    detector = Detector.load(DetectorConfig(model=settings.model, device=settings.device, dtype=settings.dtype))
    return Predictor(detector, settings)


def create_app(settings: Settings, predictor: Predictor | None = None) -> FastAPI:
    state = ServerState(predictor=predictor)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if state.predictor is None:
            state.predictor = await run_in_threadpool(load_predictor, settings)
        yield

    app = FastAPI(title="Grounding DINO ML backend for Label Studio", lifespan=lifespan)
    app.state.backend = state

    # ----- errors: JSON with a message, never a stack trace ------------------------------------

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(LabelConfigError)
    async def _config_error(request: Request, exc: LabelConfigError):
        return JSONResponse({"detail": f"bad label config: {exc}"}, status_code=422)

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
        return JSONResponse({"detail": "; ".join(problems) or "invalid request"}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
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
                return JSONResponse(
                    {"detail": "authentication required: use the ML backend's BASIC_AUTH_USER/BASIC_AUTH_PASS"},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Basic realm="ml-backend", charset="UTF-8"'},
                )
            return await call_next(request)

    def get_predictor() -> Predictor:
        if state.predictor is None:
            raise ApiError(503, "the model is not loaded yet")
        return state.predictor

    # ----- routes ------------------------------------------------------------------------------

    def health_body() -> dict:
        return {"status": "UP", "model_class": MODEL_CLASS, "model": settings.model}

    @app.get("/health")
    async def health():
        return health_body()

    @app.get("/")
    async def root():
        return health_body()

    @app.post("/setup")
    async def setup(body: SetupRequest):
        predictor = get_predictor()
        if not body.label_config:
            raise ApiError(422, "the setup request has no 'schema' (the project's label config)")
        version = await run_in_threadpool(predictor.model_version, body.label_config)
        state.record_setup(body.project, body.label_config, version, body.hostname, body.access_token)
        return {"model_version": version}

    @app.post("/predict")
    async def predict(body: PredictRequest):
        predictor = get_predictor()
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

        def predict_as_json() -> bytes:
            results = predictor.predict_tasks(
                body.tasks, label_config, context, access.hostname, access.access_token
            )
            # Serialised here, in the worker thread: thousands of regions take long enough to
            # encode that doing it on the event loop would stall /health past Label Studio's 1 s.
            return json.dumps({"results": results}, allow_nan=False).encode()

        try:
            content = await run_in_threadpool(predict_as_json)
        finally:
            state.pending_predicts -= 1
        return Response(content=content, media_type="application/json")

    @app.post("/webhook")
    async def webhook(request: Request):
        try:
            body = await request.body()
            action = None
            if body:
                payload = json.loads(body)
                action = payload.get("action") if isinstance(payload, dict) else None
        except Exception:
            action = None
        log.info("webhook event %s acknowledged (no training in this backend)", action)
        return {"status": "ok", "action": action}

    @app.get("/versions")
    async def versions(project: str | None = None):
        # Label Studio asks with ?project=<id>; each project sees only its own versions.
        if project is not None:
            record = state.project(project)
            return {"versions": list(record.versions) if record else []}
        return {"versions": sorted({v for r in state.projects.values() for v in r.versions})}

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
    """For `uvicorn --factory backend.server:app_factory`: settings from the environment."""
    return create_app(Settings.from_env())
