"""Errors as JSON with a message, never a stack trace; 4xx reasons logged for the user."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.project_key import project_key
from labelstudio.label_sets import LabelConfigError

log = logging.getLogger("backend.app.server")  # the server's log, as before the routes had their own modules


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def client_error(request: Request, status: int, message: str, project=None) -> JSONResponse:
    project = project if project is not None else getattr(request.state, "project", None)
    log.warning("%s %s -> %d (project %s): %s", request.method, request.url.path, status,
                project_key(project) if project is not None else "unknown", message)
    return JSONResponse({"detail": message}, status_code=status)


def validation_message(exc: RequestValidationError) -> tuple[int, str]:
    """(status, message) for a request body that is not what the route takes, every problem named."""
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
    return status, "; ".join(problems) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
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
        status, message = validation_message(exc)
        body = getattr(exc, "body", None)
        project = body.get("project") if isinstance(body, dict) else None
        return client_error(request, status, message, project)

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
