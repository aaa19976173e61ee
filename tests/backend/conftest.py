"""Fixtures of the ML backend tests: a media directory (settings, the app and the local HTTP server are
tests/conftest.py's)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.image_bytes import jpeg_bytes


@pytest.fixture
def media_root(tmp_path) -> Path:
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    (root / "a.jpg").write_bytes(jpeg_bytes())
    (root / "sub" / "b.jpg").write_bytes(jpeg_bytes((80, 60), (10, 200, 10)))
    (root / "not-an-image.jpg").write_bytes(b"this is text")
    (tmp_path / "secret.jpg").write_bytes(jpeg_bytes())
    return root
