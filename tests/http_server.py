"""The one stand-in HTTP server of the tests (stand-in Label Studios, media hosts, download mirrors, the
status page): a route table on 127.0.0.1 that records every request.

`routes[path] = handler(request) -> (status, headers, body)`, where `path` has no query string and
`request` is the recorded dict (`method`, `path` with its query, `headers`, `body`). A path without a
route goes to `fallback` (404 unless set). A handler may cut a response short: it sends a
`Content-Length` larger than the body it returns, and the connection closes after the body (HTTP/1.0).
"""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

Route = Callable[[dict], tuple[int, dict, bytes]]


def not_found(request: dict) -> tuple[int, dict, bytes]:
    return 404, {}, b"not found"


class LocalServer:
    """A tiny HTTP server on 127.0.0.1: `routes[path] = handler(request) -> (status, headers, body)`."""

    def __init__(self):
        self.routes: dict[str, Route] = {}
        self.fallback: Route = not_found
        self.requests: list[dict] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
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

    def answer(self, request: dict) -> tuple[int, dict, bytes]:
        """The route's answer to a recorded request (the fallback's where no route has its path)."""
        self.requests.append(request)
        return self.routes.get(request["path"].split("?", 1)[0], self.fallback)(request)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                request = {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                status, headers, payload = server.answer(request)
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

        return Handler
