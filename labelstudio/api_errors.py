"""How a failed call to Label Studio reads: the one place that tells "did not answer" from "answered no",
and turns an exception into the short text a message quotes (for media, imports and bulk pre-labelling)."""
from __future__ import annotations

import httpx  # the SDK's calls and token refresh run on httpx

_TRANSPORT_WORDS = ("Connect", "Timeout", "Network", "Transport")


def is_connection_error(exc: BaseException) -> bool:
    """A transport failure (refused, timed out, DNS, a dropped connection) anywhere in the exception chain,
    not an HTTP answer."""
    seen = exc
    while seen is not None:
        if isinstance(seen, (httpx.TransportError, ConnectionError, TimeoutError)):
            return True
        if getattr(seen, "status_code", None) is None and (
                isinstance(seen, OSError) or any(w in type(seen).__name__ for w in _TRANSPORT_WORDS)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def error_text(exc: BaseException) -> str:
    """`ConnectError: [Errno 111] Connection refused`; an SDK ApiError by its `detail`, not its repr."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and body.get("detail"):
        return str(body["detail"])
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
