"""What media fetching reads from the settings, as a Protocol: the adapters do not import the backend.

`backend.settings.Settings` (read from the environment in one place) satisfies it; so does any object
with these attributes (the evaluation, training and tests pass the backend's settings).
"""
from __future__ import annotations

from typing import Protocol


class MediaSettings(Protocol):
    label_studio_url: str | None  # Label Studio's address; beats /setup's hostname
    label_studio_api_key: str | None  # its key; beats /setup's access_token
    local_files_document_root: str | None  # read Local Storage files from disk below it
    allowed_media_hosts: tuple[str, ...]  # internal hosts the SSRF guard lets through
    max_download_bytes: int
    max_image_pixels: int
    download_timeout: float
