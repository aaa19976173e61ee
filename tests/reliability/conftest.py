"""Fixtures of the reliability suite: the real app in-process, the real server as a subprocess, media.

Every test module here is marked `reliability` (run alone with `-m reliability`). Helpers of the backend
tests (Label Studio's verbatim bodies, JPEGs, the local HTTP server) are reused from tests/backend.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

HERE = Path(__file__).parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "backend"))  # backend_helpers

from backend_helpers import LocalServer  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    return free_port()


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


class BackendProcess:
    """`python -m backend` on a free loopback port, with the given environment."""

    def __init__(self, env: dict, log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full = dict(os.environ)
        full.update({k: str(v) for k, v in env.items()})
        full["PYTHONPATH"] = str(REPO) + os.pathsep + full.get("PYTHONPATH", "")
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backend", "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "WARNING"],
            cwd=REPO, env=full, stdout=self._log, stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the backend exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the backend did not answer /health within {timeout} s:\n{self.log()}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


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


def no_trace(text: str) -> None:
    assert "Traceback" not in text and 'File "' not in text, text[:2000]
