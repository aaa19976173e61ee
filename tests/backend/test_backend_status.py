"""GET /status (JSON) and GET / for a browser (the status page), from the real app's state."""
from __future__ import annotations

from lxml import html

from tests.backend.backend_helpers import ls_body


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
