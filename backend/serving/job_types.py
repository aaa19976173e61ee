"""The objects of a background prediction job: a request waiting for its tasks, one task's entry, the job."""
from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from labelstudio.target import LabelStudioTarget

from .items import PredictionItem
from .job_status import JobRow, JobState, rate_and_eta
from .work import PredictionPlan, TaskWork


class RequestWaiter:
    """A `/predict` request waiting (on the event loop) for its tasks."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.event = asyncio.Event()

    def notify(self) -> None:
        self.loop.call_soon_threadsafe(self.event.set)


@dataclass(eq=False)
class TaskEntry:
    job: "PredictionJob"
    work: TaskWork
    key: object  # the task id (or a private key for a task without one)
    waiter: RequestWaiter | None = None  # a request that will take the result in its answer
    item: PredictionItem | None = None
    done: bool = False

    @property
    def deliver_by_import(self) -> bool:
        return self.waiter is None


@dataclass(eq=False)
class PredictionJob:
    id: str
    project: str
    plan: PredictionPlan
    access: LabelStudioTarget  # what the project's /setup sent (for media)
    target: LabelStudioTarget | None  # where its predictions are stored: complete, or None
    queue: deque = field(default_factory=deque)  # TaskEntry not started
    registry: dict = field(default_factory=dict)  # key -> TaskEntry queued, running or awaiting import
    to_import: list = field(default_factory=list)
    state: JobState = JobState.QUEUED
    total: int = 0
    done: int = 0
    failed: int = 0
    imported: int = 0
    answered: int = 0  # returned in a /predict answer
    already: int = 0  # skipped at import: Label Studio had this version already
    dropped: int = 0  # given up (nothing stored): the next click predicts them
    started_at: float | None = None
    finished_at: float | None = None
    message: str | None = None
    import_error: str | None = None  # set when Label Studio refused an import; cleared by the next click
    label_config: str | None = None  # to predict the tasks again after a restart
    key_source: str | None = None  # which key stores the predictions (kept with the job; the key is not)

    @property
    def version(self) -> str:
        return self.plan.version

    @property
    def idle(self) -> bool:
        """Nothing queued, running, awaiting an answer or awaiting import."""
        return not self.queue and not self.to_import and not self.registry

    def snapshot(self) -> JobRow:
        now = time.time()
        elapsed = (self.finished_at or now) - self.started_at if self.started_at else None
        left = self.total - self.done
        rate, eta = rate_and_eta(self.done / elapsed if elapsed and self.done else None, left,
                                 left > 0 and self.state == JobState.RUNNING, digits=3)
        return JobRow(
            id=self.id, project=self.project, model_version=self.version, state=self.state,
            total=self.total, done=self.done, failed=self.failed, imported=self.imported,
            answered=self.answered, already_stored=self.already, dropped=self.dropped,
            rate_per_s=rate, eta_s=eta, started_at=self.started_at, finished_at=self.finished_at,
            message=self.message, stores_in_background=self.target is not None,
        )
