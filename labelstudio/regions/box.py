"""Detector box -> Label Studio rectangle region (`rectanglelabels`, or an unlabeled `rectangle`)."""
from __future__ import annotations

from .result import pct, region_id, region_result


def make_region(task_id, label_set, size, box, score: float, label: str, n: int) -> dict:
    """The n-th region of a task for a box control (`label_set`: labelstudio.label_sets.LabelSet), box in
    xyxy pixels: percent x/y/width/height of the image as shown (EXIF applied)."""
    width, height = size
    x0, y0, x1, y1 = box
    value = {
        "x": pct(x0, width),
        "y": pct(y0, height),
        "width": pct(x1 - x0, width),
        "height": pct(y1 - y0, height),
        "rotation": 0,
    }
    if label_set.kind == "rectanglelabels":
        value["rectanglelabels"] = [label]
    rid = region_id(task_id, label_set.from_name, label_set.to_name, n)
    return region_result(rid, label_set.from_name, label_set.to_name, label_set.kind, size, value, score)

