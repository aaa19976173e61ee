"""Shared helpers of the reliability suite: label configs, tasks, images, result checks."""
from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from PIL import Image

from tests.backend.backend_helpers import jpeg_bytes, ls_body, no_trace  # noqa: F401 (jpeg_bytes, no_trace: re-exported to the suite)
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
CONFIG = ls_body("setup")["schema"]
LABELS = {"Cat", "RC", "TrafficLight"}


def config(body: str, images: str = '<Image name="image" value="$image"/>') -> str:
    return f"<View>{images}{body}</View>"


def rect_config(*labels: str, attrs: str = "") -> str:
    inner = "".join(f'<Label value="{v}"/>' for v in labels)
    return config(f'<RectangleLabels name="label" toName="image"{attrs}>{inner}</RectangleLabels>')


def local_task(task_id, name: str) -> dict:
    return {"id": task_id, "data": {"image": f"/data/local-files/?d={name}"}}


def url_task(task_id, url: str) -> dict:
    return {"id": task_id, "data": {"image": url}}


def predict(client, tasks, label_config=CONFIG, **extra):
    response = client.post("/predict", json={"tasks": tasks, "label_config": label_config, **extra})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == len(tasks), "exactly one item per task"
    return results


def sandwich(bad_tasks: list[dict], good: dict) -> list[dict]:
    """good, bad1, good, bad2, ..., good: a good task before and after every bad one (unique ids)."""
    tasks, n = [dict(good, id=1000)], 1001
    for bad in bad_tasks:
        tasks.append(bad)
        tasks.append(dict(good, id=n))
        n += 1
    return tasks


def strip_ids(item: dict) -> dict:
    """A result item without the region ids (they hash the task id): what must not change."""
    if "result" not in item:
        return item
    return {**item, "result": [{k: v for k, v in r.items() if k != "id"} for r in item["result"]]}


def same_result(got: dict, want: dict, tol: float = 1e-3) -> bool:
    """Same regions (labels, sizes; boxes and scores up to float noise of a different batch split)."""
    if ("result" in got) != ("result" in want) or len(got.get("result", [])) != len(want.get("result", [])):
        return False
    for a, b in zip(got.get("result", []), want.get("result", [])):
        if (a["from_name"], a["to_name"], a["type"], a["original_width"], a["original_height"],
                a["value"].get("rectanglelabels")) != (b["from_name"], b["to_name"], b["type"], b["original_width"],
                                                       b["original_height"], b["value"].get("rectanglelabels")):
            return False
        if abs(a["score"] - b["score"]) > tol:
            return False
        if any(abs(a["value"][k] - b["value"][k]) > 100 * tol for k in ("x", "y", "width", "height")):
            return False
    return True


def assert_good_unaffected(results: list[dict], reference: dict) -> None:
    """Every even position of a sandwich holds the good task's reference result."""
    assert reference.get("result"), "the reference task should have boxes"
    for i in range(0, len(results), 2):
        assert "error" not in results[i], (i, results[i])
        assert same_result(results[i], reference), f"good task at position {i} changed: {results[i]}"


def png_bytes(image: Image.Image, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG", **kwargs)
    return out.getvalue()




class RawServer:
    """A loopback TCP server misbehaving on purpose, by path: `drip` (headers, then a byte every 0.2 s),
    `nolength` (a body of `size` bytes with no Content-Length, ended by closing), `hang` (reads the
    request, never answers)."""

    def __init__(self, size: int = 300_000):
        self.size = size
        self.hits: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        try:
            conn.settimeout(5)
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            path = request.split(b" ", 2)[1].decode()
            self.hits.append(path)
            if path.startswith("/drip"):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n")
                for _ in range(100):
                    if self._stop.is_set():
                        return
                    conn.sendall(b"\xff")
                    time.sleep(0.2)
            elif path.startswith("/nolength"):
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\n\r\n")
                block = b"\x00" * 16384
                for _ in range(self.size // len(block) + 1):
                    conn.sendall(block)
            elif path.startswith("/hang"):
                self._stop.wait(30)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self._stop.set()
        self.sock.close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    return free_port()


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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the backend exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", headers=headers, timeout=1).status_code == 200:
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
