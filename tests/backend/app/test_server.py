"""HTTP-level tests of the real app (tiny model) with the bodies Label Studio 1.23.2 really sends."""
import json
import threading
import time

import httpx
import pytest

from detection import GROUNDING_DINO
from tests.backend.http_checks import basic, no_trace
from tests.image_bytes import jpeg_bytes
from tests.label_studio_requests import ls_body
from tests.ports import free_port
from tests.waiting import wait_until

TOKEN = ls_body("setup")["access_token"]
UPLOADS = [t["data"]["image"] for t in ls_body("predict-batch")["tasks"]]


@pytest.fixture
def fake_ls(http_server):
    """Label Studio's upload route, answering only to the project's legacy token."""
    sizes = [(64, 48), (80, 60), (50, 70)]
    for path, size in zip(UPLOADS, sizes):
        data = jpeg_bytes(size)

        def route(req, data=data):
            if req["headers"].get("Authorization") != f"Token {TOKEN}":
                return 401, {}, b'{"detail": "Authentication credentials were not provided."}'
            return 200, {"Content-Type": "image/jpeg"}, data

        http_server.routes[path] = route
    return http_server


def setup_body(hostname):
    body = ls_body("setup")
    body["hostname"] = hostname
    return body


def test_health_and_root(make_client):
    client = make_client()
    for path in ("/health", "/"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.json()["status"] == "UP" and response.json()["model_class"] == "GroundingDINO"


@pytest.mark.slow
def test_verbatim_setup_then_batch_predict_with_setup_credentials(make_client, fake_ls):
    client = make_client()  # no LABEL_STUDIO_URL / API key: /setup's hostname and token are the fallback
    setup = client.post("/setup", json=setup_body(fake_ls.url))
    assert setup.status_code == 200
    version = setup.json()["model_version"]
    response = client.post("/predict", json=ls_body("predict-batch"))
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 3
    sizes = [(64, 48), (80, 60), (50, 70)]
    for item, size in zip(results, sizes):
        assert item["model_version"] == version
        assert "error" not in item, item
        assert item["result"], "the tiny model finds boxes over 0.3 on these images"
        for region in item["result"]:
            assert region["value"]["rectanglelabels"][0] in {"Cat", "RC", "TrafficLight"}
            assert (region["original_width"], region["original_height"]) == size
    assert client.get("/versions").json() == {"versions": [version]}
    assert all(r["headers"].get("Authorization") == f"Token {TOKEN}" for r in fake_ls.requests)


@pytest.mark.slow
def test_a_projects_token_is_never_used_for_another_project(make_client, http_server):
    """Two projects on one Label Studio host, each with its own token: the stand-in Label Studio records
    the Authorization header of every download. Project 2 never called /setup, so its task fails with
    what to provide instead of borrowing project 1's token."""
    http_server.file("/data/upload/1/a.jpg", jpeg_bytes())
    http_server.file("/data/upload/2/b.jpg", jpeg_bytes())
    client = make_client(ALLOWED_MEDIA_HOSTS="127.0.0.1")  # plain URLs to the stand-in are allowed
    setup = setup_body(http_server.url)
    setup["project"], setup["access_token"] = "1.1746612998", "token-of-project-1"
    assert client.post("/setup", json=setup).status_code == 200
    body = ls_body("predict-batch")
    body["tasks"] = body["tasks"][:1]
    body["project"] = "1.1746612998"
    body["tasks"][0]["data"]["image"] = "/data/upload/1/a.jpg"
    (item,) = client.post("/predict", json=body).json()["results"]
    assert "result" in item, item
    body["project"] = "2.1746613999"
    body["tasks"][0]["data"]["image"] = http_server.url + "/data/upload/2/b.jpg"
    (item,) = client.post("/predict", json=body).json()["results"]
    assert "result" in item, item  # fetched as a plain URL, without any token
    downloads = [r for r in http_server.requests if r["path"].startswith("/data/upload/")]
    headers = [r["headers"].get("Authorization") for r in downloads]
    assert headers == ["Token token-of-project-1", None], headers
    # Relative Label Studio paths of a project without /setup and without LABEL_STUDIO_*: one clear error.
    body["tasks"][0]["data"]["image"] = "/data/upload/2/b.jpg"
    (item,) = client.post("/predict", json=body).json()["results"]
    assert "result" not in item
    assert "LABEL_STUDIO_URL" in item["error"] and "reconnect the model" in item["error"], item["error"]
    assert len([r for r in http_server.requests if r["path"].startswith("/data/upload/")]) == 2
    # /setup's access check of project 1 used project 1's token too, and only that one
    checks = [r["headers"].get("Authorization") for r in http_server.requests if "whoami" in r["path"]]
    assert checks and set(checks) == {"Token token-of-project-1"}, checks
    # Each project sees only its own versions.
    assert client.get("/versions", params={"project": "1"}).json()["versions"] == [setup_version(client, setup)]
    assert client.get("/versions", params={"project": "2"}).json() == {"versions": []}


def setup_version(client, body) -> str:
    return client.post("/setup", json=body).json()["model_version"]


@pytest.mark.slow
def test_env_credentials_win_and_a_failing_task_does_not_hurt_the_others(make_client, fake_ls):
    client = make_client(LABEL_STUDIO_URL=fake_ls.url, LABEL_STUDIO_API_KEY=TOKEN)
    body = ls_body("predict-batch")
    body["tasks"][1]["data"]["image"] = "/data/upload/1/gone.jpg"
    results = client.post("/predict", json=body).json()["results"]
    assert ["result" in r for r in results] == [True, False, True]
    assert "404" in results[1]["error"] and "gone.jpg" in results[1]["error"]
    # a wrong key is answered with what to do
    client = make_client(LABEL_STUDIO_URL=fake_ls.url, LABEL_STUDIO_API_KEY="wrong")
    body = ls_body("predict-batch")
    body["tasks"] = body["tasks"][:1]
    (item,) = client.post("/predict", json=body).json()["results"]
    assert "result" not in item
    assert "Label Studio refused the API key" in item["error"] and "LABEL_STUDIO_API_KEY" in item["error"]


@pytest.mark.slow
def test_verbatim_interactive_call_uses_the_typed_prompt(make_client, fake_ls):
    client = make_client(LABEL_STUDIO_URL=fake_ls.url, LABEL_STUDIO_API_KEY=TOKEN)
    body = ls_body("predict-interactive")
    (item,) = client.post("/predict", json=body).json()["results"]
    assert item["result"] and {r["value"]["rectanglelabels"][0] for r in item["result"]} == {"Cat"}
    body["params"]["context"]["result"][0]["value"]["text"] = ["zebra"]
    response = client.post("/predict", json=body)
    assert response.status_code == 200
    (item,) = response.json()["results"]
    assert "result" not in item and "'zebra' matches no label" in item["error"]


def test_setup_and_predict_versions_are_equal_and_context_shapes_accepted(make_client, fake_ls):
    client = make_client(LABEL_STUDIO_URL=fake_ls.url, LABEL_STUDIO_API_KEY=TOKEN)
    version = client.post("/setup", json=ls_body("setup")).json()["model_version"]
    body = ls_body("predict-batch")
    body["tasks"] = [dict(body["tasks"][0], data={"image": "/data/upload/1/missing.jpg"})]
    for params in ({"login": None, "password": None, "context": None}, {"context": {}}, None, {"extra": 1}):
        body["params"] = params
        response = client.post("/predict", json=body)
        assert response.status_code == 200, response.text
        (item,) = response.json()["results"]
        assert item["model_version"] == version and "result" not in item


@pytest.mark.parametrize(
    "content, headers, status, message",
    [
        (b"{not json", {"Content-Type": "application/json"}, 400, "not valid JSON"),
        (b"[1, 2]", {"Content-Type": "application/json"}, 422, "JSON object"),
        (b"", {"Content-Type": "application/json"}, 422, ""),
        (json.dumps({"label_config": "<View/>"}).encode(), {"Content-Type": "application/json"}, 422, "tasks"),
        (json.dumps({"tasks": [{"id": 1, "data": {}}], "label_config": "<View><Image"}).encode(),
         {"Content-Type": "application/json"}, 422, "bad label config: the label config is not valid XML"),
        (json.dumps({"tasks": [{"id": 1, "data": {}}], "label_config": "<View><Image name='i' value='$i'/></View>"}
                    ).encode(), {"Content-Type": "application/json"}, 422, "no <RectangleLabels>"),
        (json.dumps({"tasks": [{"id": 1, "data": {}}]}).encode(), {"Content-Type": "application/json"}, 422,
         "no 'label_config'"),
    ],
)
def test_bad_predict_requests_get_4xx_with_a_message(make_client, content, headers, status, message):
    response = make_client().post("/predict", content=content, headers=headers)
    assert response.status_code == status
    assert message in response.json()["detail"]
    no_trace(response.text)


@pytest.mark.parametrize(
    "body, message",
    [
        ({"project": "1.1", "schema": "<View><Image name='i' value='$i'/></View>"}, "no <RectangleLabels>"),
        ({"project": "1.1", "schema": '<!DOCTYPE x [<!ENTITY e "e">]><View/>'}, "DOCTYPE or ENTITY"),
        ({"project": "1.1"}, "no 'schema'"),
    ],
)
def test_bad_setup_gets_4xx_with_a_message(make_client, body, message):
    response = make_client().post("/setup", json=body)
    assert response.status_code == 422 and message in response.json()["detail"]
    no_trace(response.text)


def test_empty_task_list_and_unknown_route(make_client):
    client = make_client()
    response = client.post("/predict", json={"tasks": [], "label_config": ls_body("setup")["schema"]})
    assert response.json() == {"results": []}
    response = client.get("/nope")
    assert response.status_code == 404 and "detail" in response.json()


@pytest.mark.parametrize(
    "content", [b"", b"not json", b"[]", json.dumps({"action": "ANNOTATION_CREATED", "project": {"id": 1}}).encode(),
                json.dumps({"action": "SOMETHING_NEW", "x": [1, 2]}).encode()]
)
def test_webhook_acknowledges_everything_without_auth(make_client, content):
    for client in (make_client(), make_client(BASIC_AUTH_USER="u", BASIC_AUTH_PASS="p")):
        response = client.post("/webhook", content=content, headers={"Content-Type": "application/json"})
        assert response.status_code == 200 and response.json()["status"] == "ok"


def test_basic_auth_on_every_route_but_webhook(make_client):
    client = make_client(BASIC_AUTH_USER="labeler", BASIC_AUTH_PASS="s3cret:x")
    setup = ls_body("setup")
    for method, path, body in [("GET", "/health", None), ("GET", "/", None), ("POST", "/setup", setup),
                               ("POST", "/predict", {"tasks": []}), ("GET", "/versions", None)]:
        for headers in ({}, basic("labeler", "wrong"), basic("other", "s3cret:x"), {"Authorization": "Basic !!"},
                        {"Authorization": "Bearer abc"}):
            response = client.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert response.headers["WWW-Authenticate"].startswith("Basic")
            assert "BASIC_AUTH_USER" in response.json()["detail"]
        response = client.request(method, path, json=body, headers=basic("labeler", "s3cret:x"))
        assert response.status_code in (200, 422), (path, response.text)
    assert client.post("/setup", json=setup, headers=basic("labeler", "s3cret:x")).status_code == 200
    # auth off: open
    assert make_client().get("/health").status_code == 200


class SlowDetector:
    """The real tiny detector, holding each forward pass until released (a long /predict)."""

    family = GROUNDING_DINO

    def __init__(self, inner):
        self.inner, self.entered, self.release = inner, threading.Event(), threading.Event()

    def prompt(self, classes, chunk_size=None):
        return self.inner.prompt(classes, chunk_size)

    def detect(self, *args, **kwargs):
        self.entered.set()
        self.release.wait(30)
        return self.inner.detect(*args, **kwargs)


@pytest.mark.slow
def test_health_and_setup_answer_fast_while_a_predict_runs(tiny_detector, make_settings, media_root):
    import uvicorn

    from backend.serving.predictor import Predictor
    from backend.app.server import create_app

    settings = make_settings(LOCAL_FILES_DOCUMENT_ROOT=media_root, MAX_PENDING_PREDICTS=1)
    detector = SlowDetector(tiny_detector)
    app = create_app(settings, Predictor(detector, settings))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: server.started, "uvicorn started", timeout=5)
        body = {"tasks": [{"id": 1, "data": {"image": "/data/local-files/?d=a.jpg"}}],
                "label_config": ls_body("setup")["schema"]}
        out = {}
        worker = threading.Thread(target=lambda: out.setdefault("r", httpx.post(f"{base}/predict", json=body, timeout=60)))
        worker.start()
        assert detector.entered.wait(30), "the predict should be running"
        for _ in range(3):
            start = time.monotonic()
            assert httpx.get(f"{base}/health", timeout=5).status_code == 200
            assert time.monotonic() - start < 1.0  # Label Studio's /health timeout
            start = time.monotonic()
            assert httpx.post(f"{base}/setup", json=ls_body("setup"), timeout=5).status_code == 200
            assert time.monotonic() - start < 1.0
        busy = httpx.post(f"{base}/predict", json=body, timeout=5)
        assert busy.status_code == 503 and "MAX_PENDING_PREDICTS" in busy.json()["detail"]
        detector.release.set()
        worker.join(60)
        assert out["r"].status_code == 200 and "result" in out["r"].json()["results"][0]
    finally:
        detector.release.set()
        server.should_exit = True
        thread.join(10)


# ----- fuzzing the OpenAPI spec: nothing the schema allows gives a 5xx or a stack trace ------------------

@pytest.mark.slow
@pytest.mark.parametrize("path, method", [("/setup", "POST"), ("/predict", "POST"), ("/webhook", "POST"),
                                          ("/health", "GET"), ("/versions", "GET")])
def test_fuzzed_requests_never_fail_the_server(tiny_detector, make_settings, tmp_path, path, method):
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    from backend.serving.predictor import Predictor
    from backend.app.server import create_app

    app_settings = make_settings(LOCAL_FILES_DOCUMENT_ROOT=tmp_path, DOWNLOAD_TIMEOUT=1)
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(app_settings, Predictor(tiny_detector, app_settings)))
    strategy = schema[path][method].as_strategy()

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=strategy)
    def check(case):
        response = case.call()
        assert response.status_code < 500, response.text
        assert "Traceback" not in response.text

    check()


def test_app_loads_the_model_at_start_up_when_given_none(make_settings):
    from fastapi.testclient import TestClient

    from backend.app.server import create_app

    app = create_app(make_settings())
    assert app.state.backend.predictor is None
    with TestClient(app) as client:
        assert app.state.backend.predictor is not None
        version = client.post("/setup", json=ls_body("setup")).json()["model_version"]
        assert version.startswith("tiny-grounding-dino-")


def test_unexpected_errors_are_json_without_a_stack_trace(tiny_detector, make_settings):
    from fastapi.testclient import TestClient

    from backend.serving.predictor import Predictor
    from backend.app.server import create_app

    settings = make_settings()
    predictor = Predictor(tiny_detector, settings)

    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    predictor.predict_tasks = broken
    with TestClient(create_app(settings, predictor), raise_server_exceptions=False) as client:
        response = client.post("/predict", json={"tasks": [{"id": 1}], "label_config": ls_body("setup")["schema"]})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error (RuntimeError); see the ML backend's log"}
