"""Mask controls in the backend: <BrushLabels> and <PolygonLabels> as label sets beside <RectangleLabels>,
masks from the tiny SAM in the displayed frame, the mask model's loading, its version, smart tools."""
from __future__ import annotations

import threading
from io import BytesIO

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from detection import Detections
from detection.masks import BOX_MARGIN, MaskModel, MaskModelConfig, MaskModelLoadError, clip_to_boxes
from labelstudio.label_sets import LabelConfigError
from backend.serving.mask_stage import FALLBACK_SAM_MODEL, MaskModelHolder, sam_model_name
from backend.serving.predictor import Predictor
from labelstudio.regions import PolygonConfig, rle_to_mask
from tests.image_bytes import jpeg_bytes
from tests.sam_factory import has_torchvision

LABELS = '<Label value="Cat" predicted_values="cat, kitten"/><Label value="TrafficLight"/>'
MIXED = (
    '<View><Image name="image" value="$image"/>'
    f'<RectangleLabels name="boxes" toName="image">{LABELS}</RectangleLabels>'
    f'<BrushLabels name="brush" toName="image">{LABELS}</BrushLabels>'
    f'<PolygonLabels name="poly" toName="image">{LABELS}</PolygonLabels>'
    "</View>"
)
SMART = (
    '<View><Image name="image" value="$image"/>'
    '<BrushLabels name="brush" toName="image"><Label value="Cat"/><Label value="Dog"/></BrushLabels>'
    '<PolygonLabels name="poly" toName="image" model_skip="true"><Label value="Tree"/></PolygonLabels>'
    '<KeyPointLabels name="click" toName="image" smart="true"><Label value="Cat"/><Label value="Bird"/></KeyPointLabels>'
    '<RectangleLabels name="drag" toName="image" smart="true" model_skip="true"><Label value="Tree"/></RectangleLabels>'
    "</View>"
)


def local(name):
    return {"image": f"/data/local-files/?d={name}"}


class CountingDetector:
    """The real detector, counting its passes; `empty=True` finds nothing."""

    def __init__(self, inner, empty=False):
        self.inner, self.empty, self.calls = inner, empty, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def detect(self, images, prompt, box_threshold, nms_iou=None):
        self.calls.append(len(images))
        if self.empty:
            return [Detections.empty() for _ in images]
        return self.inner.detect(images, prompt, box_threshold, nms_iou)


@pytest.fixture(scope="module")
def tiny_sam(tiny_sam_dir) -> MaskModel:
    return MaskModel.load(MaskModelConfig(model=str(tiny_sam_dir), device="cpu"))


@pytest.fixture
def make_predictor(tiny_detector, tiny_sam, tiny_sam_dir, make_settings, media_root):
    def make(detector=None, **env):
        settings = make_settings(LOCAL_FILES_DOCUMENT_ROOT=media_root, SAM_MODEL=tiny_sam_dir, **env)
        return Predictor(detector or tiny_detector, settings, masks=MaskModelHolder.of(tiny_sam, settings))

    return make


def reference_masks(detector, sam, image, threshold=0.3):
    """The core's detections and SAM's masks of them, cut to box + margin: computed here, not by the backend."""
    (dets,) = detector.detect([image], detector.prompt([["cat", "kitten"], ["traffic light"]]), threshold)
    (masks,) = sam.masks_for_boxes([image], [dets.boxes])
    return dets, clip_to_boxes(masks, dets.boxes, BOX_MARGIN).numpy()


def by_type(item, kind):
    return [r for r in item["result"] if r["type"] == kind]


@pytest.mark.slow
def test_mixed_config_one_detector_pass_and_every_control_its_regions(make_predictor, tiny_detector, tiny_sam, media_root):
    detector = CountingDetector(tiny_detector)
    predictor = make_predictor(detector)
    (item,) = predictor.predict_tasks([{"id": 3, "data": local("a.jpg")}], MIXED)
    assert detector.calls == [1]  # three controls with the same labels on one image: one pass
    image = Image.open(media_root / "a.jpg").convert("RGB")
    dets, masks = reference_masks(tiny_detector, tiny_sam, image)
    boxes, brushes, polygons = (by_type(item, k) for k in ("rectanglelabels", "brushlabels", "polygonlabels"))
    kept = [k for k in range(len(dets)) if masks[k].any()]
    assert len(boxes) == len(dets) > 0 and len(brushes) == len(kept) > 0 and polygons
    names = ["Cat", "TrafficLight"]
    for region, k in zip(sorted(brushes, key=lambda r: -r["score"]), sorted(kept, key=lambda k: -float(dets.scores[k]))):
        assert (region["from_name"], region["to_name"], region["original_width"], region["original_height"]) == (
            "brush", "image", 64, 48)
        assert region["value"]["brushlabels"] == [names[int(dets.labels[k])]]
        assert region["score"] == pytest.approx(float(dets.scores[k]))
        assert np.array_equal(rle_to_mask(region["value"]["rle"], 64, 48), masks[k])
    assert {r["value"]["polygonlabels"][0] for r in polygons} <= set(names)
    assert all(r["from_name"] == "poly" and 3 <= len(r["value"]["points"]) for r in polygons)
    assert len({r["id"] for r in item["result"]}) == len(item["result"])

    # Different labels on the brush control: its own detector pass.
    other = MIXED.replace(f'<BrushLabels name="brush" toName="image">{LABELS}', '<BrushLabels name="brush" toName="image"><Label value="Cat"/>')
    detector.calls.clear()
    predictor.predict_tasks([{"id": 3, "data": local("a.jpg")}], other)
    assert detector.calls == [1, 1]


def expected_parts(mask, max_parts, fraction, min_area=25) -> int:
    """Polygons a mask should give, counted with scipy (8-connected parts): the largest part, then up to
    max_parts - 1 more of at least min_area pixels and `fraction` of the mask."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    further = sorted(np.bincount(labels.ravel())[1:], reverse=True)[1:]
    floor = max(min_area, fraction * mask.sum())
    return min(count, 1 + sum(1 for area in further if area >= floor), max_parts)


@pytest.mark.slow
def test_every_masked_detection_gets_its_polygon_parts_and_brushes_keep_every_pixel(make_predictor, tiny_detector,
                                                                                    tiny_sam, media_root):
    image = Image.open(media_root / "a.jpg").convert("RGB")
    dets, masks = reference_masks(tiny_detector, tiny_sam, image)
    kept = sorted((k for k in range(len(dets)) if masks[k].any()), key=lambda k: -float(dets.scores[k]))
    # The random SAM's masks are fragmented, all parts under 25 px (up to 7 parts of 1-36 px here): a rule
    # that dropped parts under 25 px even when largest would leave detections without a polygon.
    assert max(ndimage.label(masks[k], structure=np.ones((3, 3)))[1] for k in kept) > 1
    assert min(masks[k].sum() for k in kept) < 25
    (item,) = make_predictor().predict_tasks([{"id": 3, "data": local("a.jpg")}], MIXED)
    polygons, brushes = by_type(item, "polygonlabels"), sorted(by_type(item, "brushlabels"), key=lambda r: -r["score"])
    assert len(polygons) == sum(expected_parts(masks[k], 3, 0.05) for k in kept)
    assert len({r["id"].split("-")[0] for r in polygons}) == len(kept)  # every detection with a mask: a polygon
    assert len(brushes) == len(kept)  # a brush is the whole mask, specks and all
    assert all(np.array_equal(rle_to_mask(r["value"]["rle"], 64, 48), masks[k]) for r, k in zip(brushes, kept))


def test_polygon_settings_reach_the_regions_and_the_model_version(tiny_detector, tiny_sam, make_settings):
    holder = MaskModelHolder(make_settings(POLYGON_MAX_PARTS=1, POLYGON_MIN_PART_FRACTION=0.2), loader=None)
    assert holder.polygons == PolygonConfig(max_parts=1, min_part_fraction=0.2)
    assert MaskModelHolder(make_settings(), loader=None).polygons == PolygonConfig(max_parts=3, min_part_fraction=0.05)

    def version(**env):
        settings = make_settings(**env)
        return Predictor(tiny_detector, settings, masks=MaskModelHolder.of(tiny_sam, settings)).model_version(MIXED)

    assert version(POLYGON_MAX_PARTS=1) != version() == version(POLYGON_MAX_PARTS=3)
    assert version(POLYGON_MIN_PART_FRACTION=0.2) != version()


@pytest.mark.slow
def test_exif_rotated_image_is_masked_in_the_displayed_frame(make_predictor, tiny_detector, tiny_sam, media_root):
    data = jpeg_bytes((64, 48), exif_orientation=6)  # shown 48 wide, 64 high
    (media_root / "rotated.jpg").write_bytes(data)
    config = MIXED.replace("<RectangleLabels", "<!--").replace("</RectangleLabels>", "-->")
    (item,) = make_predictor().predict_tasks([{"id": 1, "data": local("rotated.jpg")}], config)
    shown = Image.open(BytesIO(data)).convert("RGB").transpose(Image.Transpose.ROTATE_270)
    dets, masks = reference_masks(tiny_detector, tiny_sam, shown)
    brushes = sorted(by_type(item, "brushlabels"), key=lambda r: -r["score"])
    assert brushes and {(r["original_width"], r["original_height"]) for r in item["result"]} == {(48, 64)}
    expected = [masks[k] for k in sorted(range(len(dets)), key=lambda k: -float(dets.scores[k])) if masks[k].any()]
    assert all(np.array_equal(rle_to_mask(r["value"]["rle"], 48, 64), m) for r, m in zip(brushes, expected))


def test_empty_detections_give_an_empty_result_without_encoding(make_predictor, tiny_detector, tiny_sam, media_root, monkeypatch):
    monkeypatch.setattr(tiny_sam.model, "get_image_embeddings", lambda *a: pytest.fail("encoded an image without boxes"))
    (item,) = make_predictor(CountingDetector(tiny_detector, empty=True)).predict_tasks(
        [{"id": 1, "data": local("a.jpg")}], MIXED)
    assert item["result"] == [] and item["score"] == 0.0


def test_model_version_has_the_mask_model_only_where_masks_are_predicted(tiny_detector, make_settings):
    release = threading.Event()

    def not_needed(config):  # a version never waits for the load it starts
        release.wait(30)
        raise MaskModelLoadError("not needed for a version")

    def version(config, **env):
        settings = make_settings(**env)
        return Predictor(tiny_detector, settings, masks=MaskModelHolder(settings, loader=not_needed)).model_version(config)

    try:
        boxes_only = MIXED.replace("<BrushLabels", "<!--<").replace("</PolygonLabels>", "-->")
        assert version(boxes_only, SAM_MODEL="a") == version(boxes_only, SAM_MODEL="b") == version(boxes_only)
        assert version(MIXED, SAM_MODEL="a") != version(MIXED, SAM_MODEL="b")
        assert version(MIXED, SAM_MODEL="a") == version(MIXED, SAM_MODEL="a")
    finally:
        release.set()


def test_default_mask_model_falls_back_without_torchvision(make_settings, caplog):
    if has_torchvision():
        pytest.skip("torchvision is installed: the default is used")
    with caplog.at_level("INFO"):
        assert sam_model_name(make_settings()) == FALLBACK_SAM_MODEL
    assert "needs torchvision" in caplog.text and "SAM_MODEL" in caplog.text
    assert sam_model_name(make_settings(SAM_MODEL="my/sam")) == "my/sam"


def test_lazy_load_setup_answers_at_once_and_a_failed_load_is_a_clear_error(tiny_detector, make_settings, media_root):
    release = threading.Event()

    def slow_failing_loader(config):
        release.wait(30)
        raise MaskModelLoadError(f"could not load mask model {config.model!r}: no such directory")

    settings = make_settings(LOCAL_FILES_DOCUMENT_ROOT=media_root)
    holder = MaskModelHolder(settings, loader=slow_failing_loader)
    predictor = Predictor(tiny_detector, settings, masks=holder)
    version = predictor.model_version(MIXED)  # answers while the load is still under way
    assert holder.state == "loading" and version.startswith(predictor.model_name)
    release.set()
    (item,) = predictor.predict_tasks([{"id": 1, "data": local("a.jpg")}], MIXED)  # waits for the load
    assert "result" not in item and item["error"].startswith("the mask model could not be loaded: could not load")
    with pytest.raises(LabelConfigError, match="need the mask model: the mask model could not be loaded"):
        predictor.model_version(MIXED)


def test_a_mask_model_that_fails_to_load_stops_the_start_with_its_reason(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from backend.__main__ import main

    monkeypatch.setenv("GROUNDING_DINO_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("DEVICE", "cpu")
    monkeypatch.setenv("SAM_MODEL", str(tmp_path))  # a directory without a model
    assert main([]) == 1
    err = capsys.readouterr().err  # the detector's weight-loading progress bar, then the error
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: could not load mask model '{tmp_path}'") and "no loadable SAM-family model" in line
    assert "Traceback" not in err


def interactive(result):
    return {"result": result}


def click(x, y, label="Cat", positive=True):
    return {"from_name": "click", "to_name": "image", "type": "keypointlabels", "original_width": 64,
            "original_height": 48, "is_positive": positive, "value": {"x": x, "y": y, "width": 1, "keypointlabels": [label]}}


def test_smart_click_answers_with_the_mask_of_that_object(make_predictor, tiny_sam, media_root):
    predictor = make_predictor()
    (item,) = predictor.predict_tasks([{"id": 1, "data": local("a.jpg")}], SMART, interactive([click(25, 50)]))
    (region,) = item["result"]
    image = Image.open(media_root / "a.jpg").convert("RGB")
    mask, score = tiny_sam.mask_for_prompt(image, [[16.0, 24.0]], [1])  # 25 % of 64, 50 % of 48
    assert (region["from_name"], region["to_name"], region["type"]) == ("brush", "image", "brushlabels")
    assert region["value"]["brushlabels"] == ["Cat"] and region["score"] == pytest.approx(score)
    assert np.array_equal(rle_to_mask(region["value"]["rle"], 64, 48), mask.numpy())
    # A drawn box on the smart rectangle tool: a polygon in the mask control that has its label.
    drag = {"from_name": "drag", "to_name": "image", "type": "rectanglelabels",
            "value": {"x": 10, "y": 20, "width": 50, "height": 60, "rectanglelabels": ["Tree"]}}
    (item,) = predictor.predict_tasks([{"id": 1, "data": local("a.jpg")}], SMART, interactive([drag]))
    assert item["result"] and {(r["from_name"], r["value"]["polygonlabels"][0]) for r in item["result"]} == {("poly", "Tree")}
    box_mask, _ = tiny_sam.mask_for_prompt(image, box=[6.4, 9.6, 38.4, 38.4])
    assert box_mask.any()  # the test premise: the random model gives this box a mask


def test_smart_prompts_that_cannot_be_answered_say_why(make_predictor):
    predictor = make_predictor()
    task = [{"id": 1, "data": local("a.jpg")}]
    (item,) = predictor.predict_tasks(task, SMART, interactive([click(25, 50, label="Bird")]))
    assert item["error"] == ("the smart tool's label 'Bird' is not a label of <BrushLabels name=\"brush\"> or "
                             '<PolygonLabels name="poly">: add <Label value="Bird"/> there, so that the mask can carry it')
    (item,) = predictor.predict_tasks(task, SMART, interactive([click(25, 50, positive=False)]))
    assert "needs a click on the object or a box" in item["error"]
    # A context without smart regions is a plain (pre-labelling) request.
    (item,) = predictor.predict_tasks(task, SMART, interactive([]))
    assert "result" in item and all(r["from_name"] == "brush" for r in item["result"])
