"""Predictor: regions equal to the core's boxes, EXIF frame, per-task failures, OOM retry in halves."""
from io import BytesIO

import pytest
import torch
from PIL import Image

from labelstudio.label_sets import LabelConfigError
from backend.serving.predictor import Predictor
from detection import GROUNDING_DINO
from tests.image_bytes import jpeg_bytes
from tests.label_studio_requests import ls_body

CONFIG = ls_body("setup")["schema"]
CLASSES = [["cat", "kitten"], ["remote control"], ["traffic light"]]
LABELS = ["Cat", "RC", "TrafficLight"]


def local(name):
    return {"image": f"/data/local-files/?d={name}"}


def expected_regions(detector, image: Image.Image, threshold: float, classes=CLASSES, labels=LABELS):
    """What the core finds, converted to Label Studio percent independently of the backend."""
    (dets,) = detector.detect([image], detector.prompt(classes), threshold)
    width, height = image.size
    out = []
    for box, score, label in zip(dets.boxes.tolist(), dets.scores.tolist(), dets.labels.tolist()):
        x0, y0, x1, y1 = box
        out.append((labels[label], round(x0 / width * 100, 6), round(y0 / height * 100, 6),
                    round((x1 - x0) / width * 100, 6), round((y1 - y0) / height * 100, 6), round(score, 6)))
    return sorted(out, key=lambda r: -r[-1])


def got_regions(item):
    return [
        (r["value"]["rectanglelabels"][0], round(r["value"]["x"], 6), round(r["value"]["y"], 6),
         round(r["value"]["width"], 6), round(r["value"]["height"], 6), round(r["score"], 6))
        for r in item["result"]
    ]


@pytest.fixture
def predictor(tiny_detector, make_settings, media_root):
    return Predictor(tiny_detector, make_settings(LOCAL_FILES_DOCUMENT_ROOT=media_root, BATCH_SIZE=1))


def test_regions_are_the_core_boxes_in_percent(predictor, tiny_detector, media_root):
    (item,) = predictor.predict_tasks([{"id": 5, "data": local("a.jpg")}], CONFIG)
    expected = expected_regions(tiny_detector, Image.open(media_root / "a.jpg").convert("RGB"), 0.3)
    assert expected, "the tiny model should find something over 0.3 (test premise)"
    assert got_regions(item) == expected
    assert item["model_version"] == predictor.model_version(CONFIG)
    assert item["score"] == pytest.approx(sum(r["score"] for r in item["result"]) / len(item["result"]))
    for region in item["result"]:
        assert region.keys() >= {"id", "from_name", "to_name", "type", "original_width", "original_height",
                                 "image_rotation", "value", "score"}
        assert (region["from_name"], region["to_name"], region["type"]) == ("label", "image", "rectanglelabels")
        assert (region["original_width"], region["original_height"], region["image_rotation"]) == (64, 48, 0)
        value = region["value"]
        assert value["rotation"] == 0
        for key in ("x", "y", "width", "height"):
            assert 0 <= value[key] <= 100
        assert value["x"] + value["width"] <= 100 + 1e-9 and value["y"] + value["height"] <= 100 + 1e-9
    assert len({r["id"] for r in item["result"]}) == len(item["result"])


@pytest.mark.slow
def test_exif_rotated_image_boxes_are_in_the_shown_frame(predictor, tiny_detector, media_root):
    data = jpeg_bytes((64, 48), exif_orientation=6)  # shown rotated 90° clockwise: 48 wide, 64 high
    (media_root / "rotated.jpg").write_bytes(data)
    (item,) = predictor.predict_tasks([{"id": 1, "data": local("rotated.jpg")}], CONFIG)
    shown = Image.open(BytesIO(data)).convert("RGB").transpose(Image.Transpose.ROTATE_270)
    assert shown.size == (48, 64)
    assert {(r["original_width"], r["original_height"]) for r in item["result"]} == {(48, 64)}
    assert got_regions(item) == expected_regions(tiny_detector, shown, 0.3)


@pytest.mark.slow
def test_one_item_per_task_in_order_and_failures_carry_no_result(tiny_detector, make_settings, media_root, caplog):
    predictor = Predictor(tiny_detector, make_settings(LOCAL_FILES_DOCUMENT_ROOT=media_root, BATCH_SIZE=2))
    tasks = [
        {"id": 1, "data": local("a.jpg")},
        {"id": 2, "data": local("missing.jpg")},
        {"id": 3, "data": local("not-an-image.jpg")},
        {"id": 4, "data": local("sub/b.jpg")},
        {"id": 5, "data": {"other": "x"}},
        {"id": 6, "data": local("../secret.jpg")},
    ]
    with caplog.at_level("WARNING"):
        items = predictor.predict_tasks(tasks, CONFIG)
    assert len(items) == 6
    assert [("result" in i, "error" in i) for i in items] == [
        (True, False), (False, True), (False, True), (True, False), (False, True), (False, True)
    ]
    assert "LOCAL_FILES_DOCUMENT_ROOT" in items[1]["error"]
    assert "not a readable image" in items[2]["error"]
    assert "data.image" in items[4]["error"]
    assert "escapes LOCAL_FILES_DOCUMENT_ROOT" in items[5]["error"]
    assert {i["model_version"] for i in items} == {predictor.model_version(CONFIG)}
    assert {(r["original_width"], r["original_height"]) for r in items[3]["result"]} == {(80, 60)}
    assert "task 2:" in caplog.text and "task 6:" in caplog.text


@pytest.mark.slow
def test_interactive_prompt_and_unmapped_phrase(predictor, tiny_detector, media_root):
    body = ls_body("predict-interactive")
    task = dict(body["tasks"][0], data=local("a.jpg"))
    (item,) = predictor.predict_tasks([task], body["label_config"], body["params"]["context"])
    expected = expected_regions(tiny_detector, Image.open(media_root / "a.jpg").convert("RGB"), 0.3,
                                classes=[["kitten"]], labels=["Cat"])
    assert got_regions(item) == expected and expected
    context = {"result": [{"from_name": "prompt", "to_name": "image", "type": "textarea", "value": {"text": ["dog"]}}]}
    (item,) = predictor.predict_tasks([task], body["label_config"], context)
    assert "result" not in item
    assert "'dog' matches no label" in item["error"] and "Cat, RC (Remote), TrafficLight" in item["error"]


@pytest.mark.slow
def test_model_score_threshold_and_skip(predictor, media_root):
    config = (
        '<View><Image name="image" value="$image"/>'
        '<RectangleLabels name="strict" toName="image" model_score_threshold="0.99"><Label value="Cat"/></RectangleLabels>'
        '<RectangleLabels name="loose" toName="image" model_score_threshold="0.0"><Label value="Cat"/></RectangleLabels>'
        '<RectangleLabels name="off" toName="image" model_skip="true"><Label value="Dog"/></RectangleLabels></View>'
    )
    (item,) = predictor.predict_tasks([{"id": 1, "data": local("a.jpg")}], config)
    by_control = {}
    for region in item["result"]:
        by_control.setdefault(region["from_name"], []).append(region["score"])
    assert set(by_control) == {"loose"} or max(by_control.get("strict", [1])) >= 0.99
    assert "off" not in by_control and len(by_control["loose"]) > 0
    assert min(by_control["loose"]) >= 0.0


def test_rectangle_control_gives_unlabeled_rectangles(predictor, media_root):
    config = '<View><Image name="image" value="$image"/><Rectangle name="box" toName="image" predicted_values="cat"/></View>'
    (item,) = predictor.predict_tasks([{"id": 1, "data": local("a.jpg")}], config)
    assert item["result"]
    for region in item["result"]:
        assert region["type"] == "rectangle" and "rectanglelabels" not in region["value"]


def test_bad_config_raises(predictor):
    with pytest.raises(LabelConfigError):
        predictor.predict_tasks([{"id": 1, "data": local("a.jpg")}], "<View/>")


def test_version_changes_with_what_changes_predictions(tiny_detector, make_settings):
    a = Predictor(tiny_detector, make_settings()).model_version(CONFIG)
    assert a.startswith(make_settings().model.rstrip("/").rsplit("/", 1)[-1] + "-")
    assert Predictor(tiny_detector, make_settings()).model_version(CONFIG) == a
    assert Predictor(tiny_detector, make_settings(BOX_THRESHOLD=0.5)).model_version(CONFIG) != a
    assert Predictor(tiny_detector, make_settings()).model_version(CONFIG.replace("kitten", "kitty")) != a
    assert Predictor(tiny_detector, make_settings()).model_version(CONFIG.replace('alias="RC"', 'alias="R"')) != a
    # formatting of the XML does not change the version
    assert Predictor(tiny_detector, make_settings()).model_version(CONFIG.replace("\n  ", "\n    ")) == a


class OomDetector:
    """The real detector, but any batch holding an image of width 80 runs out of memory unless alone,
    and the one 99 px wide always does."""

    family = GROUNDING_DINO

    def __init__(self, inner):
        self.inner = inner
        self.calls = []

    def prompt(self, classes, chunk_size=None):
        return self.inner.prompt(classes, chunk_size)

    def detect(self, images, prompt, box_threshold, nms_iou=None):
        widths = [im.size[0] for im in images]
        self.calls.append(widths)
        if 99 in widths:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if 80 in widths and len(images) > 1:
            raise RuntimeError("CUDA error: out of memory")
        return self.inner.detect(images, prompt, box_threshold, nms_iou)


@pytest.mark.slow
def test_out_of_memory_retries_in_halves_and_fails_only_what_still_fails(tiny_detector, make_settings, media_root):
    (media_root / "huge.jpg").write_bytes(jpeg_bytes((99, 40)))
    detector = OomDetector(tiny_detector)
    predictor = Predictor(detector, make_settings(LOCAL_FILES_DOCUMENT_ROOT=media_root, BATCH_SIZE=4))
    tasks = [{"id": i, "data": local(n)} for i, n in enumerate(["a.jpg", "sub/b.jpg", "huge.jpg", "a.jpg"])]
    items = predictor.predict_tasks(tasks, CONFIG)
    assert ["result" in i for i in items] == [True, True, False, True]
    assert "out of memory" in items[2]["error"]
    assert detector.calls == [[64, 80, 99, 64], [64, 80], [64], [80], [99, 64], [99], [64]]


def test_pixel_limit_fails_the_task_with_a_clear_error(tiny_detector, make_settings, media_root):
    predictor = Predictor(tiny_detector, make_settings(LOCAL_FILES_DOCUMENT_ROOT=media_root, MAX_IMAGE_PIXELS=3000))
    (item,) = predictor.predict_tasks([{"id": 1, "data": local("a.jpg")}], CONFIG)  # 64 x 48 = 3072 pixels
    assert "result" not in item and "image too large" in item["error"] and "3,000" in item["error"]


def test_no_tasks_and_tasks_without_data(predictor):
    assert predictor.predict_tasks([], CONFIG) == []
    items = predictor.predict_tasks([{"id": 1}, {"id": 2, "data": "x"}], CONFIG)
    assert [("error" in i, "result" in i) for i in items] == [(True, False), (True, False)]


def test_batch_size_defaults_to_one_on_the_cpu_and_four_on_a_gpu(tiny_detector, make_settings):
    assert Predictor(tiny_detector, make_settings()).batch_size == 1  # tiny_detector is on the CPU
    assert Predictor(tiny_detector, make_settings(BATCH_SIZE=3)).batch_size == 3

    class OnGpu:
        device = torch.device("cuda")
        family = GROUNDING_DINO

    assert Predictor(OnGpu(), make_settings()).batch_size == 4
