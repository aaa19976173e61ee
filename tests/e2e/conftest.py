"""Session fixtures of the end-to-end tests: ONE real Label Studio 1.23.2 (own venv, temp data dir,
127.0.0.1 only) for the whole session, our backend as subprocesses (small random model), and a project
that has been pre-labelled through "Retrieve Predictions" as a user would do it.

Logs of every server go to tests/artifacts/ (label-studio.log, backend*.log), screenshots too.
"""
from __future__ import annotations

import json

import httpx
import pytest


from tests.e2e.ls_harness import ARTIFACTS, start_backend, start_label_studio, stop  # noqa: E402
from tests.e2e.ls_user import (  # noqa: E402
    BASIC_PASS, BASIC_USER, E2E_BOX_THRESHOLD, create_project, import_tasks, make_image, retrieve_predictions,
    task_ids, upload_images,
)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    server = start_label_studio(tmp_path_factory.mktemp("label-studio"))
    yield server
    stop(server.proc)


@pytest.fixture(scope="session")
def ls_client(label_studio):
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=label_studio.url, api_key=label_studio.token, timeout=180)


@pytest.fixture(scope="session")
def ls_api(label_studio):
    """Plain REST calls for the endpoints whose SDK method drops the answer (actions, interactive)."""
    with httpx.Client(base_url=label_studio.url, headers={"Authorization": f"Token {label_studio.token}"},
                      timeout=180) as client:
        yield client


@pytest.fixture(scope="session")
def backend(tiny_model_dir, label_studio):
    url, proc, _ = start_backend(tiny_model_dir, label_studio, "backend.log",
                                 {"BOX_THRESHOLD": E2E_BOX_THRESHOLD})
    yield url
    stop(proc)


@pytest.fixture(scope="session")
def backend_basic_auth(tiny_model_dir, label_studio):
    url, proc, _ = start_backend(
        tiny_model_dir, label_studio, "backend-basic-auth.log",
        {"BOX_THRESHOLD": E2E_BOX_THRESHOLD, "BASIC_AUTH_USER": BASIC_USER, "BASIC_AUTH_PASS": BASIC_PASS},
    )
    yield url
    stop(proc)


@pytest.fixture(scope="session")
def prelabelled_project(ls_client, ls_api, backend, label_studio):
    """Three uploaded images and one Local Storage file, backend connected, "Retrieve Predictions" run once."""
    project = create_project(ls_client, "E2E Grounding DINO")
    images = {f"e2e_{i}.png": make_image(i, size=(320 + 40 * i, 240)) for i in range(3)}
    uploaded = upload_images(ls_api, project, images)
    (label_studio.media_root / "images" / "local_0.jpg").write_bytes(make_image(10, (256, 256), "JPEG"))
    # Local Storage as a user sets it up (Settings -> Cloud Storage -> Local files), so Label Studio serves it
    r = ls_api.post("/api/storages/localfiles", json={
        "project": project, "title": "local images", "path": str(label_studio.media_root / "images"),
        "use_blob_urls": True})
    assert r.status_code == 201, r.text
    import_tasks(ls_api, project, [{"image": "/data/local-files/?d=images/local_0.jpg"}])
    ids = task_ids(ls_api, project)
    assert len(ids) == 4 and set(uploaded) <= set(ids)
    ml = ls_client.ml.create(project=project, url=backend, title="Grounding DINO", is_interactive=True)
    first = retrieve_predictions(ls_api, project)
    (ARTIFACTS / "retrieve-predictions.json").write_text(json.dumps(first, indent=2))
    return {"project": project, "tasks": ids, "ml": ml.id, "first_retrieve": first}
