"""JSON for large documents without stalling the server: one list item at a time.

`json.dumps` runs in C and holds the interpreter lock until it is done: for a Retrieve Predictions answer
of tens of thousands of regions that is long enough (on a busy machine) to hold up `/health` past Label
Studio's 1 s, even from a worker thread. Encoding item by item lets the event loop in between items.
"""
from __future__ import annotations

import json


def encode_json_list(items: list) -> bytes:
    """`json.dumps(items)` (NaN refused), one item at a time; blocking: call it from a worker thread."""
    return b"[" + b",".join(json.dumps(item, allow_nan=False).encode() for item in items) + b"]"


def encode_answer(results: list) -> bytes:
    """The body of a /predict answer: `{"results": [...]}`."""
    return b'{"results":' + encode_json_list(results) + b"}"
