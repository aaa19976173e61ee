"""`python -m evaluation.labelstudio` on a Label Studio export written by hand, with known answers."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.evaluation.coco.command_line import load_json
from evaluation.labelstudio.cli import main


def region(rid, label, x, y, w, h, score=None, size=(800, 600)):
    r = {"id": rid, "type": "rectanglelabels", "from_name": "label", "to_name": "image",
         "original_width": size[0], "original_height": size[1], "image_rotation": 0,
         "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]}}
    if score is not None:
        r["score"] = score
    return r


def export():
    s2 = (400, 400)
    return [
        {   # The annotator started from the pre-labels (Label Studio keeps their region ids).
            "id": 1, "data": {"image": "/data/upload/1/a.jpg"},
            "annotations": [{"id": 11, "was_cancelled": False, "parent_prediction": 21, "result": [
                region("a", "cat", 10, 10, 20, 20),            # kept
                region("b", "dog", 52, 50, 20, 20),            # moved (IoU 0.818 with the pre-label)
                region("c", "dog", 70, 10, 10, 10),            # relabelled cat -> dog
                region("n1", "cat", 30, 60, 15, 15),           # added   ("d" was deleted)
            ]}],
            "predictions": [{"id": 21, "model_version": "gdino-tiny-abc", "score": 0.7, "result": [
                region("a", "cat", 10, 10, 20, 20, 0.9), region("b", "dog", 50, 50, 20, 20, 0.8),
                region("c", "cat", 70, 10, 10, 10, 0.6), region("d", "dog", 0, 70, 10, 10, 0.5)]}],
        },
        {   # Drawn anew (new ids): paired by overlap.
            "id": 2, "data": {"image": "/data/upload/1/b.jpg"},
            "annotations": [{"id": 12, "result": [region("y", "cat", 10, 10, 30, 30, size=s2)]}],
            "predictions": [{"id": 22, "model_version": "gdino-tiny-abc", "result": [
                region("x", "cat", 10, 10, 30, 30, 0.7, s2), region("z", "dog", 60, 60, 20, 20, 0.4, s2)]}],
        },
        {   # No annotation: not scored.
            "id": 3, "data": {"image": "c.jpg"}, "annotations": [],
            "predictions": [{"id": 23, "model_version": "gdino-tiny-abc", "result": [region("q", "cat", 1, 1, 5, 5, 0.9)]}],
        },
        {   # Only a cancelled (skipped) annotation: not scored.
            "id": 4, "data": {"image": "d.jpg"},
            "annotations": [{"id": 14, "was_cancelled": True, "result": [region("r", "dog", 1, 1, 5, 5)]}],
            "predictions": [],
        },
    ]


@pytest.fixture
def export_file(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export()))
    return path


def test_scores_and_prelabel_treatment(export_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([str(export_file), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "precision 0.500, recall 0.600" in printed
    m = load_json(out / "metrics.json")
    # cat: 3 GT; ranked TP .9, TP .7, FP .6 at every IoU -> precision 1 up to recall 2/3: 67 of the 101
    # recall points. dog: 2 GT; the moved box (IoU 0.818) is a TP for IoU thresholds .50-.80 (7 of 10),
    # then 2 FPs -> 51/101 there, 0 at .85-.95.
    cat_ap, dog_ap = 67 / 101, 0.7 * 51 / 101
    assert m["AP"] == pytest.approx((cat_ap + dog_ap) / 2, abs=1e-12)
    assert m["AP50"] == pytest.approx((67 / 101 + 51 / 101) / 2, abs=1e-12)
    per_class = pd.read_csv(out / "per_class.csv").set_index("name")
    assert per_class.loc["cat", "AP"] == pytest.approx(cat_ap) and per_class.loc["dog", "AP"] == pytest.approx(dog_ap)
    assert per_class["num_gt"].to_dict() == {"cat": 3, "dog": 2}
    # At the backend's threshold (every stored pre-label): tp 3, fp 3, fn 2.
    assert (m["tp"], m["fp"], m["fn"]) == (3, 3, 2)
    assert m["precision"] == 0.5 and m["recall"] == 0.6 and m["f1"] == pytest.approx(6 / 11)
    per_label = pd.read_csv(out / "per_label.csv").set_index("label")
    assert per_label.loc["cat", ["tp", "fp", "fn"]].tolist() == [2, 1, 1]
    assert per_label.loc["dog", ["tp", "fp", "fn"]].tolist() == [1, 2, 1]
    assert m["prelabels"] == {"prelabels": 6, "kept": 2, "moved_resized": 1, "relabelled": 1, "deleted": 2, "added": 1}
    treat = pd.read_csv(out / "prelabels.csv").set_index("label")
    assert treat.loc["cat", ["kept", "relabelled", "added", "deleted"]].tolist() == [2, 1, 1, 0]
    assert treat.loc["dog", ["moved_resized", "deleted"]].tolist() == [1, 2]
    cfg = m["config"]
    assert cfg["export"] == str(export_file.resolve()) and cfg["num_images"] == 2 and cfg["num_tasks"] == 4
    assert cfg["threshold"] == 0.4 and cfg["model"] == "gdino-tiny-abc" and cfg["pixel_sizes"] is True
    gt = load_json(cfg["ann"])  # the ground truth the analysis notebooks read back
    assert {im["id"] for im in gt["images"]} == {1, 2}
    assert gt["annotations"][1]["bbox"] == pytest.approx([416, 300, 160, 120])  # percent -> pixels
    dets = load_json(out / "detections.json")
    assert len(dets) == 6 and {d["image_id"] for d in dets} == {1, 2}


def test_a_higher_threshold_drops_low_scoring_prelabels(export_file, tmp_path):
    out = tmp_path / "run"
    assert main([str(export_file), "--threshold", "0.55", "--out", str(out)]) == 0
    m = load_json(out / "metrics.json")
    assert (m["tp"], m["fp"], m["fn"]) == (3, 1, 2) and m["precision"] == 0.75
    assert m["prelabels"]["deleted"] == 2  # treatment is about what annotators did, not the threshold


def test_bad_exports_are_one_line_exit_2(tmp_path, capsys):
    notalist = tmp_path / "x.json"
    notalist.write_text(json.dumps({"tasks": []}))
    unannotated = tmp_path / "y.json"
    unannotated.write_text(json.dumps([{"id": 1, "data": {}, "annotations": [], "predictions": []}]))
    for path, message in [(tmp_path / "missing.json", "not found"), (notalist, "not a Label Studio"),
                          (unannotated, "no annotated tasks")]:
        capsys.readouterr()
        assert main([str(path), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and message in err and len(err.splitlines()) == 1
