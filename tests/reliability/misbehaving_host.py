"""A media host that misbehaves at the TCP level, where the stand-in HTTP server (tests/http_server.py)
cannot: a body dripped byte by byte, no Content-Length, no answer at all; and a port nothing listens on."""
from __future__ import annotations

import socket
import threading
import time

from tests.ports import free_port


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
