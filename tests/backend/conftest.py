"""Fixtures of the ML backend tests: settings, the real app on the tiny model, a local HTTP server."""
from __future__ import annotations

from pathlib import Path

import pytest

from backend_helpers import LocalServer, jpeg_bytes


@pytest.fixture
def media_root(tmp_path) -> Path:
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    (root / "a.jpg").write_bytes(jpeg_bytes())
    (root / "sub" / "b.jpg").write_bytes(jpeg_bytes((80, 60), (10, 200, 10)))
    (root / "not-an-image.jpg").write_bytes(b"this is text")
    (tmp_path / "secret.jpg").write_bytes(jpeg_bytes())
    return root


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
    from fastapi.testclient import TestClient

    from backend.predictor import Predictor
    from backend.server import create_app

    clients = []

    def make(**env):
        settings = make_settings(**env)
        client = TestClient(create_app(settings, Predictor(tiny_detector, settings)))
        client.__enter__()
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
