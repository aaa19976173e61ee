"""Helpers of the ML backend tests: Label Studio's verbatim bodies, images, the backend as a subprocess
(the local HTTP server is tests/http_server.py)."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from io import BytesIO
from pathlib import Path

from PIL import Image

FIXTURES = Path(__file__).parent.parent / "fixtures" / "label-studio-1.23.2-requests"


def ls_body(name: str) -> dict:
    """A verbatim request body that Label Studio 1.23.2 sent (setup, predict-batch, predict-interactive)."""
    return json.loads((FIXTURES / f"{name}.json").read_text())


def jpeg_bytes(size=(64, 48), color=(200, 30, 30), exif_orientation: int | None = None) -> bytes:
    image = Image.new("RGB", size, color)
    # a second colour block, so the image is not flat
    image.paste((20, 40, 220), (0, 0, size[0] // 2, size[1] // 3))
    out = BytesIO()
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        image.save(out, "JPEG", exif=exif.tobytes())
    else:
        image.save(out, "JPEG")
    return out.getvalue()


REPO = Path(__file__).resolve().parents[2]


def run_backend(env, *args, timeout=120):
    """`python -m backend ARGS` with `env` over this environment (without Label Studio's and Basic auth's)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO", "BASIC_AUTH"))}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "backend", *args], cwd=REPO, env=full, capture_output=True,
                          text=True, timeout=timeout)


def basic(user: str, password: str) -> dict:
    """The `Authorization` header of HTTP Basic auth (BASIC_AUTH_USER / BASIC_AUTH_PASS)."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def no_trace(text: str, what: str = "") -> None:
    """What a user reads (an answer, an error item) holds no stack trace; `what` names it in a failure."""
    assert "Traceback" not in text and 'File "' not in text, (what, text[:2000]) if what else text[:2000]
