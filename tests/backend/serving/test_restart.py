"""A restart loses nothing silently: the background job's unfinished tasks are kept in STATE_DIR and finish
after the restart (each stored once), or are shown as dropped with the reason and the click that finishes
them; the versions served and the project's title survive it; the key itself is never written to disk.

Two apps in turn on one STATE_DIR (the same process: `make_client` twice), Label Studio's API a stand-in
that records every prediction stored (tests/backend/standin_label_studio.py).
"""
from __future__ import annotations

import json

import pytest

from labelstudio.importer import PredictionImporter
from tests.label_studio_requests import ls_body
from tests.backend.standin_label_studio import StandInLabelStudio
from tests.backend.background_jobs import CONFIG, GatedDetector, post, tasks, wait_for_jobs
from tests.waiting import wait_until

PROJECT = "7.1746612998"


class Connections:
    """The importer factory of both apps: imports into the stand-in, records (url, key) of each connection."""

    def __init__(self, label_studio: StandInLabelStudio):
        self.label_studio, self.keys = label_studio, []

    def __call__(self, url, api_key, project, timeout):
        self.keys.append((url, api_key))
        return PredictionImporter(self.label_studio, url, project)


def kept_files(state_dir):
    return sorted((state_dir / "jobs").glob("*.json")) if (state_dir / "jobs").is_dir() else []


def stop_with_queued_work(make_client, tiny_detector, env, connections, setup=None) -> tuple[dict, str]:
    """Retrieve Predictions on 10 tasks; the model holds everything after the first batch; the backend stops.
    Returns the answer's finished items by task id (Label Studio stores them, as it does with an answer; on
    a slow machine there may be none) and the job's model_version."""
    held = GatedDetector(tiny_detector)
    client = make_client(detector=held, importer_factory=connections, **env)
    if setup is not None:
        assert client.post("/setup", json=setup).status_code == 200
    results = post(client, tasks(10), project=PROJECT)
    answered = {task: item for task, item in zip(range(1, 11), results) if item != []}
    assert all("result" in item for item in answered.values()), results
    assert len(answered) <= 1, "the model holds every task after the first"
    for task, item in answered.items():
        connections.label_studio.predictions(task).append(dict(item, task=task))
    (job,) = client.get("/status").json()["jobs"]
    client.__exit__(None, None, None)  # lifespan shutdown, as on SIGTERM (the held batch is abandoned)
    held.released.set()
    return answered, job["model_version"]


@pytest.fixture
def env(media_root):
    return {"LOCAL_FILES_DOCUMENT_ROOT": media_root, "ML_TIMEOUT_PREDICT": 4,
            "LABEL_STUDIO_URL": "http://label-studio.test:8080", "LABEL_STUDIO_API_KEY": "the-key"}


@pytest.mark.slow
def test_the_queued_tasks_finish_after_a_restart_each_stored_once(make_client, tiny_detector, env, tmp_path):
    label_studio = StandInLabelStudio(tasks(10), CONFIG, project_id=7)
    connections = Connections(label_studio)
    answered, version = stop_with_queued_work(make_client, tiny_detector, env, connections)
    left = [t for t in range(1, 11) if t not in answered]
    (kept,) = kept_files(tmp_path / "state")
    record = json.loads(kept.read_text())
    assert sorted(t["id"] for t in record["tasks"]) == left, "the tasks not answered are kept"
    assert record["key_source"] == "LABEL_STUDIO_API_KEY" and "the-key" not in kept.read_text(), "never the key"
    # an import that landed just before the stop, after the journal's last write: not stored twice
    label_studio.predictions(left[0]).append({"task": left[0], "model_version": version, "result": []})

    client = make_client(importer_factory=connections, **env)  # the restart
    jobs = wait_for_jobs(client)
    (job,) = [j for j in jobs if j["project"] == "7"]
    assert job["state"] == "done", job
    assert job["message"] == f"resumed after a restart: {len(left)} tasks queued before it"
    assert (job["imported"], job["already_stored"], job["failed"]) == (len(left) - 1, 1, 0), job
    stored = {t: [p["model_version"] for p in label_studio.predictions(t)] for t in range(1, 11)}
    assert stored == {t: [version] for t in range(1, 11)}, "every task holds exactly one prediction"
    wait_until(lambda: kept_files(tmp_path / "state") == [], "a finished job leaves nothing kept")
    assert connections.keys[-1] == ("http://label-studio.test:8080", "the-key")


@pytest.mark.slow
def test_a_kept_job_whose_version_changed_is_shown_as_dropped_with_the_click_that_finishes_it(
        make_client, tiny_detector, env, tmp_path):
    label_studio = StandInLabelStudio(tasks(10), CONFIG, project_id=7)
    connections = Connections(label_studio)
    answered, _ = stop_with_queued_work(make_client, tiny_detector, env, connections)
    left = [t for t in range(1, 11) if t not in answered]

    client = make_client(importer_factory=connections, BOX_THRESHOLD=0.35, **env)  # the config changed
    job = wait_until(lambda: [j for j in client.get("/status").json()["jobs"] if j["state"] == "dropped"],
                     "the kept job reported as dropped")[0]
    new_version = client.post("/setup", json={**ls_body("setup"), "project": PROJECT}).json()["model_version"]
    named = (", ".join(map(str, left[:8])) + f", … ({len(left)} in all)" if len(left) > 8
             else (", ".join(map(str, left[:-1])) + f" and {left[-1]}" if len(left) > 1 else str(left[0])))
    noun = "tasks" if len(left) > 1 else "task"
    assert job["message"] == (
        f"Retrieve Predictions on {noun} {named} to pre-label them: {len(left)} tasks queued before the backend "
        f"restarted were not resumed because the project is now pre-labelled as {new_version} (its label "
        "config, learned thresholds or model changed since)"), job
    assert (job["total"], job["dropped"], job["project"]) == (len(left), len(left), "7")
    page = client.get("/", headers={"accept": "text/html"}).text
    assert f"is dropped: Retrieve Predictions on {noun} {named}" in page
    assert all(label_studio.predictions(t) == [] for t in left), "nothing stored with the old version"
    assert kept_files(tmp_path / "state") == [], "reported once, then forgotten"


@pytest.fixture
def label_studio_http(http_server):
    """Label Studio's whoami and project endpoints (the key check and the project's title)."""
    http_server.routes["/api/current-user/whoami"] = lambda r: (
        200, {"Content-Type": "application/json"}, b'{"id": 1, "email": "admin@example.com"}')
    http_server.routes["/api/projects/7"] = lambda r: (
        200, {"Content-Type": "application/json"}, json.dumps({"id": 7, "title": "Street signs"}).encode())
    return http_server


@pytest.mark.slow
def test_a_job_stored_with_the_setup_token_waits_for_the_next_setup_and_never_writes_the_token(
        make_client, tiny_detector, env, tmp_path, label_studio_http):
    env = {**env, "LABEL_STUDIO_URL": label_studio_http.url, "LABEL_STUDIO_API_KEY": ""}
    setup = {**ls_body("setup"), "project": PROJECT, "hostname": label_studio_http.url,
             "access_token": "setup-token-0123"}
    label_studio = StandInLabelStudio(tasks(10), CONFIG, project_id=7)
    connections = Connections(label_studio)
    answered, _ = stop_with_queued_work(make_client, tiny_detector, env, connections, setup=setup)
    left = [t for t in range(1, 11) if t not in answered]
    for path in (tmp_path / "state").rglob("*.json"):
        assert "setup-token-0123" not in path.read_text(), f"{path} holds the /setup token"

    client = make_client(importer_factory=connections, **env)  # the restart: no key until Label Studio's /setup
    (job,) = wait_until(lambda: [j for j in client.get("/status").json()["jobs"] if j["state"] == "waiting"],
                        "the kept job waiting for the key")
    assert job["message"].startswith("open the project in Label Studio (or set LABEL_STUDIO_API_KEY) to finish "
                                     "tasks "), job
    assert job["done"] == 0 and all(label_studio.predictions(t) == [] for t in left)
    assert client.post("/setup", json=setup).status_code == 200  # Label Studio sends the token again
    (job,) = wait_for_jobs(client)
    assert job["state"] == "done" and job["imported"] == len(left), job
    assert all(len(label_studio.predictions(t)) == 1 for t in range(1, 11))
    assert connections.keys[-1] == (label_studio_http.url, "setup-token-0123")


def test_versions_and_the_title_survive_a_restart(make_client, label_studio_http, media_root):
    env = {"LABEL_STUDIO_URL": label_studio_http.url, "LABEL_STUDIO_API_KEY": "the-key"}
    setup = {**ls_body("setup"), "project": PROJECT}
    client = make_client(**env)
    first = client.post("/setup", json=setup).json()["model_version"]
    wait_until(lambda: client.get("/status").json()["projects"][0]["title"] == "Street signs",
               "the title read from Label Studio", timeout=20)
    client.__exit__(None, None, None)

    client = make_client(BOX_THRESHOLD=0.35, **env)  # the restart, with a setting that changes the version
    assert client.get("/versions").json() == {"versions": [first]}, "known before Label Studio's next /setup"
    (project,) = client.get("/status").json()["projects"]
    assert (project["project"], project["title"]) == ("7", "Street signs")
    second = client.post("/setup", json=setup).json()["model_version"]
    assert second != first
    assert client.get("/versions", params={"project": "7"}).json() == {"versions": [first, second]}
    assert client.get("/versions").json() == {"versions": [first, second]}
    assert ">Street signs</b>" in client.get("/", headers={"accept": "text/html"}).text


def test_unreadable_kept_files_are_named_on_the_status_page_and_left_in_place(make_client, tmp_path):
    jobs = tmp_path / "state" / "jobs"
    jobs.mkdir(parents=True)
    (jobs / "7-0123456789abcdef.json").write_text('{"project": "7", "tasks": [')  # torn by a full disk
    project = tmp_path / "state" / "projects" / "7"
    project.mkdir(parents=True)
    (project / "project.json").write_text("[]")
    client = make_client()
    warnings = wait_until(lambda: client.get("/status").json()["model"]["warnings"], "both files named",
                          holds=lambda found: len(found) == 2)  # (the jobs' at resume, in a thread)
    assert any(w.startswith(f"{project / 'project.json'} could not be read (") and w.endswith(
        "; delete it (the project's next /setup writes it again, without the versions served before)")
        for w in warnings), warnings
    assert any(w.startswith(f"the kept background job {jobs / '7-0123456789abcdef.json'} could not be read (")
               and "Retrieve Predictions on the tasks without a prediction finishes them" in w for w in warnings), warnings
    assert (jobs / "7-0123456789abcdef.json").exists() and client.get("/status").json()["jobs"] == []


@pytest.mark.slow
def test_a_click_without_any_key_on_a_waiting_job_gives_its_tasks_up_and_says_so(
        make_client, tiny_detector, env, tmp_path, label_studio_http):
    env = {**env, "LABEL_STUDIO_URL": label_studio_http.url, "LABEL_STUDIO_API_KEY": "", "ML_TIMEOUT_PREDICT": 10}
    setup = {**ls_body("setup"), "project": PROJECT, "hostname": label_studio_http.url, "access_token": "tok-0123"}
    connections = Connections(StandInLabelStudio(tasks(10), CONFIG, project_id=7))
    answered, _ = stop_with_queued_work(make_client, tiny_detector, env, connections, setup=setup)
    left = [t for t in range(1, 11) if t not in answered]

    client = make_client(importer_factory=connections, **env)
    wait_until(lambda: [j for j in client.get("/status").json()["jobs"] if j["state"] == "waiting"], "waiting")
    (item,) = post(client, tasks(1, start=left[0]), project=PROJECT)  # no /setup, no key: answered directly
    assert "result" in item, item
    (job,) = wait_for_jobs(client)
    assert job["dropped"] == len(left) and job["answered"] == 1, job
    assert job["message"].startswith(f"{len(left)} tasks kept from before the restart were given up: set "
                                     "LABEL_STUDIO_API_KEY"), job
    wait_until(lambda: kept_files(tmp_path / "state") == [], "nothing left kept")
