"""POST /webhook (Start Training and the project events Label Studio sends), POST /training/cancel."""
from __future__ import annotations

import json
import logging

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from backend.training.service import TrainingRefused
from labelstudio.label_sets import LabelConfigError

from ..context import AppContext, context_of
from ..errors import ApiError

log = logging.getLogger("backend.app.server")
router = APIRouter()


@router.post("/webhook")
async def webhook(request: Request, ctx: AppContext = Depends(context_of)):
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
    access = ctx.access_of(project.get("id"))
    try:
        run = await run_in_threadpool(ctx.training.start, project, access)
    except (TrainingRefused, LabelConfigError) as exc:
        request.state.project = project.get("id")
        raise ApiError(422, f"Start Training refused: {exc}") from None
    log.info("project %s: training started (%s); progress on the status page", run.project, run.id)
    return {"status": "ok", "action": action, "job": run.id}


@router.post("/training/cancel")
async def cancel_training(project: str, ctx: AppContext = Depends(context_of)):
    if not ctx.training.cancel(project):
        raise ApiError(404, f"no training run in progress for project {project}")
    return {"status": "cancelling", "project": project}
