"""One Label Studio annotation is one box: scoring the export (COCO ground truth) and training (targets)
read a rotated rectangle as the box enclosing it (labelstudio.regions.geometry).

Before, the export scoring took the stored x/y/width/height and ignored the rotation."""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from backend.training.project_data import export_project
from backend.training.tasks import ProjectSnapshot
from evaluation.labelstudio.coco import coco_files
from evaluation.labelstudio.export import load_export

CONFIG = """<View>
  <Image name="image" value="$img"/>
  <RectangleLabels name="label" toName="image"><Label value="Car"/></RectangleLabels>
</View>"""
WIDTH, HEIGHT = 200, 100
# 40 x 30 px at (100, 20), turned 90 degrees clockwise about that corner: x from 70 to 100, y from 20 to 60.
ROTATED = {"x": 50, "y": 20, "width": 20, "height": 30, "rotation": 90}
ENCLOSING = [70, 20, 30, 40]


def task() -> dict:
    region = {"id": "r1", "type": "rectanglelabels", "from_name": "label", "to_name": "image",
              "original_width": WIDTH, "original_height": HEIGHT, "image_rotation": 0,
              "value": {**ROTATED, "rectanglelabels": ["Car"]}}
    return {"id": 1, "data": {"img": "/data/upload/1/a.png"},
            "annotations": [{"id": 11, "was_cancelled": False, "result": [region]}], "predictions": []}


def test_export_scoring_uses_the_enclosing_box(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(json.dumps([task()]))
    gt, _ = coco_files(load_export(path))
    (ann,) = gt["annotations"]
    assert ann["bbox"] == pytest.approx(ENCLOSING, abs=1e-9)
    assert ann["area"] == pytest.approx(30 * 40, abs=1e-6)


def test_training_uses_the_same_enclosing_box(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (WIDTH, HEIGHT), (90, 90, 90)).save(buf, "PNG")
    report = export_project(ProjectSnapshot("1", CONFIG, (task(),)), tmp_path / "data", lambda url, tid: buf.getvalue())
    (ann,) = json.loads(report.ann.read_text())["annotations"]
    assert ann["bbox"] == pytest.approx(ENCLOSING, abs=1e-9)
