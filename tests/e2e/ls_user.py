"""What a Label Studio user does, through Label Studio's API/SDK (helpers of the e2e tests)."""
from __future__ import annotations

import io
import random

import httpx

# Aliases, predicted_values, a camel-case label and a TextArea prompt, as in the protocol doc's fixtures.
LABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="Cat" predicted_values="cat, kitten" background="#e6194b"/>
    <Label value="Remote" alias="RC" predicted_values="remote control" background="#3cb44b"/>
    <Label value="TrafficLight" background="#4363d8"/>
  </RectangleLabels>
  <TextArea name="prompt" toName="image" editable="true" maxSubmissions="1"/>
</View>"""
# What Label Studio may store as a region's label: the alias when one is set, else the value.
EMITTED_LABELS = {"Cat", "RC", "TrafficLight"}
# The random model's scores are high; this keeps a handful of boxes per image (readable screenshot).
E2E_BOX_THRESHOLD = "0.85"
BASIC_USER, BASIC_PASS = "ls-e2e", "s3cret-e2e-pass"


def make_image(seed: int, size=(320, 240), fmt="PNG") -> bytes:
    """A PIL drawing: a few coloured rectangles and ellipses on a textured background."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    img = Image.new("RGB", size, tuple(rng.randrange(180, 255) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    w, h = size
    for _ in range(4):
        x0, y0 = rng.randrange(0, w - 60), rng.randrange(0, h - 60)
        box = [x0, y0, x0 + rng.randrange(30, 120), y0 + rng.randrange(30, 100)]
        colour = tuple(rng.randrange(0, 200) for _ in range(3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)(box, fill=colour, outline=(0, 0, 0))
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


# ----- what a user does, through Label Studio's API/SDK -----------------------------------------------

def create_project(ls_client, title: str, config: str = LABEL_CONFIG) -> int:
    return ls_client.projects.create(title=title, label_config=config).id


def upload_images(ls_api, project_id: int, images: dict[str, bytes]) -> list[int]:
    """The "Import" dialog: files uploaded to Label Studio become tasks with /data/upload/... URLs."""
    files = [(f"file{i}", (name, data, "image/png" if name.endswith(".png") else "image/jpeg"))
             for i, (name, data) in enumerate(images.items())]
    r = ls_api.post(f"/api/projects/{project_id}/import", files=files, params={"return_task_ids": "true"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["task_count"] == len(images), body
    return sorted(body["task_ids"]) if body.get("task_ids") else task_ids(ls_api, project_id)


def import_tasks(ls_api, project_id: int, tasks: list[dict]) -> None:
    r = ls_api.post(f"/api/projects/{project_id}/import", json=tasks)
    assert r.status_code == 201, r.text


def task_ids(ls_api, project_id: int) -> list[int]:
    r = ls_api.get("/api/tasks", params={"project": project_id, "page_size": 1000, "fields": "all"})
    r.raise_for_status()
    return sorted(t["id"] for t in r.json()["tasks"])


def retrieve_predictions(ls_api, project_id: int) -> dict:
    """Data Manager -> select all -> Actions -> Retrieve Predictions."""
    r = ls_api.post("/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project_id},
                    json={"selectedItems": {"all": True, "excluded": []}})
    assert r.status_code == 200, r.text
    return r.json()


def predictions_of(ls_api, task_id: int) -> list[dict]:
    r = ls_api.get("/api/predictions", params={"task": task_id})
    r.raise_for_status()
    return r.json()


def backend_setup_version(backend_url: str, config: str = LABEL_CONFIG, auth=None) -> str:
    r = httpx.post(f"{backend_url}/setup", json={"project": "1.1", "schema": config}, auth=auth, timeout=30)
    r.raise_for_status()
    return r.json()["model_version"]
