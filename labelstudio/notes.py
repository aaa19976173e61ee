"""Optional: a failed task's reason written into one of its data fields, where the team sees it.

Label Studio 1.23 Community has no comments API; a task data field becomes a Data Manager column that
labellers see and can filter on ("show me the tasks the model could not pre-label"). Off unless
FAILED_TASK_FIELD names the field. The field is cleared once the task is predicted. Writes go through a
background thread: a slow or absent Label Studio never delays a prediction.
"""
from __future__ import annotations

import logging
import queue
import threading
import time

log = logging.getLogger(__name__)


class FailureNotes:
    def __init__(self, field: str, client_factory):
        self.field = field
        self.client_factory = client_factory  # (url, api_key) -> label_studio_sdk.LabelStudio-like
        self._queue: queue.Queue = queue.Queue(maxsize=10_000)
        self._clients: dict = {}
        self._thread = threading.Thread(target=self._run, name="failure-notes", daemon=True)
        self._thread.start()

    def failed(self, target, task: dict, reason: str, version: str) -> None:
        if target is None or not isinstance(task.get("id"), int) or not isinstance(task.get("data"), dict):
            return
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        note = f"{reason} ({version}, {stamp})"
        if task["data"].get(self.field) != note:
            self._put(target, task, note)

    def succeeded(self, target, task: dict) -> None:
        if target is not None and isinstance(task.get("data"), dict) and self.field in task["data"]:
            self._put(target, task, None)

    def stop(self) -> None:
        self._queue.put(None)

    def _put(self, target, task, note) -> None:
        try:
            self._queue.put_nowait((target, task["id"], dict(task["data"]), note))
        except queue.Full:
            log.warning("too many failure notes waiting; task %s's note is skipped", task.get("id"))

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            target, task_id, data, note = job
            if note is None:
                data.pop(self.field, None)
            else:
                data[self.field] = note
            try:
                key = (target.url, target.key)
                if key not in self._clients:
                    self._clients[key] = self.client_factory(target.url, target.key)
                self._clients[key].tasks.update(id=task_id, data=data)
            except Exception as exc:  # a note is a courtesy: log and go on
                log.warning("could not write %s of task %s in Label Studio (%s: %s)", self.field, task_id,
                            type(exc).__name__, exc)


def sdk_client(url: str, api_key: str):
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=url, api_key=api_key, timeout=30)
