"""Label Studio 1.23.2's own request bodies, recorded verbatim (tests/fixtures/label-studio-1.23.2-requests):
what the backend, adapter and reliability tests send instead of bodies written by hand."""
from __future__ import annotations

import json
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures" / "label-studio-1.23.2-requests"


def ls_body(name: str) -> dict:
    """A verbatim request body that Label Studio 1.23.2 sent (setup, predict-batch, predict-interactive)."""
    return json.loads((FIXTURES / f"{name}.json").read_text())
