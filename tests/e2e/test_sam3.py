"""SAM 3 through a real Label Studio 1.23.2: a BrushLabels project pre-labelled by SAM 3 alone ("Retrieve
Predictions"; SAM_MODEL points at nothing loadable, so a second mask stage would fail), and a smart box answered
with "find all like this" through Label Studio's interactive API. Both compared with the model code's own
answer on the same image bytes (the tiny random SAM 3)."""
from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle
from PIL import Image

from tests.e2e.ls_harness import start_backend, stop
from tests.e2e.ls_user import (
    backend_setup_version, create_project, make_image, predictions_of, retrieve_predictions, upload_images,
)
from tests.sam3_factory import tiny_sam3_dir

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LABELS = '<Label value="Cat" predicted_values="cat, kitten"/><Label value="TrafficLight"/>'
CLASSES = [["cat", "kitten"], ["traffic light"]]
NAMES = ["Cat", "TrafficLight"]
BRUSH_CONFIG = f'<View><Image name="image" value="$image"/><BrushLabels name="mask" toName="image">{LABELS}</BrushLabels></View>'
FIND_ALL_CONFIG = ('<View><Image name="image" value="$image"/>'
                   '<RectangleLabels name="boxes" toName="image" smart="true"><Label value="Apple"/></RectangleLabels>'
                   '</View>')
SIZE = (320, 240)
THRESHOLD = 0.3  # the tiny random model scores under SAM 3's default 0.5


@pytest.fixture(scope="module")
def sam3_dir(tmp_path_factory):
    return shutil.copytree(tiny_sam3_dir("sam3"), tmp_path_factory.mktemp("models") / "tiny-detector")


@pytest.fixture(scope="module")
def sam3_backend(sam3_dir, label_studio, tmp_path_factory):
    missing = tmp_path_factory.mktemp("nothing") / "no-sam-model"
    url, proc, _ = start_backend(sam3_dir, label_studio, "backend-sam3.log",
                                 {"BOX_THRESHOLD": str(THRESHOLD), "SAM_MODEL": str(missing)})
    yield url
    stop(proc)


@pytest.fixture(scope="module")
def reference(sam3_dir):
    from detection.sam3 import Sam3Detector, Sam3DetectorConfig

    return Sam3Detector.load(Sam3DetectorConfig(model=str(sam3_dir), device="cpu"))


def test_a_brush_project_is_prelabelled_by_sam3_alone(ls_client, ls_api, sam3_backend, reference):
    project = create_project(ls_client, "SAM 3 brush", BRUSH_CONFIG)
    images = {f"sam3_{i}.png": make_image(70 + i, SIZE) for i in range(2)}
    tasks = upload_images(ls_api, project, images)
    ls_client.ml.create(project=project, url=sam3_backend, title="SAM 3", is_interactive=True)
    retrieve_predictions(ls_api, project)
    version = backend_setup_version(sam3_backend, BRUSH_CONFIG)
    assert version.startswith("sam3-tiny-detector-")
    found_any = False
    for task, data in zip(tasks, images.values()):
        (prediction,) = predictions_of(ls_api, task)
        assert prediction["model_version"] == version
        (dets,) = reference.detect([Image.open(io.BytesIO(data)).convert("RGB")], CLASSES, threshold=THRESHOLD,
                                   masks=True)
        expected = [(NAMES[int(dets.labels[k])], float(dets.scores[k]), dets.masks[k].numpy())
                    for k in range(len(dets)) if dets.masks[k].any()]
        regions = sorted(prediction["result"], key=lambda r: -r["score"])
        assert len(regions) == len(expected)
        for region, (label, score, mask) in zip(regions, expected):
            assert (region["type"], region["from_name"], region["value"]["brushlabels"]) == ("brushlabels", "mask", [label])
            assert region["score"] == pytest.approx(score, abs=1e-6)
            alpha = decode_rle(region["value"]["rle"]).reshape(SIZE[1], SIZE[0], 4)[:, :, 3]  # Label Studio's decoder
            assert np.array_equal(alpha > 0, mask)
        found_any = found_any or bool(regions)
    assert found_any, "no masks at all: the checks above would be vacuous"


def test_a_smart_box_finds_all_like_it(ls_client, ls_api, sam3_backend, reference):
    project = create_project(ls_client, "SAM 3 find all", FIND_ALL_CONFIG)
    data = make_image(90, SIZE)
    (task,) = upload_images(ls_api, project, {"find_all.png": data})
    ml = ls_client.ml.create(project=project, url=sam3_backend, title="SAM 3", is_interactive=True)
    context = {"result": [{"from_name": "boxes", "to_name": "image", "type": "rectanglelabels",
                           "original_width": SIZE[0], "original_height": SIZE[1],
                           "value": {"x": 20, "y": 25, "width": 30, "height": 40, "rotation": 0,
                                     "rectanglelabels": ["Apple"]}}]}
    r = ls_api.post(f"/api/ml/{ml.id}/interactive-annotating", json={"task": task, "context": context})
    assert r.status_code == 200, r.text
    answer = r.json()["data"]
    assert not answer.get("errors"), answer
    found = reference.find_like(Image.open(io.BytesIO(data)).convert("RGB"), [64.0, 60.0, 160.0, 156.0],
                                threshold=THRESHOLD, masks=False)
    assert len(found) > 0
    regions = answer["result"]
    assert len(regions) == len(found)
    for region, k in zip(regions, range(len(found))):
        x0, y0, x1, y1 = found.boxes[k].tolist()
        assert (region["type"], region["value"]["rectanglelabels"]) == ("rectanglelabels", ["Apple"])
        assert region["value"]["x"] == pytest.approx(x0 / SIZE[0] * 100, abs=1e-6)
        assert region["value"]["width"] == pytest.approx((x1 - x0) / SIZE[0] * 100, abs=1e-6)
        assert region["value"]["y"] == pytest.approx(y0 / SIZE[1] * 100, abs=1e-6)
        assert region["score"] == pytest.approx(float(found.scores[k]), abs=1e-6)
    assert predictions_of(ls_api, task) == []  # suggestions, not stored
