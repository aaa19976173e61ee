"""Our backend connected to a real Label Studio 1.23.2, driven only through Label Studio's API/SDK."""
from __future__ import annotations

import pytest
from label_studio_sdk.core.api_error import ApiError

from tests.e2e.ls_user import (
    BASIC_PASS, BASIC_USER, EMITTED_LABELS, backend_setup_version, create_project, import_tasks,
    make_image, predictions_of, retrieve_predictions, task_ids, upload_images,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def assert_valid_prediction(pred: dict, version: str) -> int:
    """One stored prediction: our model_version, labels the config defines, percent coordinates."""
    assert pred["model_version"] == version
    for region in pred["result"]:
        assert region["from_name"] == "label" and region["to_name"] == "image"
        assert region["type"] == "rectanglelabels"
        value = region["value"]
        assert len(value["rectanglelabels"]) == 1
        assert value["rectanglelabels"][0] in EMITTED_LABELS, value  # "Remote" has alias "RC"
        for key in ("x", "y", "width", "height"):
            assert 0.0 <= value[key] <= 100.0, (key, value)
        assert value["x"] + value["width"] <= 100.0 + 1e-6
        assert value["y"] + value["height"] <= 100.0 + 1e-6
        assert region["original_width"] > 0 and region["original_height"] > 0
        assert 0.0 <= region["score"] <= 1.0
    return len(pred["result"])


def test_retrieve_predictions_stores_one_valid_prediction_per_task(prelabelled_project, ls_client, ls_api, backend):
    project, tasks = prelabelled_project["project"], prelabelled_project["tasks"]
    assert prelabelled_project["first_retrieve"]["processed_items"] == len(tasks)
    version = backend_setup_version(backend)
    # Label Studio keeps the version /setup announced on the model connection
    assert ls_client.ml.get(prelabelled_project["ml"]).model_version == version

    regions = 0
    sizes = set()
    for task in tasks:
        preds = predictions_of(ls_api, task)
        assert len(preds) == 1, (task, preds)
        regions += assert_valid_prediction(preds[0], version)
        sizes.update((r["original_width"], r["original_height"]) for r in preds[0]["result"])
    assert regions > 0, "no boxes at all: the checks above would be vacuous"
    # the uploads were 320/360/400 x 240 and the local file 256 x 256: sizes come from the real images
    assert sizes <= {(320, 240), (360, 240), (400, 240), (256, 256)} and len(sizes) >= 2, sizes

    # a second "Retrieve Predictions" finds every task already predicted with this model_version
    retrieve_predictions(ls_api, project)
    for task in tasks:
        assert len(predictions_of(ls_api, task)) == 1, task


def test_interactive_prompt_returns_suggestions(prelabelled_project, ls_api, backend):
    """Interactive pre-annotation: the user types "kitten" in the TextArea; boxes come back as Cat."""
    task = prelabelled_project["tasks"][0]
    context = {"result": [{"from_name": "prompt", "to_name": "image", "type": "textarea",
                           "value": {"text": ["kitten"]}}]}
    r = ls_api.post(f"/api/ml/{prelabelled_project['ml']}/interactive-annotating",
                    json={"task": task, "context": context})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert not data.get("errors"), data
    result = data["result"]
    assert result, data
    assert data.get("model_version") == backend_setup_version(backend) or "model_version" not in data
    assert {region["value"]["rectanglelabels"][0] for region in result} == {"Cat"}
    # suggestions are not stored as predictions
    assert len(predictions_of(ls_api, task)) == 1


def test_basic_auth_connection_and_a_missing_image(ls_client, ls_api, backend_basic_auth, label_studio):
    project = create_project(ls_client, "E2E basic auth")
    good = upload_images(ls_api, project, {f"auth_{i}.png": make_image(20 + i) for i in range(2)})
    import_tasks(ls_api, project, [{"image": f"/data/upload/{project}/no-such-file.png"}])
    missing = sorted(set(task_ids(ls_api, project)) - set(good))
    assert len(missing) == 1

    # without the credentials Label Studio's health check gets 401 and refuses the connection
    with pytest.raises(ApiError) as refused:
        ls_client.ml.create(project=project, url=backend_basic_auth, title="no auth")
    assert refused.value.status_code == 400
    assert "auth" in str(refused.value.body).lower()

    ml = ls_client.ml.create(project=project, url=backend_basic_auth, title="basic auth",
                             auth_method="BASIC_AUTH", basic_auth_user=BASIC_USER, basic_auth_pass=BASIC_PASS)
    version = backend_setup_version(backend_basic_auth, auth=(BASIC_USER, BASIC_PASS))
    assert ls_client.ml.get(ml.id).model_version == version

    retrieve_predictions(ls_api, project)
    for task in good:
        preds = predictions_of(ls_api, task)
        assert len(preds) == 1, task
        assert_valid_prediction(preds[0], version)
    assert predictions_of(ls_api, missing[0]) == [], "a failed task must stay unpredicted (retryable)"
    backend_log = (label_studio.log.parent / "backend-basic-auth.log").read_text()
    assert f"task {missing[0]}" in backend_log
