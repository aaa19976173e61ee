"""A small rectangle project in a real Label Studio, built through its API, and its exports.

Shared by the recorder of the export fixtures (`python -m tests.e2e.record_exports`) and the e2e test of
`evaluation.labelstudio` on a real export. The boxes are chosen so the figures can be computed by hand
(see `EXPECTED` and tests/evaluation/labelstudio/test_real_exports.py):

- two model versions: `gdino-base` (older) predicts tasks 1-4, `gdino-ft` (newer) predicts task 1 only;
- task 1: two annotations (the later one is final): Cat `a` kept, Dog `b` deleted, Dog `n1` added;
- task 2: one annotation started from its prediction: Cat `c` moved right by 2 % (IoU 0.905), Dog `d` kept;
- task 3: only a cancelled (skipped) annotation; task 4: no annotation.
"""
from __future__ import annotations

import time

from tests.e2e.ls_user import make_image, upload_images
from tests.waiting import wait_until

CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="Cat"/>
    <Label value="Dog"/>
  </RectangleLabels>
</View>"""
SIZES = [(160, 120), (200, 150), (160, 120), (160, 120)]  # pixels of the four images (only URLs are exported)
BASE, FT = "gdino-base", "gdino-ft"
# What gdino-base scores on the annotated tasks 1 and 2 (hand-computed, as in tests/evaluation/labelstudio):
# Cat: a (0.9) matches at every IoU; c (0.8, IoU 0.905) at 0.50-0.90, not at 0.95 -> AP (9 + 51/101) / 10.
# Dog: d (0.7) matches, b (0.6) is a false positive, n1 is missed -> recall 1/2 at precision 1: AP 51/101.
EXPECTED = {
    BASE: {"AP": ((9 + 51 / 101) / 10 + 51 / 101) / 2, "tp": 3, "fp": 1, "fn": 1, "num_images": 2,
           "prelabels": {"prelabels": 4, "kept": 2, "moved_resized": 1, "relabelled": 0, "deleted": 1, "added": 1}},
    FT: {"AP": 1.0, "tp": 2, "fp": 0, "fn": 0, "num_images": 1},
}


def box(rid: str, label: str, x: float, y: float, w: float, h: float, size, score: float | None = None) -> dict:
    region = {"id": rid, "from_name": "label", "to_name": "image", "type": "rectanglelabels",
              "original_width": size[0], "original_height": size[1], "image_rotation": 0,
              "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]}}
    if score is not None:
        region["score"] = score
    return region


def build_project(ls_api, title: str = "Export fixtures") -> dict:
    """Create the project, its tasks, predictions and annotations; returns ids by role."""
    r = ls_api.post("/api/projects/", json={"title": title, "label_config": CONFIG})
    assert r.status_code == 201, r.text
    project = r.json()["id"]
    images = {f"export_{i}.png": make_image(20 + i, size) for i, size in enumerate(SIZES)}
    tasks = upload_images(ls_api, project, images)
    s = dict(zip(tasks, SIZES))
    t1, t2, t3, t4 = tasks

    def predict(task, version, regions, score):
        r = ls_api.post("/api/predictions/", json={"task": task, "model_version": version, "score": score,
                                                  "result": regions})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def annotate(task, regions, parent=None, cancelled=False):
        body = {"result": regions, "was_cancelled": cancelled}
        if parent is not None:
            body["parent_prediction"] = parent
        r = ls_api.post(f"/api/tasks/{task}/annotations/", json=body)
        assert r.status_code == 201, r.text
        return r.json()["id"]

    p1 = predict(t1, BASE, [box("a", "Cat", 10, 10, 30, 30, s[t1], 0.9),
                            box("b", "Dog", 50, 50, 20, 20, s[t1], 0.6)], 0.75)
    p2 = predict(t2, BASE, [box("c", "Cat", 20, 20, 40, 40, s[t2], 0.8),
                            box("d", "Dog", 5, 60, 20, 20, s[t2], 0.7)], 0.75)
    predict(t3, BASE, [box("e", "Cat", 10, 10, 20, 20, s[t3], 0.9)], 0.9)
    predict(t4, BASE, [box("f", "Dog", 10, 10, 20, 20, s[t4], 0.9)], 0.9)
    time.sleep(0.01)  # created_at: gdino-ft is the newer version
    predict(t1, FT, [box("g", "Cat", 10, 10, 30, 30, s[t1], 0.95),
                     box("h", "Dog", 60, 10, 20, 20, s[t1], 0.85)], 0.9)
    # Task 1: a first annotation, then the final one (a later annotation of the same task).
    annotate(t1, [box("a", "Cat", 12, 10, 30, 30, s[t1])], parent=p1)
    annotate(t1, [box("a", "Cat", 10, 10, 30, 30, s[t1]), box("n1", "Dog", 60, 10, 20, 20, s[t1])], parent=p1)
    annotate(t2, [box("c", "Cat", 22, 20, 40, 40, s[t2]), box("d", "Dog", 5, 60, 20, 20, s[t2])], parent=p2)
    annotate(t3, [], cancelled=True)
    return {"project": project, "tasks": tasks}


def snapshot_export(ls_api, project: int, export_type: str = "JSON", timeout: float = 120) -> bytes:
    """An export snapshot with full predictions (Label Studio 1.23: POST /api/projects/<id>/exports with
    `serialization_options.predictions.only_id = false`), downloaded as `export_type`."""
    r = ls_api.post(f"/api/projects/{project}/exports/", json={
        "title": "with predictions", "serialization_options": {"predictions": {"only_id": False}}})
    assert r.status_code == 201, r.text
    export_id = r.json()["id"]
    def status() -> str:
        value = ls_api.get(f"/api/projects/{project}/exports/{export_id}").json()["status"]
        assert value in ("created", "in_progress", "completed"), value
        return value

    wait_until(status, "the export snapshot to complete", timeout, 0.2, holds=lambda value: value == "completed")
    r = ls_api.get(f"/api/projects/{project}/exports/{export_id}/download", params={"exportType": export_type})
    assert r.status_code == 200, r.text[:500]
    return r.content


def button_export(ls_api, project: int, export_type: str = "JSON") -> bytes:
    """What the Export button downloads: GET /api/projects/<id>/export?exportType=..."""
    r = ls_api.get(f"/api/projects/{project}/export", params={"exportType": export_type})
    assert r.status_code == 200, r.text[:500]
    return r.content
