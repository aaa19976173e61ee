"""HTTP Basic auth on everything but /webhook (BASIC_AUTH_USER / BASIC_AUTH_PASS), compared in constant time."""
from __future__ import annotations

import base64
import binascii
import logging
import secrets

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from backend.settings import Settings

log = logging.getLogger("backend.app.server")


def install_basic_auth(app: FastAPI, settings: Settings) -> None:
    if not settings.auth_enabled:
        return
    user = settings.basic_auth_user.encode()
    password = settings.basic_auth_pass.encode()

    @app.middleware("http")
    async def basic_auth(request: Request, call_next):
        if request.url.path.rstrip("/") == "/webhook":
            return await call_next(request)
        given_user, given_pass = basic_credentials(request.headers.get("authorization"))
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


def basic_credentials(header: str | None) -> tuple[bytes, bytes]:
    if not header or not header.lower().startswith("basic "):
        return b"", b""
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return b"", b""
    user, _, password = decoded.partition(b":")
    return user, password
