"""Label Studio's address and key, the one type for "which Label Studio, with which key".

A project's /setup sends Label Studio's address (`hostname`) and a key (`access_token`); the backend's
environment may set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY. The rule, written here only
(`LabelStudioTarget.under`): the environment beats /setup, for the address and the key each. The target
remembers where each came from, so that a message names what to fix.
"""
from __future__ import annotations

from dataclasses import dataclass

ENV_KEY = "LABEL_STUDIO_API_KEY"
SETUP_KEY = "/setup"


@dataclass(frozen=True)
class LabelStudioTarget:
    """Label Studio's URL and the key to call it with, and whether each came from the project's /setup
    (False: from LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY). `LabelStudioTarget()` is "none known"."""

    url: str | None = None
    key: str | None = None
    url_from_setup: bool = True
    key_from_setup: bool = True

    @classmethod
    def from_setup(cls, hostname: str | None, access_token: str | None) -> "LabelStudioTarget":
        """What a project's /setup sent (kept per project; its token is never written to disk)."""
        return cls(hostname, access_token)

    def under(self, env_url: str | None, env_key: str | None) -> "LabelStudioTarget":
        """The target in use: LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY when set, else this (/setup's) one."""
        setup_url = self.url.rstrip("/") if self.url else None
        return LabelStudioTarget(env_url or setup_url, env_key or self.key,
                                 url_from_setup=not env_url and bool(setup_url),
                                 key_from_setup=not env_key and bool(self.key))

    @property
    def complete(self) -> bool:
        """Both an address and a key: the API can be called."""
        return bool(self.url and self.key)

    @property
    def key_source(self) -> str | None:
        """`"LABEL_STUDIO_API_KEY"`, `"/setup"`, or None without a key (shown; the key itself never is)."""
        if not self.key:
            return None
        return SETUP_KEY if self.key_from_setup else ENV_KEY

    @property
    def key_name(self) -> str:
        return "the project's /setup token" if self.key_from_setup else ENV_KEY

    @property
    def fix_key(self) -> str:
        """What to do about a refused key."""
        if self.key_from_setup:
            return ("set LABEL_STUDIO_API_KEY to a valid access token (Label Studio → Account & Settings → "
                    "Access Token; it takes precedence), or reconnect the model in the project's settings")
        return ("set LABEL_STUDIO_API_KEY to a valid access token of a user with access to this project "
                "(Label Studio → Account & Settings → Access Token)")

    @property
    def fix_host(self) -> str:
        """What to do about an address that does not answer."""
        where = ("the address Label Studio sent in /setup does not answer from this backend: "
                 if self.url_from_setup else "")
        return f"{where}set LABEL_STUDIO_URL to Label Studio's address as seen from this backend (e.g. http://label-studio:8080)"
