"""What the HTTP tests of the backend send and check besides the bodies: the Basic auth header, and that
what a user reads holds no stack trace."""
from __future__ import annotations

import base64


def basic(user: str, password: str) -> dict:
    """The `Authorization` header of HTTP Basic auth (BASIC_AUTH_USER / BASIC_AUTH_PASS)."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def no_trace(text: str, what: str = "") -> None:
    """What a user reads (an answer, an error item) holds no stack trace; `what` names it in a failure."""
    assert "Traceback" not in text and 'File "' not in text, (what, text[:2000]) if what else text[:2000]
