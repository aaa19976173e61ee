"""Inference faults through /predict: out-of-memory injected into the detector's forward pass; Label
Studio down or the key wrong while resolving /data/upload/... URLs."""
from __future__ import annotations

import os
import time

import jwt
import pytest
import torch

from tests.backend.http_checks import no_trace
from tests.image_bytes import jpeg_bytes
from tests.reliability.misbehaving_host import closed_port, RawServer
from tests.reliability.predict_batches import (
    assert_good_unaffected, local_task, predict, same_result, sandwich, url_task,
)

pytestmark = pytest.mark.reliability


@pytest.fixture
def media_root(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    (root / "a.jpg").write_bytes(jpeg_bytes())
    (root / "poison.jpg").write_bytes(jpeg_bytes((99, 48), (10, 220, 10)))
    return root


class ForwardSpy:
    """Wraps the real Detector.forward: records batch sizes, raises `error` for batches over `max_ok`
    images, and always for a batch holding an image `poison_width` px wide."""

    def __init__(self, detector, monkeypatch, error, max_ok: int, poison_width: int | None = None):
        self.real = detector.forward
        self.error, self.max_ok, self.poison_width = error, max_ok, poison_width
        self.calls: list[int] = []
        monkeypatch.setattr(detector, "forward", self)

    def __call__(self, images, chunk):
        self.calls.append(len(images))
        if len(images) > self.max_ok or any(im.size[0] == self.poison_width for im in images):
            raise self.error
        return self.real(images, chunk)


OOM_ERRORS = {
    "torch.OutOfMemoryError": torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    "torch.cuda.OutOfMemoryError": torch.cuda.OutOfMemoryError("CUDA out of memory."),
    "RuntimeError CUDA": RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 7.79 GiB total)"),
    # what torch 2.13 raises on the CPU (torch.empty(2**45)): a plain RuntimeError without "out of memory"
    "RuntimeError CPU": RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                                     "memory: you tried to allocate 35184372088832 bytes. Error code 12 (Cannot "
                                     "allocate memory)"),
}


@pytest.mark.parametrize("kind", list(OOM_ERRORS))
def test_oom_batch_is_retried_in_halves_down_to_what_fits(make_client, tiny_detector, media_root, monkeypatch, kind):
    tasks = [local_task(i, "a.jpg") for i in range(8)]
    reference = predict(make_client(LOCAL_FILES_DOCUMENT_ROOT=media_root, BATCH_SIZE=2), tasks)
    spy = ForwardSpy(tiny_detector, monkeypatch, OOM_ERRORS[kind], max_ok=2)
    client = make_client(LOCAL_FILES_DOCUMENT_ROOT=media_root, BATCH_SIZE=8)
    results = predict(client, tasks)
    assert spy.calls == [8, 4, 2, 2, 4, 2, 2], spy.calls  # halves, depth first, in order
    for got, want in zip(results, reference):
        assert "error" not in got and same_result(got, want), (got, want)
    # the lock and the process survived: the next request runs normally
    assert "error" not in predict(client, tasks[:2])[0]


def test_oom_even_alone_fails_only_that_task(make_client, tiny_detector, media_root, monkeypatch):
    (reference,) = predict(make_client(LOCAL_FILES_DOCUMENT_ROOT=media_root, BATCH_SIZE=1), [local_task(0, "a.jpg")])
    spy = ForwardSpy(tiny_detector, monkeypatch, OOM_ERRORS["torch.OutOfMemoryError"], max_ok=1, poison_width=99)
    client = make_client(LOCAL_FILES_DOCUMENT_ROOT=media_root, BATCH_SIZE=4)
    tasks = sandwich([local_task(500 + i, "poison.jpg") for i in range(3)], local_task(0, "a.jpg"))  # 7 tasks
    results = predict(client, tasks)
    assert_good_unaffected(results, reference)
    for item in results[1::2]:
        assert "result" not in item and "out of memory" in item["error"] and "BATCH_SIZE" in item["error"], item
    # batches [g p g p] and [g p g]: each halved down to single images; the poisoned ones fail alone
    assert spy.calls == [4, 2, 1, 1, 2, 1, 1, 3, 1, 2, 1, 1], spy.calls
    assert max(spy.calls[1:]) <= 3 and spy.calls.count(1) == 7


def test_non_oom_error_fails_its_batch_only_with_a_message(make_client, tiny_detector, media_root, monkeypatch):
    """Any other inference error is not retried: the tasks of that micro-batch fail with the reason
    (no stack trace), the other micro-batches of the request are predicted."""
    (reference,) = predict(make_client(LOCAL_FILES_DOCUMENT_ROOT=media_root, BATCH_SIZE=1), [local_task(0, "a.jpg")])
    spy = ForwardSpy(tiny_detector, monkeypatch, RuntimeError("shape mismatch in layer 3"), max_ok=99, poison_width=99)
    client = make_client(LOCAL_FILES_DOCUMENT_ROOT=media_root, BATCH_SIZE=2)
    tasks = [local_task(0, "a.jpg"), local_task(1, "a.jpg"), local_task(2, "poison.jpg"), local_task(3, "a.jpg"),
             local_task(4, "a.jpg"), local_task(5, "a.jpg")]
    results = predict(client, tasks)
    assert ["result" in r for r in results] == [True, True, False, False, True, True]
    for item in results[2:4]:
        assert "inference failed" in item["error"] and "shape mismatch" in item["error"]
        no_trace(item["error"])
    for item in results[:2] + results[4:]:
        assert same_result(item, reference)
    assert spy.calls == [2, 2, 2]


# ----- Label Studio down, or the key wrong -----------------------------------------------------------

LEGACY = "0123456789abcdef0123456789abcdef01234567"


def pat(seconds=3600) -> str:
    """A personal access token (a JWT refresh token) as Label Studio issues them."""
    return jwt.encode({"token_type": "refresh", "exp": int(time.time()) + seconds, "user_id": 1,
                       "jti": os.urandom(8).hex()}, "a-test-signing-key-of-at-least-32-bytes", algorithm="HS256")


def upload_tasks():
    return [url_task(i, f"/data/upload/7/{i}-photo.jpg") for i in range(1, 3)]


def run_upload_case(make_client, media_root, reference, env: dict, setup: dict | None = None) -> list[dict]:
    client = make_client(LOCAL_FILES_DOCUMENT_ROOT=media_root, **env)
    if setup is not None:
        assert client.post("/setup", json={"project": "7.1", "schema": setup.pop("schema"), **setup}).status_code == 200
    body_tasks = sandwich(upload_tasks(), local_task(0, "a.jpg"))
    response = client.post("/predict", json={"tasks": body_tasks, "project": "7.1",
                                             "label_config": reference["config"]})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == len(body_tasks)
    assert_good_unaffected(results, reference["item"])
    for item in results[1::2]:
        assert "result" not in item
        no_trace(item["error"])
    return [item["error"] for item in results[1::2]]


@pytest.fixture
def reference(make_client, media_root):
    from tests.reliability.predict_batches import CONFIG

    (item,) = predict(make_client(LOCAL_FILES_DOCUMENT_ROOT=media_root), [local_task(0, "a.jpg")])
    return {"item": item, "config": CONFIG}


@pytest.mark.parametrize("case", ["legacy token", "personal access token", "hostname from /setup", "not configured"])
def test_label_studio_down_names_label_studio_url(make_client, media_root, reference, case):
    down = f"http://127.0.0.1:{closed_port()}"
    env, setup = {}, None
    if case == "legacy token":
        env = {"LABEL_STUDIO_URL": down, "LABEL_STUDIO_API_KEY": LEGACY}
    elif case == "personal access token":  # the token refresh is the first request to fail
        env = {"LABEL_STUDIO_URL": down, "LABEL_STUDIO_API_KEY": pat()}
    elif case == "hostname from /setup":  # Label Studio's idea of its URL is unreachable from here
        setup = {"schema": reference["config"], "hostname": down, "access_token": LEGACY}
    for error in run_upload_case(make_client, media_root, reference, env, setup=setup):
        assert "LABEL_STUDIO_URL" in error, (case, error)
        assert "photo.jpg" in error or case == "personal access token", (case, error)
        assert "refused the API key" not in error, f"Label Studio is down, the key is not at fault: {error}"


def test_label_studio_hanging_names_the_timeout(make_client, media_root, reference):
    raw = RawServer()
    try:
        env = {"LABEL_STUDIO_URL": raw.url + "/hang", "LABEL_STUDIO_API_KEY": LEGACY, "DOWNLOAD_TIMEOUT": 1}
        for error in run_upload_case(make_client, media_root, reference, env):
            assert "timed out" in error and "DOWNLOAD_TIMEOUT" in error, error
    finally:
        raw.close()


@pytest.mark.parametrize("status", [401, 403])
def test_wrong_key_names_label_studio_api_key(make_client, media_root, reference, http_server, status):
    def refuse(req):
        return status, {"Content-Type": "application/json"}, b'{"detail": "Invalid token."}'

    for i in (1, 2):
        http_server.routes[f"/data/upload/7/{i}-photo.jpg"] = refuse
    http_server.routes["/api/token/refresh/"] = lambda req: (401, {"Content-Type": "application/json"},
                                                             b'{"detail": "Token is invalid or expired"}')
    for key in (LEGACY, pat(), pat(-60)):
        env = {"LABEL_STUDIO_URL": http_server.url, "LABEL_STUDIO_API_KEY": key}
        for error in run_upload_case(make_client, media_root, reference, env):
            assert "LABEL_STUDIO_API_KEY" in error and "refused" in error, (key[:8], error)
            assert key not in error, "the token must not be echoed"
    # a key Label Studio refuses, sent by Label Studio itself in /setup (no env): still names the setting
    for error in run_upload_case(make_client, media_root, reference, {},
                                 setup={"schema": reference["config"], "hostname": http_server.url,
                                        "access_token": LEGACY}):
        assert "LABEL_STUDIO_API_KEY" in error, error
