"""Which Label Studio this command calls, and the option or variable that gave each part (for its messages).

The address and key are a `labelstudio.target.LabelStudioTarget`, the one type for "Label Studio URL + key".
The command adds only where each was given (`--label-studio-url` or LABEL_STUDIO_URL, `--api-key` or
LABEL_STUDIO_API_KEY): its messages name the option to fix, where the backend's name /setup.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import httpx

from labelstudio.environment import LabelStudioEnvError, label_studio_api_key, label_studio_url
from labelstudio.media import MediaFetcher
from labelstudio.media_settings import ApiOnlySettings
from labelstudio.target import LabelStudioTarget
from runtime.errors import InputError


@dataclass(frozen=True)
class TargetOptions:
    """The Label Studio target, and the option or variable each of its parts came from (named in messages)."""

    target: LabelStudioTarget
    url_name: str = "--label-studio-url"
    key_name: str = "--api-key"

    @classmethod
    def from_options(cls, url: str | None, key: str | None, environ: Mapping[str, str]) -> "TargetOptions":
        """The options when given, else the backend's variables."""
        try:
            env_url = label_studio_url(environ)
        except LabelStudioEnvError as exc:
            raise InputError(str(exc)) from None
        if url:
            try:
                url = label_studio_url({"LABEL_STUDIO_URL": url})
            except LabelStudioEnvError:
                raise InputError(f"--label-studio-url {url!r} must be a full URL with http:// or https:// "
                                 "(e.g. http://localhost:8080)") from None
        # given by the person running the command, never by a project's /setup
        target = LabelStudioTarget(url or env_url, key or label_studio_api_key(environ),
                                   url_from_setup=False, key_from_setup=False)
        return cls(target, "--label-studio-url" if url else "LABEL_STUDIO_URL",
                   "--api-key" if key else "LABEL_STUDIO_API_KEY")

    def missing(self) -> str:
        """The options still to give, e.g. "--api-key KEY"; empty when the target is complete."""
        gaps = [name for value, name in ((self.target.url, "--label-studio-url URL"), (self.target.key, "--api-key KEY"))
                if not value]
        return " and ".join(gaps)

    def media_fetcher(self, transport: httpx.BaseTransport | None = None) -> MediaFetcher:
        """Label Studio's API and files with this target, as the backend calls them (its limits, its SSRF guard)."""
        return MediaFetcher(ApiOnlySettings(label_studio_url=self.target.url, label_studio_api_key=self.target.key),
                            transport)
