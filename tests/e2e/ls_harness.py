"""Installing, starting and stopping a real Label Studio 1.23.2 for the end-to-end tests.

Label Studio lives in its own virtual environment (`.venv-labelstudio/`, gitignored): its pins (Django,
label-studio-sdk, ...) are not ours. `make install-labelstudio` creates it (`make test` depends on that
target); `ensure_label_studio()` runs the same target when a test session starts without it.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
LABEL_STUDIO_VERSION = "1.23.2"
LS_VENV = Path(os.environ.get("LABEL_STUDIO_VENV", ROOT / ".venv-labelstudio"))
ARTIFACTS = ROOT / "tests" / "artifacts"
ML_TIMEOUT_PREDICT = 10


def ensure_label_studio() -> Path:
    """The `label-studio` executable of the dedicated venv, installing it (make target) when missing."""
    exe = LS_VENV / "bin" / "label-studio"
    if not (LS_VENV / ".installed").exists() or not exe.exists():
        started = time.monotonic()
        subprocess.run(["make", "-C", str(ROOT), "install-labelstudio", f"LS_VENV={LS_VENV}"], check=True)
        print(f"label-studio=={LABEL_STUDIO_VERSION} installed in {time.monotonic() - started:.0f} s")
    return exe


def site_packages() -> Path:
    ensure_label_studio()
    found = sorted(LS_VENV.glob("lib/python*/site-packages/label_studio"))
    if not found:
        raise RuntimeError(f"label_studio package not found under {LS_VENV}")
    return found[0].parent


def wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path | None = None, auth=None) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered\n{tail}")
        try:
            r = httpx.get(url, timeout=2, auth=auth)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
    raise TimeoutError(f"{url} not ready after {timeout:.0f} s (last: {last})\n{tail}")


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # own process group: LS forks workers
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@dataclass
class LabelStudioServer:
    url: str
    token: str
    username: str
    password: str
    media_root: Path
    data_dir: Path
    log: Path
    proc: subprocess.Popen


def start_label_studio(tmp: Path, port: int | None = None, timeout: float = 240) -> LabelStudioServer:
    exe = ensure_label_studio()
    port = port or free_port()
    data_dir, media_root = tmp / "ls-data", tmp / "ls-media"
    data_dir.mkdir(parents=True, exist_ok=True)
    (media_root / "images").mkdir(parents=True, exist_ok=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = ARTIFACTS / "label-studio.log"
    server = LabelStudioServer(
        url=f"http://127.0.0.1:{port}", token="e2e0123456789abcdef0123456789abcdef0123",
        username="admin@example.com", password="e2e-Passw0rd!", media_root=media_root,
        data_dir=data_dir, log=log, proc=None,  # type: ignore[arg-type]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "DJANGO_"))}
    env.pop("VIRTUAL_ENV", None)
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(data_dir),
        LABEL_STUDIO_USERNAME=server.username,
        LABEL_STUDIO_PASSWORD=server.password,
        LABEL_STUDIO_USER_TOKEN=server.token,
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
        ML_BLOCK_LOCAL_IP="false",
        USE_DEFAULT_BANNED_SUBNETS="false",
        LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
        LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(media_root),
        LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
        SENTRY_DSN="", FRONTEND_SENTRY_DSN="",
        COLLECT_ANALYTICS="false",
        # Label Studio's predict timeout, the same on both sides (as docker-compose.yml sets it): low, so
        # that a Retrieve Predictions larger than one answer is tested in seconds.
        ML_TIMEOUT_PREDICT=str(ML_TIMEOUT_PREDICT),
        PATH=f"{exe.parent}{os.pathsep}{env.get('PATH', '')}",
    )
    with open(log, "wb") as out:
        server.proc = subprocess.Popen(
            # --internal-host is the bind address (LS's default is 0.0.0.0); --host is the URL LS
            # puts in links and sends to the backend as `hostname`.
            [str(exe), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
             "--host", f"http://127.0.0.1:{port}", "--data-dir", str(data_dir),
             "--enable-legacy-api-token"],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=str(tmp), start_new_session=True,
        )
    try:
        wait_http(f"{server.url}/health", server.proc, timeout, log)
    except Exception:
        stop(server.proc)
        raise
    return server


def start_backend(model_dir: Path, ls: LabelStudioServer, log_name: str, extra_env: dict | None = None,
                  timeout: float = 180):
    """Our backend as a user starts it: `python -m backend --host --port`, configured by environment."""
    import sys

    port = free_port()
    env = dict(os.environ)
    env.update(
        GROUNDING_DINO_MODEL=str(model_dir), DEVICE="cpu", DTYPE="fp32", BATCH_SIZE="2",
        LABEL_STUDIO_URL=ls.url, LABEL_STUDIO_API_KEY=ls.token,
        LOCAL_FILES_DOCUMENT_ROOT=str(ls.media_root), LOG_LEVEL="INFO",
        HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", ML_TIMEOUT_PREDICT=str(ML_TIMEOUT_PREDICT),
    )
    for key in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS", "ALLOWED_MEDIA_HOSTS", "BOX_THRESHOLD"):
        env.pop(key, None)
    # a STATE_DIR of its own (unless the test shares one across a restart): the project records and kept jobs
    # of one backend never reach another, nor a later session's Label Studio with the same project ids
    env["STATE_DIR"] = tempfile.mkdtemp(prefix="backend-state-")
    env.update(extra_env or {})
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = ARTIFACTS / log_name
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "backend", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(ROOT),
            start_new_session=True,
        )
    auth = None
    if env.get("BASIC_AUTH_USER"):
        auth = (env["BASIC_AUTH_USER"], env["BASIC_AUTH_PASS"])
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, timeout, log, auth=auth)
    except Exception:
        stop(proc)
        raise
    return f"http://127.0.0.1:{port}", proc, log


def chromium_path() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None
