"""The status document of `GET /status` (and of the status page), typed, and built in one place.

`build_status` assembles it from the server's parts; the jobs (`backend.serving.job_status.JobRow`,
from prediction jobs, kept jobs and training runs), the projects' records and the devices contribute
typed parts. `GET /status` serves it as JSON; `status_page.render_status_page` renders it.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backend.serving.job_status import JobRow


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")


class ModelStatus(_Part):
    name: str
    path: str
    device: str
    dtype: str
    levers: dict[str, Any]
    warnings: list[str]


class ServerStatus(_Part):
    started_at: float
    predict_deadline_s: float
    ml_timeout_predict_s: float
    pending_predicts: int
    version: str
    batch_size: int | None = None


class KeyCheck(_Part):
    """The last /setup's check of the project's Label Studio key (`status`: e.g. "legacy" for a legacy token)."""

    ok: bool
    message: str
    checked_at: float | None
    status: str | None = None


class LabelStudioLink(_Part):
    url: str | None
    key_source: str | None
    check: KeyCheck | None


class ProjectStatus(_Part):
    project: str
    model_versions: list[str]
    label_studio: LabelStudioLink
    skipped_labels: list[str]
    last_setup_at: float | None
    title: str | None = None
    learned: list[str] = Field(default_factory=list)  # what Start Training taught the project, in words


class FailureRow(_Part):
    at: float
    project: str
    task: Any  # the task's id as Label Studio (or a caller) sent it: any JSON value, shown as text
    image: str | None
    reason: str


class DeviceRow(_Part):
    name: str
    busy: bool
    done: int


class StatusDocument(_Part):
    model: ModelStatus
    server: ServerStatus
    projects: list[ProjectStatus]
    jobs: list[JobRow]
    failures: list[FailureRow]
    devices: list[DeviceRow]

    def to_json(self) -> dict:
        """The JSON of `GET /status`: the fields each part was given (an optional one left out stays out)."""
        return self.model_dump(exclude_unset=True)

    @classmethod
    def from_json(cls, data: Any) -> "StatusDocument":
        """A document read back (e.g. by a test or a tool); a malformed one raises StatusDocumentError
        naming the first field that is wrong, e.g. `jobs[2] lacks 'eta_s'`."""
        if not isinstance(data, dict):
            raise StatusDocumentError(f"the status document must be a JSON object, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise StatusDocumentError(_first_problem(exc, data)) from None


class StatusDocumentError(ValueError):
    """The status document lacks a field the page shows (a bug of the producer, named precisely)."""


def _first_problem(exc: ValidationError, data: dict) -> str:
    error = exc.errors()[0]
    loc = error["loc"]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[:-1]).lstrip(".")
    if error["type"] == "missing":
        if len(loc) == 1:
            return f"the status document lacks the section '{loc[0]}'"
        return f"{where} lacks '{loc[-1]}'"
    value = error.get("input")
    path = f"{where}[{loc[-1]}]" if isinstance(loc[-1], int) else f"{where}.{loc[-1]}".lstrip(".")
    if error["type"] == "list_type":
        return f"'{path}' must be a list, got {type(value).__name__}"
    if error["type"] in ("model_type", "model_attributes_type", "dict_type"):
        return f"{path} must be an object, got {type(value).__name__}"
    return f"{path}: {error['msg']} (got {value!r})"
