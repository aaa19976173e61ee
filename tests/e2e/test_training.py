"""Start Training from Label Studio: annotate tasks, press the button (its API), the backend fine-tunes,
and the next Retrieve Predictions on new tasks is served by the new model (its model_version names it)."""
from __future__ import annotations

import pytest

from tests.e2e.ls_harness import start_backend, stop
from tests.e2e.ls_user import (
    create_project, import_tasks, make_image, predictions_of, retrieve_predictions, start_training, task_ids,
    upload_images, wait_for_training,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="Square"/>
  </RectangleLabels>
</View>"""


def annotate(ls_api, task_id: int) -> None:
    """What an annotator saves: one Square box."""
    region = {"from_name": "label", "to_name": "image", "type": "rectanglelabels", "original_width": 160,
              "original_height": 120, "value": {"x": 20, "y": 25, "width": 30, "height": 40, "rotation": 0,
                                                "rectanglelabels": ["Square"]}}
    r = ls_api.post(f"/api/tasks/{task_id}/annotations/", json={"result": [region], "was_cancelled": False})
    assert r.status_code == 201, r.text


def test_start_training_serves_the_project_with_its_fine_tuned_model(ls_client, ls_api, label_studio,
                                                                      tiny_model_dir, tmp_path):
    url, proc, log = start_backend(tiny_model_dir, label_studio, "backend-training.log", {
        # A threshold the briefly fine-tuned tiny model's scores reach: a model is adopted only when it shows
        # boxes at its own thresholds (at the suite's usual 0.85 it would pre-label nothing and is kept out).
        "BOX_THRESHOLD": "0.05", "STATE_DIR": str(tmp_path / "state"), "TRAIN_STEPS": "8",
        "TRAIN_IMAGE_SIZE": "128"})
    try:
        project = create_project(ls_client, "E2E Start Training", CONFIG)
        (first,) = upload_images(ls_api, project, {"square.png": make_image(3, (160, 120))})
        image = ls_api.get(f"/api/tasks/{first}").json()["data"]["image"]
        import_tasks(ls_api, project, [{"image": image} for _ in range(23)])
        ids = task_ids(ls_api, project)
        for task_id in ids:
            annotate(ls_api, task_id)
        ml = ls_client.ml.create(project=project, url=url, title="Grounding DINO", is_interactive=False)
        base_version = ls_client.ml.get(ml.id).model_version

        start_training(ls_api, ml.id)
        run = wait_for_training(url, project, log=log)
        assert run["state"] == "done", (run, log.read_text()[-3000:])
        assert "fine-tuned model" in run["message"] and "now serving the project" in run["message"], run

        # New tasks, Retrieve Predictions: Label Studio asks /setup again and stores the new version.
        import_tasks(ls_api, project, [{"image": image} for _ in range(3)])
        new = sorted(set(task_ids(ls_api, project)) - set(ids))
        retrieve_predictions(ls_api, project)
        new_version = ls_client.ml.get(ml.id).model_version
        assert new_version != base_version and new_version.startswith("ft-"), (base_version, new_version)
        for task_id in new:
            predictions = predictions_of(ls_api, task_id)
            assert [p["model_version"] for p in predictions] == [new_version]
            assert predictions[0]["result"], "the adopted model pre-labels the new tasks"
        assert run["model_version"] == new_version  # the row names the version the run produced
    finally:
        stop(proc)
