"""A Label Studio project written as a COCO training set: classes from the label config, boxes in pixels."""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from labelstudio.label_config import parse_label_config
from labelstudio.media_errors import MediaError
from backend.training.data import load_training_data
from backend.training.errors import TrainingError
from backend.training.project_data import export_project, project_classes
from backend.training.tasks import ProjectSnapshot, fetch_project

CONFIG = """<View>
  <Image name="image" value="$img"/>
  <RectangleLabels name="label" toName="image">
    <Label value="Car" predicted_values="car, truck"/>
    <Label value="TrafficLight" alias="light"/>
    <Label value="person"/>
  </RectangleLabels>
</View>"""


def png(size, colour=(90, 90, 90)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def rotated_jpeg() -> bytes:
    """Stored 200 x 100, EXIF orientation 6: shown (and annotated in Label Studio) as 100 x 200."""
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (200, 100), (10, 200, 10)).save(buf, "JPEG", exif=exif)
    return buf.getvalue()


def region(label, x, y, w, h, rotation=0):
    return {"id": f"r{label}{x}", "type": "rectanglelabels", "from_name": "label", "to_name": "image",
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation, "rectanglelabels": [label]}}


def task(tid, regions, cancelled=False, data=None):
    annotations = [] if regions is None else [{"id": 100 + tid, "was_cancelled": cancelled, "result": regions}]
    return {"id": tid, "data": data if data is not None else {"img": f"/data/upload/3/{tid}.png"},
            "annotations": annotations, "predictions": []}


IMAGES = {"/data/upload/3/1.png": png((400, 200)), "/data/upload/3/2.png": rotated_jpeg(),
          "/data/upload/3/3.png": png((50, 50)), "/data/upload/3/7.png": png((100, 100))}


def fetch(url, task_id):
    if url not in IMAGES:
        raise MediaError(f"the image {url} was not found (404)")
    return IMAGES[url]


def snapshot():
    return ProjectSnapshot("3", CONFIG, (
        task(1, [region("Car", 10, 20, 25, 50), region("light", 50, 0, 10, 10), region("Bus", 0, 0, 5, 5)]),
        task(2, [region("person", 10, 10, 20, 20, rotation=90)]),  # on the EXIF-rotated image
        task(3, []),                                                # annotated: nothing there (a negative)
        task(4, [region("Car", 1, 1, 5, 5)], cancelled=True),       # skipped by the annotator
        task(5, None),                                              # not annotated
        task(6, [region("Car", 1, 1, 5, 5)]),                       # its image is missing
        task(7, [region("Car", 1, 1, 5, 5)], data={"other": "x"}),  # no data.img
    ))


def test_annotated_tasks_become_a_coco_dataset_prompted_like_prediction(tmp_path):
    report = export_project(snapshot(), tmp_path / "data", fetch)
    assert (report.tasks, report.boxes) == (3, 3)
    assert report.unknown_labels == {"Bus": 1}
    assert set(report.skipped_tasks) == {6, 7}
    assert "404" in report.skipped_tasks[6] and "data.img" in report.skipped_tasks[7]
    coco = json.loads(report.ann.read_text())
    assert [c["name"] for c in coco["categories"]] == ["Car", "light", "person"]  # what the backend emits
    sizes = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
    assert sizes == {1: (400, 200), 2: (100, 200), 3: (50, 50)}  # task 2 in the frame Label Studio shows
    boxes = {(a["image_id"], a["category_id"]): a["bbox"] for a in coco["annotations"]}
    assert boxes[(1, 1)] == pytest.approx([40, 40, 100, 100])
    assert boxes[(1, 2)] == pytest.approx([200, 0, 40, 20])
    # 20 x 40 px rotated 90 degrees clockwise about its top-left corner (10, 20): x from -30 to 10, clipped at 0
    assert boxes[(2, 3)] == pytest.approx([0, 20, 10, 20])

    data = load_training_data(report.ann, report.images)
    expected = [c.phrases for c in parse_label_config(CONFIG).label_sets[0].classes]
    assert [c.phrases for c in data.classes] == expected == [("car", "truck"), ("traffic light",), ("person",)]
    assert data.targets[3] == ()
    assert data.load_image(2).size == (100, 200)

    calls = []
    again = export_project(snapshot(), tmp_path / "data", lambda url, tid: calls.append(tid) or fetch(url, tid))
    assert calls == [6] and again.tasks == 3  # images already fetched are kept for the next job


@pytest.mark.parametrize("config, message", [
    ("<View><Image name='a' value='$a'/><Image name='b' value='$b'/>"
     "<RectangleLabels name='x' toName='a'><Label value='cat'/></RectangleLabels>"
     "<RectangleLabels name='y' toName='b'><Label value='dog'/></RectangleLabels></View>", "one <Image>"),
    ("<View><Image name='a' value='$a'/><RectangleLabels name='x' toName='a'><Label value='cat'/></RectangleLabels>"
     "<RectangleLabels name='y' toName='a'><Label value='cat'/></RectangleLabels></View>", "defined by two"),
    ("<View><Image name='a' value='$a'/></View>", "label config cannot be used"),
])
def test_label_configs_that_cannot_be_trained_say_why(config, message):
    with pytest.raises(TrainingError, match=message):
        project_classes(config)


def test_fetch_project_reads_tasks_through_the_sdk():
    class Pydantic:
        def __init__(self, **data):
            self.__dict__.update(data)

        def model_dump(self):
            return dict(self.__dict__)

    class Client:
        class projects:
            @staticmethod
            def get(id):
                return Pydantic(id=id, label_config=CONFIG, title="cars")

        class tasks:
            calls = []

            @classmethod
            def list(cls, **kwargs):
                cls.calls.append(kwargs)
                return iter([Pydantic(**t) for t in snapshot().tasks])

    snap = fetch_project(Client, 3)
    assert Client.tasks.calls == [{"project": 3, "fields": "all", "page_size": 100, "resolve_uri": False}]
    assert snap.label_config == CONFIG and snap.title == "cars" and len(snap.tasks) == 7
    assert [t["id"] for t in snap.annotated_tasks()] == [1, 2, 3, 6, 7]
