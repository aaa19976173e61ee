"""Does Label Studio accept the key this backend will use? One authenticated call, answered within a budget.

`/setup` has 3 s (Label Studio's `ML_TIMEOUT_SETUP`) and a wrong key otherwise shows only as every task
failing, so `AccessChecker.check` makes one call to `/api/current-user/whoami` with the header media
downloads use (personal access tokens refreshed), waits at most `budget_s`, and remembers the answer
per (address, key) for `ttl_s`. The call runs in a daemon thread: a Label Studio that does not answer
costs /setup the budget, never more, and never holds up the process's exit.

A legacy token (anything that is not a JWT: Label Studio's own are 40 hex digits, and the token /setup
sends is always one, the project creator's) works only while the organization has Legacy Tokens on.
Label Studio 1.23 turns them off for a new organization unless started with
LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true, and then answers 401 "legacy token authentication has been
disabled for this organization" (`jwt_auth/auth.py`, `organizations/functions.py`): the check says so,
and says it too while a legacy token still works, with the fix first.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlparse

import httpx
from label_studio_sdk._extensions.label_studio_tools.core.utils.io import concat_urls, is_jwt_well_formed

from .destinations import check_destination
from .media import MediaFetcher
from .media_errors import KeyRefusedError, LabelStudioUnreachableError, MediaError
from .target import LabelStudioTarget

WHOAMI = "/api/current-user/whoami"
USE_PERSONAL_TOKEN = ("Set LABEL_STUDIO_API_KEY to a personal access token (Label Studio → Account & Settings → "
                      "Personal Access Token)")
# Label Studio 1.23's answer to a legacy token when the organization has Legacy Tokens off (jwt_auth/auth.py).
LEGACY_DISABLED = "legacy token authentication has been disabled"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AccessCheck:
    """The answer: `status` is "ok", "legacy" (accepted, but a legacy token Label Studio may stop accepting),
    "refused" (the key), "unreachable" (the address) or "unconfigured"."""

    status: str
    message: str  # one line for people, naming the variable to fix
    host: str | None = None
    checked_at: float = field(default_factory=time.time, compare=False)  # when Label Studio answered (epoch s)

    @property
    def ok(self) -> bool:
        """Label Studio accepts the key now."""
        return self.status in ("ok", "legacy")

    @property
    def needs_attention(self) -> bool:
        """Something to change: everything but a plain "ok"."""
        return self.status != "ok"


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    result: AccessCheck | None = None
    finished_at: float = 0.0


class AccessChecker:
    """Thread-safe; one per process (it holds the cache). `clock` is injectable for tests."""

    def __init__(self, fetcher: MediaFetcher, budget_s: float = 2.5, ttl_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.fetcher = fetcher
        self.budget_s = budget_s
        self.ttl_s = ttl_s
        self.clock = clock
        self._checks: dict[tuple[str, str], _Pending] = {}
        self._lock = threading.Lock()

    def check(self, hostname: str | None = None, access_token: str | None = None) -> AccessCheck:
        """The key and address media downloads would use for a project that sent these in /setup."""
        target = self.fetcher.label_studio_target(hostname, access_token)
        if not target.url:
            return AccessCheck("unconfigured", "no Label Studio address: set LABEL_STUDIO_URL to Label Studio's "
                               "address as seen from this backend, or connect the model from Label Studio (/setup)")
        if not target.key:
            return AccessCheck("unconfigured", "no Label Studio key: set LABEL_STUDIO_API_KEY to a personal access "
                               "token (Label Studio → Account & Settings → Personal Access Token)", target.url)
        pending = self._pending(target)
        if not pending.done.wait(self.budget_s):
            return AccessCheck(
                "unreachable",
                f"Label Studio did not answer at {target.url} within {self.budget_s:g} s: {target.fix_host}",
                target.url,
            )
        return pending.result

    def _pending(self, target: LabelStudioTarget) -> _Pending:
        """The cached or in-flight check of this (address, key); starts one when there is none."""
        key = (target.url, target.key)
        now = self.clock()
        with self._lock:
            for other, pending in list(self._checks.items()):
                if pending.done.is_set() and now - pending.finished_at >= self.ttl_s:
                    del self._checks[other]
            pending = self._checks.get(key)
            if pending is None:
                pending = self._checks[key] = _Pending()
                threading.Thread(target=self._run, args=(target, pending), daemon=True,
                                 name="label-studio-access-check").start()
            return pending

    def _run(self, target: LabelStudioTarget, pending: _Pending) -> None:
        try:
            pending.result = self._probe(target)
        except Exception as exc:  # never leave a waiter without an answer
            pending.result = AccessCheck("unreachable", f"checking Label Studio at {target.url} failed "
                                         f"({type(exc).__name__}): {target.fix_host}", target.url)
        pending.finished_at = self.clock()
        pending.done.set()

    def _probe(self, target: LabelStudioTarget) -> AccessCheck:
        url = concat_urls(target.url, WHOAMI)
        host = target.url
        try:
            check_destination(url, self.fetcher.settings, trusted_netloc=urlparse(host).netloc.lower())
            header = self.fetcher.auth_header(target)
            # DOWNLOAD_TIMEOUT, not the budget: a late answer is still cached for the next /setup.
            response = self.fetcher.client.get(url, headers={"Authorization": header})
        except KeyRefusedError as exc:  # a refresh token Label Studio does not accept
            return AccessCheck("refused", str(exc), host)
        except LabelStudioUnreachableError as exc:  # ... or could not be asked to
            return AccessCheck("unreachable", str(exc), host)
        except (MediaError, httpx.HTTPError) as exc:  # DNS, a refused address; connect/read errors
            reason = str(exc).strip() or type(exc).__name__
            return AccessCheck("unreachable", f"Label Studio is unreachable at {host} ({reason}): {target.fix_host}",
                               host)
        code = response.status_code
        legacy = not is_jwt_well_formed(target.key)  # as auth_header decides between `Token` and `Bearer`
        if code in (401, 403):
            if legacy and LEGACY_DISABLED in _json_detail(response):
                return AccessCheck("refused", f"{USE_PERSONAL_TOKEN}: Label Studio refused {target.key_name} "
                                   f"(HTTP {code}) because it is a legacy token and this organization has Legacy "
                                   "Tokens off (or an owner turns them on: Organization → API Tokens Settings)", host)
            return AccessCheck("refused", f"Label Studio refused the key ({target.key_name}, HTTP {code}): "
                               f"{target.fix_key}", host)
        user = _json_user(response) if code == 200 else None
        if user is None:
            return AccessCheck("unreachable", f"{host} answered HTTP {code} to {WHOAMI}, not as Label Studio "
                               f"does: {target.fix_host}", host)
        accepted = f"Label Studio at {host} accepts {target.key_name} (user {user})"
        if legacy:
            return AccessCheck("legacy", f"{USE_PERSONAL_TOKEN}: {accepted}, but it is a legacy token, refused as "
                               "soon as Legacy Tokens are off for the organization (Organization → API Tokens "
                               "Settings; off in a new Label Studio 1.23 organization)", host)
        return AccessCheck("ok", accepted, host)


def _json_detail(response: httpx.Response) -> str:
    """Label Studio's `detail` of an error answer; empty when there is none."""
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("detail") or "") if isinstance(body, dict) else ""


def _json_user(response: httpx.Response) -> str | None:
    """The user's email or username from a whoami answer; None when the body is not Label Studio's."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or "id" not in body:
        return None
    return str(body.get("email") or body.get("username") or body["id"])


class ProjectTitles:
    """Each project's title in Label Studio, for the status page: asked in a daemon thread with the key media
    downloads use (never inside /setup's time), again after `refresh_s` (a project may be renamed).
    `on_title(project, title)` is called from that thread; without an answer the page shows the id."""

    def __init__(self, fetcher: MediaFetcher, on_title: Callable[[str, str], None], refresh_s: float = 600.0,
                 clock: Callable[[], float] = time.monotonic):
        self.fetcher, self.on_title, self.refresh_s, self.clock = fetcher, on_title, refresh_s, clock
        self._asked: dict[str, float] = {}
        self._lock = threading.Lock()

    def request(self, project: str, hostname: str | None = None, access_token: str | None = None) -> None:
        """Non-blocking: starts one lookup unless this project was asked about within `refresh_s`."""
        target = self.fetcher.label_studio_target(hostname, access_token)
        if not str(project).isdigit() or not target.url or not target.key:
            return
        with self._lock:
            asked = self._asked.get(project)
            if asked is not None and self.clock() - asked < self.refresh_s:
                return
            self._asked[project] = self.clock()
        threading.Thread(target=self._run, args=(project, target), daemon=True, name="label-studio-title").start()

    def _run(self, project: str, target: LabelStudioTarget) -> None:
        url = concat_urls(target.url, f"/api/projects/{int(project)}")
        try:
            check_destination(url, self.fetcher.settings, trusted_netloc=urlparse(target.url).netloc.lower())
            response = self.fetcher.client.get(url, headers={"Authorization": self.fetcher.auth_header(target)})
            title = response.json().get("title") if response.status_code == 200 else None
        except Exception as exc:  # a courtesy: the page shows the id instead
            log.info("project %s: its title could not be read from Label Studio (%s)", project, type(exc).__name__)
            return
        if isinstance(title, str) and title.strip():
            self.on_title(project, title.strip())
