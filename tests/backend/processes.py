"""The backend as a child process, started as a user starts it (`python -m backend`): run to its end
(`run_backend`: refusals, exit codes) or serving on a free loopback port (`BackendProcess`)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.ports import free_port
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]


def run_backend(env, *args, timeout=120):
    """`python -m backend ARGS` with `env` over this environment (without Label Studio's and Basic auth's)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO", "BASIC_AUTH"))}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "backend", *args], cwd=REPO, env=full, capture_output=True,
                          text=True, timeout=timeout)


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

    def wait_ready(self, timeout: float = 120, headers: dict | None = None) -> None:
        """Until /health answers 200 (sent with `headers`: Basic auth guards it too), or fail with the log."""
        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"the backend exited with {self.proc.returncode}")
            try:
                return httpx.get(self.url + "/health", headers=headers, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_until(healthy, "the backend to answer /health", timeout, 0.2)
        except AssertionError as exc:  # the log says why: a traceback, a refused setting
            raise AssertionError(f"{exc}:\n{self.log()}") from None

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
