"""A free loopback port for the servers the tests start (one helper for every test folder)."""
from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback port nothing listens on now (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
