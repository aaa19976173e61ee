"""LVIS-format ground truth built in the tests: hand-made cases with known answers, and a small
LVIS-format copy of the drawn COCO test dataset (images found through `coco_url`)."""
from __future__ import annotations

import json
from pathlib import Path

from tests.evaluation.coco.drawn_dataset import make_dataset

# A frequent, a common and a rare category (LVIS names with the parts mmdetection cleans away).
CATEGORIES = [
    {"id": 1, "name": "ball_(sports)", "frequency": "f"},
    {"id": 2, "name": "traffic_light", "frequency": "c"},
    {"id": 3, "name": "hair_drier", "frequency": "r"},
    {"id": 4, "name": "yo-yo", "frequency": "r"},
]


def lvis_gt(boxes, images) -> dict:
    """boxes: (image_id, category_id, [x, y, w, h]); images: {image_id: {"neg": [...], "not_exhaustive": [...]}}."""
    anns = [{"id": n + 1, "image_id": im, "category_id": c, "bbox": list(map(float, b)), "area": float(b[2] * b[3])}
            for n, (im, c, b) in enumerate(boxes)]
    imgs = [{"id": i, "width": 200, "height": 200, "coco_url": f"http://images.cocodataset.org/val2017/{i:012d}.jpg",
             "neg_category_ids": list(v.get("neg", [])), "not_exhaustive_category_ids": list(v.get("not_exhaustive", []))}
            for i, v in images.items()]
    return {"images": imgs, "annotations": anns, "categories": [dict(c) for c in CATEGORIES[:3]]}


def make_lvis_dataset(root: Path, num_images: int = 4) -> tuple[Path, Path]:
    """(LVIS annotation file, COCO-style root) of the drawn test images; images named only by coco_url."""
    ann, images = make_dataset(root / "drawn", num_images)
    data = json.loads(ann.read_text())
    (root / "val2017").mkdir(parents=True, exist_ok=True)
    for img in data["images"]:
        (root / "val2017" / img["file_name"]).write_bytes((images / img["file_name"]).read_bytes())
        img["coco_url"] = f"http://images.cocodataset.org/val2017/{img.pop('file_name')}"
        img["neg_category_ids"], img["not_exhaustive_category_ids"] = [4], []
    remap = {c["id"]: CATEGORIES[k]["id"] for k, c in enumerate(data["categories"])}
    for a in data["annotations"]:
        a["category_id"] = remap[a["category_id"]]
        del a["iscrowd"]  # LVIS has no crowd flag
    data["categories"] = [dict(c) for c in CATEGORIES]
    out = root / "lvis_test.json"
    out.write_text(json.dumps(data))
    return out, root
