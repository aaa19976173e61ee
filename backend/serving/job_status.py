"""A job's row in the status document, typed: its state (an Enum) and its progress with rate and ETA.

Prediction jobs (`jobs.py`), kept jobs that were not resumed (`job_journal.py`) and training runs
(`backend.training.service`) each contribute rows of this one shape; the status document
(`backend.app.status`) lists them and the status page shows them.
"""
from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict


class JobState(str, Enum):
    """Where a job is. `waiting`: a job kept from before a restart waits for its project's key (/setup)."""

    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DROPPED = "dropped"  # kept from before a restart, not resumed (the row says why)

    def __str__(self) -> str:  # in messages and JSON: the plain value
        return self.value

    @property
    def active(self) -> bool:
        return self in ACTIVE_STATES


ACTIVE_STATES = frozenset({JobState.RUNNING, JobState.WAITING, JobState.QUEUED})


class JobRow(BaseModel):
    """One job on the status page. `unit` is what `total`/`done` count ("tasks" unless said)."""

    model_config = ConfigDict(extra="allow")

    id: str
    project: str
    model_version: str
    state: JobState
    total: int
    done: int
    failed: int
    imported: int
    rate_per_s: float | None
    eta_s: float | None
    started_at: float | None
    finished_at: float | None
    message: str | None
    # optional: a prediction job's answered/already_stored/dropped/stores_in_background, a training run's kind/unit
    answered: int | None = None
    unit: str = "tasks"


def rate_and_eta(rate: float | None, left: int, estimating: bool, digits: int) -> tuple[float | None, float | None]:
    """The row's (rate rounded to `digits`, seconds left) from a measured rate (units per second, None before
    anything was measured) and the units left; the ETA only while `estimating` (the job's own rule)."""
    eta = round(left / rate, 1) if rate and estimating else None
    return (round(rate, digits) if rate else None), eta
