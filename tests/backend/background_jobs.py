"""Shared by the background-job tests (serving/test_jobs.py, test_restart.py, test_devices.py): a detector the test holds and
releases, the requests they send and a wait for the jobs to finish (with a deadline)."""
from __future__ import annotations

import threading
import time

from tests.label_studio_requests import ls_body
from tests.waiting import wait_until

CONFIG = ls_body("setup")["schema"]
PROJECT = "7.1746612998"


class GatedDetector:
    """The tiny detector, letting `free` detect calls through and holding the others until released:
    the test decides how much is finished by the deadline, whatever the machine's speed."""

    def __init__(self, detector, free=1, seconds=0.0):
        self._detector, self.free, self.seconds = detector, free, seconds
        self.released = threading.Event()
        self.calls = 0
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self._detector, name)

    def detect(self, *args, **kwargs):
        with self._lock:
            self.calls += 1
            held = self.calls > self.free
        if held:
            assert self.released.wait(120), "the test never released the detector"
        time.sleep(self.seconds)
        return self._detector.detect(*args, **kwargs)


def tasks(n, start=1):
    return [{"id": i, "data": {"image": "/data/local-files/?d=a.jpg"}} for i in range(start, start + n)]


def post(client, task_list, project=PROJECT):
    response = client.post("/predict", json={"tasks": task_list, "label_config": CONFIG, "project": project})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == len(task_list), "exactly one item per task"
    return results


def all_ended(jobs: list[dict]) -> bool:
    """The status document's jobs are there and none is queued or running."""
    return bool(jobs) and all(j["state"] not in ("queued", "running") for j in jobs)


def wait_for_jobs(client, timeout=60.0, interval=0.1) -> list[dict]:
    """The jobs of `client`'s /status once all have ended (`client`: the app's test client, or an
    httpx.Client with the base URL of a backend process)."""
    return wait_until(lambda: client.get("/status").json()["jobs"], "the background jobs to end", timeout,
                      interval, holds=all_ended)
