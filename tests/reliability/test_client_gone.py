"""A /predict whose client went away (Label Studio timed out, the connection closed) is not worked on twice.

The real server (`python -m backend`): the first request's client gives up after 1 s; the backend notices,
keeps the tasks in the project's job for the background import, and Label Studio's retry of the same
tasks queues nothing new.
"""
from __future__ import annotations

import time

import httpx
import pytest

from tests.image_bytes import jpeg_bytes
from tests.reliability.misbehaving_host import RawServer
from tests.reliability.predict_batches import CONFIG
from tests.waiting import wait_until

pytestmark = [pytest.mark.reliability, pytest.mark.slow]


def test_a_request_whose_client_left_is_not_worked_on_twice(start_backend, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    (media / "a.jpg").write_bytes(jpeg_bytes())
    # A Label Studio that never answers: background imports wait, so every task stays in the job.
    hanging = RawServer()
    server = start_backend(LOCAL_FILES_DOCUMENT_ROOT=str(media), ML_TIMEOUT_PREDICT="60",
                           LABEL_STUDIO_URL=f"{hanging.url}/hang", LABEL_STUDIO_API_KEY="k")
    body = {"tasks": [{"id": i, "data": {"image": "/data/local-files/?d=a.jpg"}} for i in range(1, 31)],
            "label_config": CONFIG, "project": "4.1"}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/predict", json=body, timeout=1.0)
    # the backend looks for a closed connection every 0.5 s: wait (with a deadline) until it let the request go
    wait_until(lambda: httpx.get(f"{server.url}/status", timeout=5).json()["server"]["pending_predicts"],
               "the backend to notice the client had left (no pending predict)", 30, 0.1, holds=lambda n: not n)
    started = time.monotonic()
    retry = httpx.post(f"{server.url}/predict", json=body, timeout=60)
    assert retry.status_code == 200
    results = retry.json()["results"]
    assert len(results) == 30
    # Tasks still in the job are answered with no prediction at once; none is queued a second time.
    assert time.monotonic() - started < 10
    assert results == [[]] * 30, "the first request's client left: nothing is answered twice either"
    (job,) = httpx.get(f"{server.url}/status", timeout=5).json()["jobs"]
    assert job["total"] == 30 and job["answered"] == 0, job
    hanging.close()
