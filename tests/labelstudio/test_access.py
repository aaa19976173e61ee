"""Does Label Studio accept the key? One whoami call within the budget, cached per (address, key)."""
import json
import socket
import threading

import pytest

from labelstudio.access import WHOAMI, AccessCheck, AccessChecker
from labelstudio.media import MediaFetcher
from tests.labelstudio.tokens import make_jwt

TOKEN = "legacy0123456789"
USER = json.dumps({"id": 1, "email": "ann@example.com", "username": "ann"}).encode()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def whoami(expected_header):
    def route(req):
        if req["headers"].get("Authorization") != expected_header:
            return 401, {"Content-Type": "application/json"}, b'{"detail": "Invalid token."}'
        return 200, {"Content-Type": "application/json"}, USER

    return route


def checker(make_settings, clock=None, budget_s=2.5, **env):
    return AccessChecker(MediaFetcher(make_settings(**env)), budget_s=budget_s, clock=clock or Clock())


def whoami_calls(server) -> int:
    return sum(r["path"] == WHOAMI for r in server.requests)


USE_PAT = ("Set LABEL_STUDIO_API_KEY to a personal access token (Label Studio → Account & Settings → Personal "
           "Access Token)")
# What a real Label Studio 1.23.2, started without LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN, answered to whoami with
# its first user's LABEL_STUDIO_USER_TOKEN (jwt_auth/auth.py through core.utils.common.custom_exception_handler);
# a wrong token gets the same shape with "detail": "Invalid token.".
LEGACY_OFF = json.dumps({
    "id": "88ae55b7-f2b6-4681-b33b-7a7f6a3b049b", "status_code": 401, "version": "1.23.2",
    "detail": "Authentication token no longer valid: legacy token authentication has been disabled for this "
              "organization", "exc_info": None}).encode()


def legacy_accepted(url, key_name="LABEL_STUDIO_API_KEY") -> AccessCheck:
    return AccessCheck("legacy", f"{USE_PAT}: Label Studio at {url} accepts {key_name} (user ann@example.com), but "
                       "it is a legacy token, refused as soon as Legacy Tokens are off for the organization "
                       "(Organization → API Tokens Settings; off in a new Label Studio 1.23 organization)", url)


def test_accepted_key_and_the_answer_is_cached_for_a_minute(make_settings, http_server):
    refresh, access_jwt = make_jwt("refresh"), make_jwt("access", 600)
    http_server.routes["/api/token/refresh/"] = lambda req: (
        200, {"Content-Type": "application/json"}, json.dumps({"access": access_jwt}).encode())
    http_server.routes[WHOAMI] = whoami(f"Bearer {access_jwt}")
    clock = Clock()
    access = checker(make_settings, clock, budget_s=30, LABEL_STUDIO_URL=http_server.url, LABEL_STUDIO_API_KEY=refresh)
    expected = AccessCheck("ok", f"Label Studio at {http_server.url} accepts LABEL_STUDIO_API_KEY (user ann@example.com)",
                           http_server.url)
    assert access.check() == expected and access.check().ok and not access.check().needs_attention
    clock.now += 59
    assert access.check(hostname="http://ignored:8080", access_token="ignored") == expected  # the settings win
    assert whoami_calls(http_server) == 1
    clock.now += 1
    assert access.check() == expected
    assert whoami_calls(http_server) == 2


def test_refused_key_names_the_variable_or_the_setup_token(make_settings, http_server):
    http_server.routes[WHOAMI] = whoami(f"Token {TOKEN}")
    access = checker(make_settings, LABEL_STUDIO_URL=http_server.url, LABEL_STUDIO_API_KEY="wrong")
    assert access.check() == AccessCheck(
        "refused",
        "Label Studio refused the key (LABEL_STUDIO_API_KEY, HTTP 401): set LABEL_STUDIO_API_KEY to a valid access "
        "token of a user with access to this project (Label Studio → Account & Settings → Access Token)",
        http_server.url,
    )
    from_setup = checker(make_settings)
    assert from_setup.check(http_server.url + "/", "wrong") == AccessCheck(
        "refused",
        "Label Studio refused the key (the project's /setup token, HTTP 401): set LABEL_STUDIO_API_KEY to a valid "
        "access token (Label Studio → Account & Settings → Access Token; it takes precedence), or reconnect the "
        "model in the project's settings",
        http_server.url,
    )
    assert from_setup.check(http_server.url, TOKEN).ok  # another key of the same address: its own answer


@pytest.mark.parametrize("token", [TOKEN, "0123456789abcdef0123456789abcdef01234567"])  # ours; Label Studio's own
def test_a_legacy_token_that_works_says_to_use_a_personal_access_token_first(make_settings, http_server, token):
    http_server.routes[WHOAMI] = whoami(f"Token {token}")
    answer = checker(make_settings, LABEL_STUDIO_URL=http_server.url, LABEL_STUDIO_API_KEY=token).check()
    assert answer == legacy_accepted(http_server.url)
    assert answer.ok and answer.needs_attention  # it works today: predictions go on, the page warns
    from_setup = checker(make_settings).check(http_server.url, token)  # /setup always sends a legacy token
    assert from_setup == legacy_accepted(http_server.url, "the project's /setup token")


def test_a_legacy_token_refused_because_legacy_tokens_are_off_says_so(make_settings, http_server):
    http_server.routes[WHOAMI] = lambda req: (401, {"Content-Type": "application/json"}, LEGACY_OFF)
    off = ("(HTTP 401) because it is a legacy token and this organization has Legacy Tokens off (or an owner "
           "turns them on: Organization → API Tokens Settings)")
    answer = checker(make_settings, LABEL_STUDIO_URL=http_server.url, LABEL_STUDIO_API_KEY=TOKEN).check()
    assert answer == AccessCheck("refused", f"{USE_PAT}: Label Studio refused LABEL_STUDIO_API_KEY {off}",
                                 http_server.url)
    assert not answer.ok
    assert checker(make_settings).check(http_server.url, TOKEN) == AccessCheck(
        "refused", f"{USE_PAT}: Label Studio refused the project's /setup token {off}", http_server.url)


def test_personal_access_token_is_refreshed_first(make_settings, http_server):
    refresh, access_jwt = make_jwt("refresh"), make_jwt("access", 600)
    http_server.routes["/api/token/refresh/"] = lambda req: (
        200, {"Content-Type": "application/json"}, json.dumps({"access": access_jwt}).encode())
    http_server.routes[WHOAMI] = whoami(f"Bearer {access_jwt}")
    # a generous budget: this is about the refresh, and the machine running the tests may be loaded
    assert checker(make_settings, budget_s=30, LABEL_STUDIO_URL=http_server.url,
                   LABEL_STUDIO_API_KEY=refresh).check().status == "ok"
    expired = checker(make_settings, budget_s=30, LABEL_STUDIO_URL=http_server.url,
                      LABEL_STUDIO_API_KEY=make_jwt("refresh", -60))
    answer = expired.check()
    assert answer.status == "refused" and answer.message.startswith(
        "Label Studio refused the API key (LABEL_STUDIO_API_KEY: API key has expired. Please obtain a new refresh "
        "token.): set LABEL_STUDIO_API_KEY to")


@pytest.fixture
def closed_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, never listening: connecting is refused
    yield sock.getsockname()[1]
    sock.close()


def test_unreachable_address_names_label_studio_url(make_settings, closed_port):
    url = f"http://127.0.0.1:{closed_port}"
    answer = checker(make_settings, LABEL_STUDIO_URL=url, LABEL_STUDIO_API_KEY=TOKEN).check()
    assert answer.status == "unreachable" and answer.message.startswith(f"Label Studio is unreachable at {url} (")
    assert answer.message.endswith("): set LABEL_STUDIO_URL to Label Studio's address as seen from this backend "
                                   "(e.g. http://label-studio:8080)")
    from_setup = checker(make_settings).check(url, TOKEN)
    assert from_setup.message.endswith("): the address Label Studio sent in /setup does not answer from this "
                                       "backend: set LABEL_STUDIO_URL to Label Studio's address as seen from this "
                                       "backend (e.g. http://label-studio:8080)")


def test_silent_label_studio_costs_only_the_budget_and_is_asked_once(make_settings, http_server):
    release = threading.Event()

    def hang(req):
        release.wait(10)
        return 200, {"Content-Type": "application/json"}, USER

    http_server.routes[WHOAMI] = hang
    access = checker(make_settings, budget_s=0.2, LABEL_STUDIO_URL=http_server.url, LABEL_STUDIO_API_KEY=TOKEN)
    silent = AccessCheck("unreachable", f"Label Studio did not answer at {http_server.url} within 0.2 s: set "
                         "LABEL_STUDIO_URL to Label Studio's address as seen from this backend "
                         "(e.g. http://label-studio:8080)", http_server.url)
    assert access.check() == silent
    assert access.check() == silent  # the same call still in flight: not asked again
    release.set()
    answers = [access.check() for _ in range(3)]  # the late answer is kept (each check waits up to 0.2 s)
    assert answers[-1].ok, answers
    assert whoami_calls(http_server) == 1


@pytest.mark.parametrize("status, body", [(404, b"not found"), (200, b"<html>a login page</html>"), (302, b"")])
def test_an_address_that_is_not_label_studio(make_settings, http_server, status, body):
    http_server.routes[WHOAMI] = lambda req: (status, {"Location": "/user/login"} if status == 302 else {}, body)
    answer = checker(make_settings, LABEL_STUDIO_URL=http_server.url, LABEL_STUDIO_API_KEY=TOKEN).check()
    assert answer == AccessCheck(
        "unreachable", f"{http_server.url} answered HTTP {status} to {WHOAMI}, not as Label Studio does: set "
        "LABEL_STUDIO_URL to Label Studio's address as seen from this backend (e.g. http://label-studio:8080)",
        http_server.url,
    )


def test_nothing_to_check_without_an_address_or_a_key(make_settings, http_server):
    access = checker(make_settings)
    assert access.check() == AccessCheck(
        "unconfigured", "no Label Studio address: set LABEL_STUDIO_URL to Label Studio's address as seen from this "
        "backend, or connect the model from Label Studio (/setup)")
    assert access.check(http_server.url) == AccessCheck(
        "unconfigured", "no Label Studio key: set LABEL_STUDIO_API_KEY to a personal access token (Label Studio → "
        "Account & Settings → Personal Access Token)", http_server.url)
    assert http_server.requests == []
