"""POST /predict: answers before Label Studio's ML_TIMEOUT_PREDICT with every task finished by then; the
rest goes on in a background job (`backend.serving.jobs`) that imports its predictions through Label
Studio's API. Interactive pre-annotation runs at once, ahead of any background work."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from backend.project_key import project_key
from backend.serving.items import PredictionItem
from backend.serving.jobs import RequestWaiter
from labelstudio.target import LabelStudioTarget
from runtime.json_encoding import encode_answer

from ..context import AppContext, context_of, import_target
from ..errors import ApiError

log = logging.getLogger("backend.app.server")
router = APIRouter()


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


@router.post("/predict")
async def predict(body: PredictRequest, request: Request, ctx: AppContext = Depends(context_of)):
    arrived = time.monotonic()
    request.state.project = body.project
    engine = await ctx.engine_for(body.project)
    predictor = engine.predictor
    project = ctx.state.project(body.project)
    access = ctx.access_of(body.project)
    label_config = body.label_config or (project.label_config if project else None)
    if not label_config:
        raise ApiError(422, "the predict request has no 'label_config' and no /setup was seen for its project")
    context = body.params.context if body.params else None
    state, settings = ctx.state, ctx.settings
    if state.pending_predicts >= settings.max_pending_predicts:
        raise ApiError(
            503, f"busy: {state.pending_predicts} predict requests are already queued (MAX_PENDING_PREDICTS); retry later"
        )
    state.pending_predicts += 1
    try:
        if context or body.project is None:
            # Interactive pre-annotation (or a caller without a project): now, ahead of background jobs.
            results = await run_in_threadpool(
                predictor.predict_tasks, body.tasks, label_config, context, access.url, access.key,
                engine.thresholds,
            )
        else:
            results = await _within_deadline(ctx, engine, body, label_config, access, arrived, request)
        # Encoded in a worker thread, item by item (json_encoding.py): thousands of regions take long
        # enough to encode that one json.dumps would stall /health past Label Studio's 1 s.
        content = await run_in_threadpool(encode_answer, results)
    finally:
        state.pending_predicts -= 1
    return Response(content=content, media_type="application/json")


async def _within_deadline(ctx: AppContext, engine, body: PredictRequest, label_config: str,
                           access: LabelStudioTarget, arrived: float, request: Request) -> list:
    """The request's tasks through the project's job; answers with what is done by PREDICT_DEADLINE (or when
    the client goes), the rest stays in the job and is imported when done."""
    jobs = engine.jobs
    plan = await run_in_threadpool(engine.predictor.plan, label_config, None, engine.thresholds)
    if plan.error is not None:
        return [PredictionItem.failed(plan.version, plan.error).as_json() for _ in body.tasks]
    waiter = RequestWaiter(asyncio.get_running_loop())
    key = project_key(body.project)
    record = ctx.state.project(key)
    if record is not None and record.add_version(plan.version):  # served: listed by /versions from now on
        await run_in_threadpool(ctx.state.save, record)
    entries = jobs.submit(key, plan, access, import_target(ctx.settings, access), body.tasks, waiter, label_config)
    deadline = arrived + ctx.settings.predict_deadline
    disconnected = False
    try:
        disconnected = await _wait(entries, waiter, deadline, request)
    except asyncio.CancelledError:  # the server stops (SIGTERM): the tasks go to the job, which keeps them
        jobs.detach(entries, plan.version, True)
        raise
    results = jobs.detach(entries, plan.version, disconnected)
    later = sum(1 for r in results if r == [])
    if later:
        log.info("project %s: answered %d of %d tasks within %.0f s; the rest continue in the background",
                 key, len(results) - later, len(results), ctx.settings.predict_deadline)
    return results


async def _wait(entries: list, waiter: RequestWaiter, deadline: float, request: Request) -> bool:
    """Until every entry is done or the deadline passes; True when the client went away meanwhile."""
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
            return True
    return False
