"""Fixtures of the reliability suite: the real app in-process, the real server as a subprocess, media.

Every test module here is marked `reliability` (run alone with `-m reliability`). Helpers of the backend
tests (Label Studio's verbatim bodies, JPEGs, the local HTTP server) are reused from tests/backend.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "backend"))  # backend_helpers

from backend_helpers import LocalServer  # noqa: E402
from rel_helpers import BackendProcess  # noqa: E402


@pytest.fixture
def make_settings(tiny_model_dir):
    from backend.settings import Settings

    def make(**env) -> Settings:
        base = {"GROUNDING_DINO_MODEL": str(tiny_model_dir), "DEVICE": "cpu", "BOX_THRESHOLD": "0.3"}
        base.update({k: str(v) for k, v in env.items()})
        return Settings.from_env(base)

    return make


@pytest.fixture
def make_client(tiny_detector, make_settings):
    """The real FastAPI app (tiny model) behind a TestClient; `detector=` swaps in a wrapped detector."""
    from fastapi.testclient import TestClient

    from backend.predictor import Predictor
    from backend.server import create_app

    clients = []

    def make(detector=None, **env):
        settings = make_settings(**env)
        predictor = Predictor(detector or tiny_detector, settings)
        client = TestClient(create_app(settings, predictor), raise_server_exceptions=False)
        client.__enter__()
        client.predictor = predictor
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def http_server():
    server = LocalServer()
    yield server
    server.close()


@pytest.fixture
def start_backend(tiny_model_dir, tmp_path):
    procs = []

    def start(**env) -> BackendProcess:
        base = {"GROUNDING_DINO_MODEL": str(tiny_model_dir), "DEVICE": "cpu", "BOX_THRESHOLD": "0.3",
                "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        base.update(env)
        proc = BackendProcess(base, tmp_path / f"backend-{len(procs)}.log")
        procs.append(proc)
        proc.wait_ready()
        return proc

    yield start
    for proc in procs:
        proc.stop()
