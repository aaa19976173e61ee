"""GET /health, GET / (JSON for Label Studio and curl, the status page for a browser), GET /status, GET /versions."""
from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response

from ..context import AppContext, context_of
from ..status_page import render_status_page

router = APIRouter()


@router.get("/health")
async def health(ctx: AppContext = Depends(context_of)):
    return ctx.health()


@router.get("/")
async def root(request: Request, ctx: AppContext = Depends(context_of)):
    if "text/html" in request.headers.get("accept", ""):
        # built in a worker thread: a long list of jobs and failures must not hold up /health
        return HTMLResponse(await run_in_threadpool(lambda: render_status_page(ctx.status_document())))
    return ctx.health()


@router.get("/status")
async def status(ctx: AppContext = Depends(context_of)):
    return Response(await run_in_threadpool(lambda: json.dumps(ctx.status_document().to_json()).encode()),
                    media_type="application/json")


@router.get("/versions")
async def versions(project: str | None = None, ctx: AppContext = Depends(context_of)):
    # Label Studio 1.23 asks without naming the project (GET /versions, no parameters); it calls
    # /setup for the project whose settings are open just before, so that project answers.
    record = ctx.state.project(project) if project is not None else ctx.state.last_setup_project()
    return {"versions": list(record.versions) if record else []}
