"""GET /status (JSON) and GET / for a browser (the status page), from the real app's state."""
from __future__ import annotations

from lxml import html

from tests.label_studio_requests import ls_body
from tests.waiting import wait_until


def test_status_json_and_page_show_projects_jobs_and_failures(make_client, media_root):
    client = make_client(LOCAL_FILES_DOCUMENT_ROOT=media_root)
    setup = ls_body("setup")
    setup["project"] = "3.1746612998"
    version = client.post("/setup", json=setup).json()["model_version"]
    tasks = [{"id": 41, "data": {"image": "/data/local-files/?d=a.jpg"}},
             {"id": 42, "data": {"image": "/data/local-files/?d=not-an-image.jpg"}}]
    results = client.post("/predict", json={"tasks": tasks, "label_config": setup["schema"],
                                            "project": "3.1746612998"}).json()["results"]
    assert "result" in results[0] and "error" in results[1]

    status = client.get("/status").json()
    (project,) = status["projects"]
    assert project["project"] == "3" and project["model_versions"] == [version]
    assert project["label_studio"]["key_source"] == "/setup"  # the token itself is never shown
    assert "access_token" not in str(status) or setup["access_token"] not in str(status)
    (job,) = status["jobs"]
    assert (job["state"], job["total"], job["done"], job["failed"], job["answered"]) == ("done", 2, 2, 1, 1)
    (failure,) = status["failures"]
    assert failure["task"] == 42 and failure["project"] == "3" and "not-an-image.jpg" in failure["image"]
    assert results[1]["error"] == failure["reason"]

    # Label Studio and curl still get the JSON health answer at /; a browser gets the page.
    assert client.get("/", headers={"Accept": "application/json"}).json()["status"] == "UP"
    page = client.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert page.headers["content-type"].startswith("text/html")
    text = html.fromstring(page.text).text_content()
    assert "not-an-image.jpg" in text and failure["reason"][:40] in text and version in text


class StandInTasksApi:
    """label_studio_sdk.LabelStudio(...).tasks.update, recording what the backend writes."""

    def __init__(self):
        self.updates: list[tuple[int, dict]] = []
        self.tasks = self

    def update(self, id, data):
        self.updates.append((id, data))


def test_failed_task_field_holds_the_reason_and_is_cleared_on_success(make_client, media_root):
    api = StandInTasksApi()
    client = make_client(LOCAL_FILES_DOCUMENT_ROOT=media_root, FAILED_TASK_FIELD="prelabel_error",
                         LABEL_STUDIO_URL="http://label-studio.test:8080", LABEL_STUDIO_API_KEY="the-key",
                         notes_client_factory=lambda url, key: api)
    config = ls_body("setup")["schema"]
    tasks = [{"id": 41, "data": {"image": "/data/local-files/?d=a.jpg", "prelabel_error": "old reason"}},
             {"id": 42, "data": {"image": "/data/local-files/?d=not-an-image.jpg"}}]
    results = client.post("/predict", json={"tasks": tasks, "label_config": config, "project": "3.1"}).json()["results"]
    assert "result" in results[0] and "error" in results[1]
    wait_until(lambda: len(api.updates) == 2, "a note written for each task", timeout=5)
    updates = dict(api.updates)
    assert updates[41] == {"image": "/data/local-files/?d=a.jpg"}, "the old reason is cleared, the data kept"
    assert set(updates[42]) == {"image", "prelabel_error"} and updates[42]["image"] == tasks[1]["data"]["image"]
    assert updates[42]["prelabel_error"].startswith(results[1]["error"])
    assert results[1]["model_version"] in updates[42]["prelabel_error"]


def test_setup_reports_skipped_labels_and_a_refused_key_on_the_status_page(make_client, http_server, caplog):
    http_server.routes["/api/current-user/whoami"] = lambda req: (401, {"Content-Type": "application/json"},
                                                                  b'{"detail": "Invalid token."}')
    client = make_client(LABEL_STUDIO_URL=http_server.url, LABEL_STUDIO_API_KEY="wrong-key")
    long_label = " ".join(["word"] * 300)
    config = ('<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
              f'<Label value="Cat"/><Label value="  "/><Label value="{long_label}"/></RectangleLabels></View>')
    with caplog.at_level("WARNING", logger="backend"):
        setup = client.post("/setup", json={"project": "5.1", "schema": config})
    assert setup.status_code == 200, setup.text
    (project,) = client.get("/status").json()["projects"]
    skipped = project["skipped_labels"]
    assert len(skipped) == 2 and any("blank" in s for s in skipped) and any("cannot be prompted" in s for s in skipped)
    check = project["label_studio"]["check"]
    assert check["ok"] is False and "LABEL_STUDIO_API_KEY" in check["message"]
    logged = caplog.text
    assert "project 5" in logged and "LABEL_STUDIO_API_KEY" in logged and "blank" in logged
    # The version is the one of the usable labels alone.
    only_cat = ('<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
                '<Label value="Cat"/></RectangleLabels></View>')
    assert setup.json()["model_version"] == client.post("/setup", json={"schema": only_cat}).json()["model_version"]


def test_setup_with_a_legacy_token_warns_on_the_status_page_and_in_the_log(make_client, http_server, caplog):
    user = b'{"id": 1, "email": "ann@example.com"}'
    http_server.routes["/api/current-user/whoami"] = lambda req: (
        (200, {"Content-Type": "application/json"}, user) if req["headers"].get("Authorization") == "Token legacy-key"
        else (401, {"Content-Type": "application/json"}, b'{"detail": "Invalid token."}'))
    client = make_client(LABEL_STUDIO_URL=http_server.url, LABEL_STUDIO_API_KEY="legacy-key")
    config = ('<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
              '<Label value="Cat"/></RectangleLabels></View>')
    with caplog.at_level("WARNING", logger="backend"):
        for _ in range(3):  # Label Studio calls /setup on every page of the project: one warning, not three
            assert client.post("/setup", json={"project": "6.1", "schema": config}).status_code == 200
    check = client.get("/status").json()["projects"][0]["label_studio"]["check"]
    assert (check["ok"], check["status"]) == (True, "legacy")
    assert check["message"].startswith("Set LABEL_STUDIO_API_KEY to a personal access token")
    assert caplog.text.count("project 6: Label Studio access: Set LABEL_STUDIO_API_KEY to a personal access token") == 1


def test_a_config_with_nothing_usable_is_refused_with_every_reason_logged(make_client, caplog):
    client = make_client()
    config = ('<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
              '<Label value="  "/><Label value="..."/></RectangleLabels></View>')
    with caplog.at_level("WARNING", logger="backend"):
        response = client.post("/setup", json={"project": "6.1", "schema": config})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "blank" in detail and "..." in detail
    assert "project 6" in caplog.text and detail in caplog.text, "Label Studio tells users to read this log"


def test_an_interactive_prompt_with_an_unknown_phrase_serves_the_known_ones(make_client, media_root):
    client = make_client(LOCAL_FILES_DOCUMENT_ROOT=media_root)
    body = ls_body("predict-interactive")
    body["tasks"][0]["data"]["image"] = "/data/local-files/?d=a.jpg"
    body["params"]["context"]["result"][0]["value"]["text"] = ["kitten, unicorn"]
    (item,) = client.post("/predict", json=body).json()["results"]
    assert item["result"] and {r["value"]["rectanglelabels"][0] for r in item["result"]} == {"Cat"}
    assert "'unicorn' matches no label" in item["message"]
