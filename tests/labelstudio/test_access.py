"""Does Label Studio accept the key? One whoami call within the budget, cached per (address, key)."""
import json
import socket
import threading

import pytest

from labelstudio.access import WHOAMI, AccessCheck, AccessChecker
from labelstudio.media import MediaFetcher
from tests.labelstudio.test_media import make_jwt

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


def test_accepted_key_and_the_answer_is_cached_for_a_minute(make_settings, http_server):
    http_server.routes[WHOAMI] = whoami(f"Token {TOKEN}")
    clock = Clock()
    access = checker(make_settings, clock, LABEL_STUDIO_URL=http_server.url, LABEL_STUDIO_API_KEY=TOKEN)
    expected = AccessCheck("ok", f"Label Studio at {http_server.url} accepts LABEL_STUDIO_API_KEY (user ann@example.com)",
                           http_server.url)
    assert access.check() == expected and access.check().ok
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


def test_personal_access_token_is_refreshed_first(make_settings, http_server):
    refresh, access_jwt = make_jwt("refresh"), make_jwt("access", 600)
    http_server.routes["/api/token/refresh/"] = lambda req: (
        200, {"Content-Type": "application/json"}, json.dumps({"access": access_jwt}).encode())
    http_server.routes[WHOAMI] = whoami(f"Bearer {access_jwt}")
    # a generous budget: this is about the refresh, and the machine running the tests may be loaded
    assert checker(make_settings, budget_s=30, LABEL_STUDIO_URL=http_server.url, LABEL_STUDIO_API_KEY=refresh).check().ok
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
        "unconfigured", "no Label Studio key: set LABEL_STUDIO_API_KEY to an access token (Label Studio → Account & "
        "Settings → Access Token)", http_server.url)
    assert http_server.requests == []
