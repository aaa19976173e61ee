"""`python -m evaluation.labelstudio` on an export with brush and polygon regions: mask IoU, hand-computed."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from labelstudio.regions import mask_to_rle
from evaluation.labelstudio.cli import main
from evaluation.labelstudio.export import Region, Task, with_masks
from evaluation.masks import polygon_mask
from tests.evaluation.coco.command_line import load_json

WIDTH, HEIGHT = 100, 80


def pixels(x0, y0, x1, y1) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def brush(rid, label, mask, score=None):
    r = {"id": rid, "type": "brushlabels", "from_name": "brush", "to_name": "image", "original_width": WIDTH,
         "original_height": HEIGHT, "image_rotation": 0,
         "value": {"format": "rle", "rle": mask_to_rle(mask), "brushlabels": [label]}}
    return r if score is None else {**r, "score": score}


def polygon(rid, label, points_px, score=None):
    points = [[x / WIDTH * 100, y / HEIGHT * 100] for x, y in points_px]
    r = {"id": rid, "type": "polygonlabels", "from_name": "poly", "to_name": "image", "original_width": WIDTH,
         "original_height": HEIGHT, "image_rotation": 0, "value": {"points": points, "polygonlabels": [label]}}
    return r if score is None else {**r, "score": score}


def rect_points(x0, y0, x1, y1):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


# An L: 20x10 on top of a 10x20 leg, 400 pixels; its bounding box is 20x30 = 600 pixels.
L_SHAPE = [(10, 10), (30, 10), (30, 20), (20, 20), (20, 40), (10, 40)]


def export():
    return [
        {   # The annotator started from the pre-labels (region ids kept).
            "id": 1, "data": {"image": "/data/upload/1/a.jpg"},
            "annotations": [{"id": 11, "parent_prediction": 21, "result": [
                brush("a", "cat", pixels(10, 10, 30, 30)),              # kept: the same RLE
                polygon("b", "dog", rect_points(50, 10, 70, 30)),       # moved 4 px: mask IoU 320/480 = 2/3
                brush("n1", "cat", pixels(70, 50, 80, 60)),             # added ("d" was deleted)
            ]}],
            "predictions": [{"id": 21, "model_version": "gdino-sam-abc", "result": [
                brush("a", "cat", pixels(10, 10, 30, 30), 0.9),
                polygon("b", "dog", rect_points(54, 10, 74, 30), 0.8),
                polygon("d", "dog", rect_points(10, 50, 30, 70), 0.5),
            ]}],
        },
        {   # Drawn anew: a full rectangle mask over an L-shaped object. Same bounding box (box IoU 1),
            # mask IoU 400/600 = 2/3.
            "id": 2, "data": {"image": "/data/upload/1/b.jpg"},
            "annotations": [{"id": 12, "result": [polygon("y", "cat", L_SHAPE)]}],
            "predictions": [{"id": 22, "model_version": "gdino-sam-abc", "result": [
                brush("x", "cat", pixels(10, 10, 30, 40), 0.7)]}],
        },
    ]


def test_polygon_mask_counts_pixels_by_centre():
    assert polygon_mask(L_SHAPE, WIDTH, HEIGHT).sum() == 400
    assert np.array_equal(polygon_mask(rect_points(50, 10, 70, 30), WIDTH, HEIGHT), pixels(50, 10, 70, 30))
    assert not polygon_mask([(0, 0), (5, 5)], WIDTH, HEIGHT).any()  # under 3 points: nothing


def test_a_rotated_rectangle_is_rasterised_rotated_about_its_corner():
    # 20 x 8 px at (10, 8), rotated 90 degrees clockwise about its top-left corner: 8 wide, 20 tall,
    # to the left of the corner.
    task = Task(1, "i", WIDTH, HEIGHT, [Region("r", "cat", 10, 10, 20, 10, rotation=90)])
    with_masks(task)
    from pycocotools import mask as mask_utils

    rle = task.annotation[0].rle
    decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
    assert np.array_equal(decoded, pixels(2, 8, 10, 28))


def test_mask_export_is_scored_by_mask_iou(tmp_path, capsys):
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export()))
    out = tmp_path / "run"
    assert main([str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    m = load_json(out / "metrics.json")
    assert m["config"]["iou_type"] == "segm"
    assert m["config"]["region_kinds"] == ["brushlabels", "polygonlabels"]
    # Masks. cat (3 GT): "a" IoU 1, "x" IoU 2/3 -> both TP at IoU .50-.65 (67 of 101 recall points), only
    # "a" at .70-.95 (34 points). dog (1 GT): the moved polygon, IoU 2/3 -> AP 1 at .50-.65, 0 above.
    cat_mask, dog = (4 * 67 + 6 * 34) / 10 / 101, 0.4
    assert m["segm"]["AP"] == pytest.approx((cat_mask + dog) / 2, abs=1e-12)
    assert m["segm"]["AP50"] == pytest.approx((67 / 101 + 1) / 2, abs=1e-12)
    # Boxes of the same regions: the L's bounding box is the rectangle's, so cat's "x" matches everywhere.
    assert m["AP"] == pytest.approx((67 / 101 + dog) / 2, abs=1e-12)
    assert "mask AP" in printed and "mask IoU 0.5" in printed
    # At the lowest stored score, mask IoU >= 0.5: "a", "b", "x" match; "d" does not; "n1" is missed.
    assert (m["tp"], m["fp"], m["fn"]) == (3, 1, 1) and m["precision"] == 0.75 and m["recall"] == 0.75
    per_class = pd.read_csv(out / "per_class.csv").set_index("name")
    assert per_class.loc["cat", "segm_AP"] == pytest.approx(cat_mask) and per_class.loc["cat", "AP"] == pytest.approx(67 / 101)
    assert m["prelabels"] == {"prelabels": 4, "kept": 1, "moved_resized": 2, "relabelled": 0, "deleted": 1, "added": 1}
    # The run files hold the masks as COCO RLE, for the report to recompute from.
    gt = load_json(m["config"]["ann"])
    assert [a["area"] for a in gt["annotations"]] == [400, 400, 100, 400]
    assert all("segmentation" in d for d in load_json(out / "detections.json"))


def test_a_brush_region_without_its_size_is_refused(tmp_path, capsys):
    task = export()[1]
    del task["annotations"][0]["result"][0]["original_width"]
    task["annotations"][0]["result"] = [brush("y", "cat", pixels(0, 0, 5, 5))]
    del task["annotations"][0]["result"][0]["original_height"]
    path = tmp_path / "export.json"
    path.write_text(json.dumps([task]))
    assert main([str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: task 2: brushlabels region 'y' has no original_width/original_height")
    assert len(err.splitlines()) == 1
