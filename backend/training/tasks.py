"""Label Studio tasks as the evaluation toolkit reads them, fetched with label-studio-sdk.

The evaluation's export reader (``evaluation.labelstudio.export.load_export``) is the one home of
"which annotation is final" and "region -> box"; it reads an export *file*, so ``read_tasks`` writes
the tasks to a temporary export and reads it back (an adapter: the reader has no in-memory entry).
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from runtime.errors import InputError
from evaluation.labelstudio.export import Task, load_export


def as_dict(obj) -> dict:
    """A task, annotation or prediction as a plain dict (label-studio-sdk returns pydantic models)."""
    if isinstance(obj, dict):
        return obj
    dump = getattr(obj, "model_dump", None) or getattr(obj, "dict", None)
    if dump is None:
        raise TypeError(f"expected a Label Studio task, annotation or prediction, got {type(obj).__name__}")
    return dump()


def read_tasks(tasks: Iterable[dict]) -> list[Task]:
    """Tasks with a final (not cancelled) annotation, read by the evaluation's export reader."""
    tasks = list(tasks)
    if not tasks:
        return []
    with tempfile.TemporaryDirectory(prefix="ls-tasks-") as tmp:
        path = Path(tmp) / "export.json"
        path.write_text(json.dumps(tasks, default=str), encoding="utf-8")
        try:
            return [t for t in load_export(path) if t.annotation is not None]
        except InputError:  # "has no annotated tasks"
            return []


@dataclass(frozen=True)
class ProjectSnapshot:
    """A Label Studio project's label config and tasks (with annotations and predictions) at one moment."""

    project: str
    label_config: str
    tasks: tuple[dict, ...]
    title: str = ""

    def annotated_tasks(self) -> list[dict]:
        """Tasks with at least one annotation that was not cancelled (skipped)."""
        return [t for t in self.tasks
                if any(not as_dict(a).get("was_cancelled") for a in t.get("annotations") or [])]


def fetch_project(client, project_id: int, page_size: int = 100) -> ProjectSnapshot:
    """Read a project through label-studio-sdk (``LabelStudio(base_url=..., api_key=...)``)."""
    project = client.projects.get(id=project_id)
    tasks = client.tasks.list(project=project_id, fields="all", page_size=page_size, resolve_uri=False)
    return ProjectSnapshot(project=str(project_id), label_config=getattr(project, "label_config", "") or "",
                           tasks=tuple(as_dict(t) for t in tasks), title=getattr(project, "title", "") or "")
