"""Helpers of the ML backend tests: Label Studio's verbatim bodies, images, a local HTTP server."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path
from typing import Callable

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


class LocalServer:
    """A tiny HTTP server on 127.0.0.1: `routes[path] = handler(request) -> (status, headers, body)`."""

    def __init__(self):
        self.routes: dict[str, Callable] = {}
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                record = {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                server.requests.append(record)
                route = server.routes.get(path)
                if route is None:
                    status, headers, payload = 404, {}, b"not found"
                else:
                    status, headers, payload = route(record)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = _handle
            do_POST = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def file(self, path: str, data: bytes, content_type="image/jpeg"):
        self.routes[path] = lambda req: (200, {"Content-Type": content_type}, data)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


REPO = Path(__file__).resolve().parents[2]


def run_backend(env, *args, timeout=120):
    """`python -m backend ARGS` with `env` over this environment (without Label Studio's and Basic auth's)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO", "BASIC_AUTH"))}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "backend", *args], cwd=REPO, env=full, capture_output=True,
                          text=True, timeout=timeout)
