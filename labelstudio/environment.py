"""Label Studio's address and key as the environment names them, read one way by the backend and the tools.

`LABEL_STUDIO_URL` (alias `LABEL_STUDIO_HOST`) and `LABEL_STUDIO_API_KEY` (alias `LABEL_STUDIO_ACCESS_TOKEN`)
are the names Label Studio's own ML backends use; `backend.settings` and `python -m evaluation.labelstudio`
both read them here.
"""
from __future__ import annotations

from typing import Mapping
from urllib.parse import urlparse


class LabelStudioEnvError(ValueError):
    """A Label Studio variable that cannot be used; the message names it and what to write instead."""


def _first(environ: Mapping[str, str], *names: str) -> tuple[str, str | None]:
    for name in names:
        value = environ.get(name)
        if value is not None and value.strip() != "":
            return name, value.strip()
    return names[0], None


def checked_url(name: str, value: str) -> str:
    """``value`` without its trailing slash when it is a full http(s) URL; else an error naming ``name``."""
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise LabelStudioEnvError(
            f"{name}={value!r} must be a full URL with http:// or https:// (e.g. http://label-studio:8080)")
    return value.rstrip("/")


def label_studio_url(environ: Mapping[str, str]) -> str | None:
    """LABEL_STUDIO_URL (alias LABEL_STUDIO_HOST), checked; None when unset."""
    name, value = _first(environ, "LABEL_STUDIO_URL", "LABEL_STUDIO_HOST")
    return None if value is None else checked_url(name, value)


def label_studio_api_key(environ: Mapping[str, str]) -> str | None:
    """LABEL_STUDIO_API_KEY (alias LABEL_STUDIO_ACCESS_TOKEN); None when unset."""
    return _first(environ, "LABEL_STUDIO_API_KEY", "LABEL_STUDIO_ACCESS_TOKEN")[1]
