"""Fixtures of the reliability suite: the real app in-process, the real server as a subprocess, media.

Every test module here is marked `reliability` (run alone with `-m reliability`). Label Studio's verbatim
bodies, the images and the backend process are the other tests' (tests/label_studio_requests.py,
tests/image_bytes.py, tests/backend/processes.py); the local HTTP server is tests/conftest.py's `http_server`.
"""
from __future__ import annotations

import functools

import pytest

from tests.backend.processes import BackendProcess


@pytest.fixture
def make_client(make_client):
    """The shared app fixture, answering unexpected errors as a 500 instead of raising in the test."""
    return functools.partial(make_client, raise_server_exceptions=False)


@pytest.fixture
def start_backend(tiny_model_dir, tmp_path):
    procs = []

    def start(**env) -> BackendProcess:
        # STATE_DIR per test: kept jobs and project records of one run never reach another
        base = {"GROUNDING_DINO_MODEL": str(tiny_model_dir), "DEVICE": "cpu", "BOX_THRESHOLD": "0.3",
                "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "STATE_DIR": str(tmp_path / "state")}
        base.update(env)
        proc = BackendProcess(base, tmp_path / f"backend-{len(procs)}.log")
        procs.append(proc)
        proc.wait_ready()
        return proc

    yield start
    for proc in procs:
        proc.stop()
