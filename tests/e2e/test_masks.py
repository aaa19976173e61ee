"""Masks through a real Label Studio 1.23.2: a BrushLabels project and a PolygonLabels project pre-labelled
by "Retrieve Predictions" (the tiny SAM given as SAM_MODEL=<dir>), a smart click answered with a mask, and
headless Chromium showing the masks in the labelling view (tests/artifacts/masks.png, copied to
docs/screenshots/masks.png for the docs)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle

from tests.e2e.browser import labelling_view, shown_titles
from tests.e2e.ls_harness import ARTIFACTS, ROOT, start_backend, stop
from tests.e2e.ls_user import (
    backend_setup_version, create_project, make_image, predictions_of, retrieve_predictions,
    upload_images,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LABELS = ('<Label value="Cat" predicted_values="cat, kitten" background="#e6194b"/>'
          '<Label value="Remote" alias="RC" predicted_values="remote control" background="#3cb44b"/>'
          '<Label value="TrafficLight" background="#4363d8"/>')
BRUSH_CONFIG = (f'<View><Image name="image" value="$image"/><BrushLabels name="mask" toName="image">{LABELS}'
                '</BrushLabels><KeyPointLabels name="click" toName="image" smart="true">'
                '<Label value="Cat" background="#e6194b"/></KeyPointLabels></View>')
POLYGON_CONFIG = f'<View><Image name="image" value="$image"/><PolygonLabels name="outline" toName="image">{LABELS}</PolygonLabels></View>'
EMITTED = {"Cat", "RC", "TrafficLight"}
SIZES = [(320, 240), (360, 240)]
# Above the box tests' threshold: a few masks per image, so that the whole region list fits on screen.
MASK_BOX_THRESHOLD = "0.9"


@pytest.fixture(scope="module")
def mask_backend(tiny_model_dir, tiny_sam_dir, label_studio):
    url, proc, _ = start_backend(tiny_model_dir, label_studio, "backend-masks.log",
                                 {"BOX_THRESHOLD": MASK_BOX_THRESHOLD, "SAM_MODEL": str(tiny_sam_dir)})
    yield url
    stop(proc)


def prelabelled(ls_client, ls_api, backend, title, config):
    project = create_project(ls_client, title, config)
    images = {f"{title[:5].lower()}_{i}.png": make_image(40 + i, size) for i, size in enumerate(SIZES)}
    tasks = upload_images(ls_api, project, images)
    ml = ls_client.ml.create(project=project, url=backend, title="Grounding DINO + SAM", is_interactive=True)
    retrieve_predictions(ls_api, project)
    version = backend_setup_version(backend, config)
    assert ls_client.ml.get(ml.id).model_version == version
    return project, tasks, ml.id, version


@pytest.fixture(scope="module")
def brush_project(ls_client, ls_api, mask_backend):
    return prelabelled(ls_client, ls_api, mask_backend, "Brush masks", BRUSH_CONFIG)


@pytest.fixture(scope="module")
def polygon_project(ls_client, ls_api, mask_backend):
    return prelabelled(ls_client, ls_api, mask_backend, "Polygon masks", POLYGON_CONFIG)


def stored(ls_api, tasks, version):
    """Each task's one stored prediction, checked to be ours."""
    out = []
    for task in tasks:
        preds = predictions_of(ls_api, task)
        assert len(preds) == 1 and preds[0]["model_version"] == version, (task, preds)
        out.append(preds[0])
    return out


def test_brush_project_gets_rle_masks_with_its_labels(brush_project, ls_api):
    _, tasks, _, version = brush_project
    regions = [r for p in stored(ls_api, tasks, version) for r in p["result"]]
    assert regions, "no masks at all: the checks below would be vacuous"
    for region in regions:
        assert (region["from_name"], region["to_name"], region["type"]) == ("mask", "image", "brushlabels")
        value = region["value"]
        assert value["format"] == "rle" and value["brushlabels"][0] in EMITTED
        width, height = region["original_width"], region["original_height"]
        assert (width, height) in SIZES
        alpha = decode_rle(value["rle"]).reshape(height, width, 4)[:, :, 3]  # Label Studio's own decoder
        assert 0 < int((alpha > 0).sum()) < width * height


def test_polygon_project_gets_polygons_with_its_labels(polygon_project, ls_api):
    _, tasks, _, version = polygon_project
    regions = [r for p in stored(ls_api, tasks, version) for r in p["result"]]
    assert regions, "no polygons at all"
    for region in regions:
        assert (region["from_name"], region["type"]) == ("outline", "polygonlabels")
        points = np.asarray(region["value"]["points"])
        assert region["value"]["polygonlabels"][0] in EMITTED and len(points) >= 3
        assert ((points >= 0) & (points <= 100)).all()
    # One detection's parts are ID, ID-1, ID-2: never more than POLYGON_MAX_PARTS (3), however ragged the
    # random SAM's masks (up to hundreds of parts each before the cap).
    parts = Counter(r["id"].split("-")[0] for r in regions)
    assert max(parts.values()) <= 3, parts
    for base, count in parts.items():
        assert sorted(r["id"] for r in regions if r["id"].split("-")[0] == base) == sorted(
            [base] + [f"{base}-{n}" for n in range(1, count)])


def test_smart_click_is_answered_with_a_mask(brush_project, ls_api):
    _, tasks, ml, _ = brush_project
    context = {"result": [{"from_name": "click", "to_name": "image", "type": "keypointlabels", "is_positive": True,
                           "original_width": 320, "original_height": 240,
                           "value": {"x": 50, "y": 50, "width": 1, "keypointlabels": ["Cat"]}}]}
    r = ls_api.post(f"/api/ml/{ml}/interactive-annotating", json={"task": tasks[0], "context": context})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert not data.get("errors"), data
    (region,) = data["result"]
    assert (region["type"], region["from_name"], region["value"]["brushlabels"]) == ("brushlabels", "mask", ["Cat"])
    assert len(predictions_of(ls_api, tasks[0])) == 1  # a suggestion, not stored


def fewest_regions(ls_api, tasks, version):
    """The task with the fewest regions (but some): its whole region list fits on screen."""
    candidates = [(len(p["result"]), t, p) for t, p in zip(tasks, stored(ls_api, tasks, version)) if p["result"]]
    assert candidates
    return min(candidates, key=lambda c: c[:2])[1:]


def test_labelling_view_shows_the_masks(brush_project, polygon_project, ls_api, label_studio):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # The random SAM's masks are ragged: up to 3 polygons per mask (POLYGON_MAX_PARTS) make the list long.
    for (project, tasks, _, version), kind, name, height in [
        (brush_project, "brushlabels", "masks.png", 1400), (polygon_project, "polygonlabels", "polygons.png", 2800),
    ]:
        task, pred = fewest_regions(ls_api, tasks, version)
        shot = ARTIFACTS / name
        titles, _, _ = labelling_view(label_studio, project, task, shot, height)
        expected = shown_titles(pred["result"], kind)
        assert Counter(titles) == expected, (kind, titles, expected)
        assert shot.stat().st_size > 10_000


def test_bulk_prelabel_gives_a_mask_project_the_backends_masks(ls_client, ls_api, label_studio, tiny_model_dir,
                                                               tiny_sam_dir, mask_backend):
    """`python -m backend.prelabel` on a BrushLabels project: the same model_version as the backend's, masks
    stored; with a SAM_MODEL that cannot be loaded it stops with one error line."""
    import os
    import subprocess
    import sys

    project = create_project(ls_client, "Bulk brush masks", BRUSH_CONFIG)
    tasks = upload_images(ls_api, project, {f"bulk_mask_{i}.png": make_image(60 + i, SIZES[0]) for i in range(2)})

    def run(sam_model):
        env = dict(os.environ, LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.token,
                   GROUNDING_DINO_MODEL=str(tiny_model_dir), DEVICE="cpu", BOX_THRESHOLD=MASK_BOX_THRESHOLD,
                   SAM_MODEL=sam_model, HF_HUB_OFFLINE="1")
        return subprocess.run([sys.executable, "-m", "backend.prelabel", "--project", str(project), "--no-progress"],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)

    broken = run(str(ARTIFACTS))  # a directory without a model
    assert broken.returncode == 2 and "error: could not load mask model" in broken.stderr
    assert "Traceback" not in broken.stderr
    done = run(str(tiny_sam_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    preds = stored(ls_api, tasks, backend_setup_version(mask_backend, BRUSH_CONFIG))
    assert any(r["type"] == "brushlabels" for p in preds for r in p["result"])
