"""What media fetching reads from the settings, as a Protocol: the adapters do not import the backend.

`backend.settings.Settings` (read from the environment in one place) satisfies it; so does any object
with these attributes (the evaluation, training and tests pass the backend's settings).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class MediaSettings(Protocol):
    label_studio_url: str | None  # Label Studio's address; beats /setup's hostname
    label_studio_api_key: str | None  # its key; beats /setup's access_token
    local_files_document_root: str | None  # read Local Storage files from disk below it
    allowed_media_hosts: tuple[str, ...]  # internal hosts the SSRF guard lets through
    max_download_bytes: int
    max_image_pixels: int
    download_timeout: float


@dataclass(frozen=True)
class ApiOnlySettings:
    """MediaSettings for a tool that only calls Label Studio's API (`evaluation.labelstudio` fetching
    predictions): its address and key, no Local Storage root, no extra internal hosts."""

    label_studio_url: str | None
    label_studio_api_key: str | None
    download_timeout: float = 30.0
    local_files_document_root: str | None = None
    allowed_media_hosts: tuple[str, ...] = ()
    max_download_bytes: int = 50 * 2**20
    max_image_pixels: int = 100_000_000
