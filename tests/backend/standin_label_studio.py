"""A stand-in for `label_studio_sdk.LabelStudio`: the calls bulk pre-labelling and the importer make, on
in-memory tasks, recording every page and import request (the real Label Studio is in tests/e2e)."""
from __future__ import annotations

import json
import threading
from types import SimpleNamespace


class StandInLabelStudio:
    def __init__(self, tasks: list[dict], label_config: str, project_id: int = 7):
        self.project_id = project_id
        self.label_config = label_config
        self.stored = {t["id"]: {"data": t["data"], "predictions": list(t.get("predictions", []))} for t in tasks}
        self.pages: list[list[int]] = []  # task ids of each page listed (paging through the project)
        self.checks: list[list[int]] = []  # task ids the importer asked about before importing
        self.imports: list[list[int]] = []  # task ids of each import request
        self.refuse_imports_after: int | None = None  # import requests answered before refusing
        self.before_check = None  # called with the ids the importer asks about: another process storing meanwhile
        self._lock = threading.Lock()
        self.projects = SimpleNamespace(get=self._get_project, import_predictions=self._import)
        self.tasks = SimpleNamespace(list=self._list)

    def predictions(self, task_id: int) -> list[dict]:
        return self.stored[task_id]["predictions"]

    # ----- the SDK calls ---------------------------------------------------------------------------

    def _get_project(self, id):
        if id != self.project_id:
            raise StandInApiError(404, {"detail": "Not found."})
        return SimpleNamespace(id=id, label_config=self.label_config, task_number=len(self.stored))

    def _list(self, project, page_size, fields, resolve_uri, query=None):
        assert project == self.project_id and fields == "all" and resolve_uri is False
        ids = sorted(self.stored)
        if query is not None:
            wanted = set(json.loads(query)["selectedItems"]["included"])
            self.checks.append(sorted(wanted))
            if self.before_check is not None:
                self.before_check(sorted(wanted))
            ids = [i for i in ids if i in wanted]
        for start in range(0, len(ids), page_size):  # fetched lazily, page by page, as the SDK's pager
            page = ids[start : start + page_size]
            if query is None:
                self.pages.append(page)
            for task_id in page:
                with self._lock:
                    task = self.stored[task_id]
                    listed = SimpleNamespace(id=task_id, data=dict(task["data"]), meta={},
                                             predictions=[dict(p) for p in task["predictions"]])
                yield listed

    def _import(self, id, request):
        assert id == self.project_id
        if self.refuse_imports_after is not None and len(self.imports) >= self.refuse_imports_after:
            raise StandInApiError(401, {"detail": "Invalid token."})
        with self._lock:
            self.imports.append([item["task"] for item in request])
            for item in request:
                self.stored[item["task"]]["predictions"].append(dict(item))


class StandInApiError(Exception):
    """The SDK's ApiError: a status code and a body."""

    def __init__(self, status_code: int, body):
        super().__init__(f"status_code: {status_code}, body: {body}")
        self.status_code, self.body = status_code, body
