"""POST /setup: Label Studio connects a project (its label config, address and key) -> the model version."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from backend.project_key import project_key

from ..context import AppContext, context_of, import_target
from ..errors import ApiError

log = logging.getLogger("backend.app.server")
router = APIRouter()


class SetupRequest(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    project: str | int | None = None
    label_config: str | None = Field(default=None, alias="schema")
    hostname: str | None = None
    access_token: str | None = None
    extra_params: Any = None


@router.post("/setup")
async def setup(body: SetupRequest, request: Request, ctx: AppContext = Depends(context_of)):
    request.state.project = body.project
    engine = await ctx.engine_for(body.project)
    predictor = engine.predictor
    if not body.label_config:
        raise ApiError(422, "the setup request has no 'schema' (the project's label config)")
    version, check = await asyncio.gather(
        run_in_threadpool(predictor.model_version, body.label_config, engine.thresholds),
        run_in_threadpool(ctx.checker.check, body.hostname, body.access_token),
    )
    # memoised by model_version above; a worker thread all the same (a huge config takes a while to parse)
    skipped = await run_in_threadpool(lambda: predictor.mapping(body.label_config).describe_skipped())
    record, changed = ctx.state.record_setup(body.project, body.label_config, version, body.hostname,
                                             body.access_token, skipped)
    if changed:
        await run_in_threadpool(ctx.state.save, record)
    if record is not None:
        # jobs kept from before a restart that waited for the project's key go on; the title is looked up
        engine.jobs.provide_target(record.project, record.access, import_target(ctx.settings, record.access))
        ctx.titles.request(record.project, body.hostname, body.access_token)
    where = f"project {project_key(body.project)}" if body.project is not None else "a project"
    if skipped and hash(body.label_config) not in ctx.configs_reported:
        ctx.configs_reported.add(hash(body.label_config))
        log.warning("%s: serving the usable labels; skipped: %s", where, "; ".join(skipped))
    if check.needs_attention and ctx.access_reported.get(where) != check.message:
        # refused, unreachable, or a legacy token that may stop working: said once, again when it changes
        log.warning("%s: Label Studio access: %s", where, check.message)
    ctx.access_reported[where] = check.message if check.needs_attention else ""
    if record is not None:
        record.key_check = {"ok": check.ok, "status": check.status, "message": check.message,
                            "checked_at": check.checked_at}
    return {"model_version": version}
