"""Store predictions in Label Studio through its API, never twice.

Used by the server's background jobs (the tasks that did not fit in one `/predict` answer) and by
`python -m backend.prelabel`. Both may work on one project at the same time, and a user may click
*Retrieve Predictions* again meanwhile, so each chunk is imported under a lock shared by every process
on this machine, after asking Label Studio which of its tasks already hold a prediction of this
`model_version`: those are left alone.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field

from labelstudio.api_errors import is_connection_error

log = logging.getLogger(__name__)


class PredictionImportError(RuntimeError):
    """Label Studio did not take the predictions; the message names what to fix."""


@dataclass
class ImportOutcome:
    imported: list = field(default_factory=list)  # task ids stored now
    already: list = field(default_factory=list)  # task ids that held this model_version already


def field_of(obj, name, default=None):
    """A field of an SDK object or of a plain dict (the SDK returns objects, tests and exports dicts)."""
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


def has_version(task, version: str) -> bool:
    return any(field_of(p, "model_version") == version for p in (field_of(task, "predictions") or []))


@contextmanager
def project_lock(base_url: str, project_id):
    """An exclusive lock per Label Studio project, shared by every process of this machine."""
    key = hashlib.sha256(f"{base_url.rstrip('/')}|{project_id}".encode()).hexdigest()[:16]
    path = os.path.join(tempfile.gettempdir(), f"gdino-prelabel-{key}.lock")
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class PredictionImporter:
    """Imports prediction items `{"task", "result", "score", "model_version"}` into one project."""

    def __init__(self, client, base_url: str, project_id: int):
        self.client = client  # label_studio_sdk.LabelStudio
        self.base_url = base_url
        self.project_id = int(project_id)

    @classmethod
    def connect(cls, base_url: str, api_key: str, project_id: int, timeout: float = 60.0) -> "PredictionImporter":
        from label_studio_sdk import LabelStudio

        return cls(LabelStudio(base_url=base_url, api_key=api_key, timeout=timeout), base_url, project_id)

    def holding_version(self, task_ids: list, version: str) -> set:
        """The ids among `task_ids` whose task already holds a prediction of `version`."""
        query = json.dumps({"selectedItems": {"all": False, "included": [int(t) for t in task_ids]}})
        found = set()
        for task in self.client.tasks.list(project=self.project_id, query=query, fields="all",
                                           page_size=max(1, len(task_ids)), resolve_uri=False):
            if has_version(task, version) and field_of(task, "id") in set(task_ids):
                found.add(field_of(task, "id"))
        return found

    def import_items(self, items: list[dict], version: str) -> ImportOutcome:
        """Import what no other process stored meanwhile; raises PredictionImportError with a clear message."""
        outcome = ImportOutcome()
        if not items:
            return outcome
        try:
            with project_lock(self.base_url, self.project_id):
                already = self.holding_version([i["task"] for i in items], version)
                fresh = [i for i in items if i["task"] not in already]
                if fresh:
                    self.client.projects.import_predictions(id=self.project_id, request=fresh)
        except Exception as exc:
            raise PredictionImportError(describe_api_error(exc, self.base_url)) from None
        outcome.already = sorted(already)
        outcome.imported = [i["task"] for i in fresh]
        return outcome


def describe_api_error(exc: Exception, base_url: str) -> str:
    """A Label Studio API failure as one line that names the variable to fix."""
    status = getattr(exc, "status_code", None)
    if status in (401, 403):
        return (f"Label Studio at {base_url} refused the API key (HTTP {status}): set LABEL_STUDIO_API_KEY to a "
                "valid access token of a user of this project")
    if status == 404:
        return f"Label Studio at {base_url} has no such project or task (HTTP 404)"
    if status is not None:
        body = getattr(exc, "body", None)
        return f"Label Studio at {base_url} answered HTTP {status}: {body if body is not None else exc}"
    name = type(exc).__name__
    if is_connection_error(exc):
        return (f"could not reach Label Studio at {base_url} ({name}): set LABEL_STUDIO_URL to an address of "
                "Label Studio that this backend can reach")
    return f"Label Studio API call failed ({name}: {exc})"
