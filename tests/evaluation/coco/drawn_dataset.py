"""Small COCO-format datasets drawn with PIL: a rectangle and an ellipse per image, boxes (and polygons)
known exactly."""
from __future__ import annotations

import json
import math
from pathlib import Path

from PIL import Image, ImageDraw

# Non-contiguous ids, a capitalised name, multi-word and multi-piece names: label index -> id must hold.
CATEGORIES = [
    {"id": 3, "name": "cat"},
    {"id": 7, "name": "Dog"},
    {"id": 10, "name": "traffic light"},
    {"id": 90, "name": "hair drier"},
]


def make_dataset(root: Path, num_images: int = 4, masks: bool = False) -> tuple[Path, Path]:
    """`masks`: each annotation also gets its instance mask as a polygon (the drawn rectangle's corners,
    the ellipse's outline), for --iou-type segm."""
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        width, height = 200 + 37 * i, 150 + 23 * (i % 3)
        image = Image.new("RGB", (width, height), (40 * i % 255, 120, 200))
        draw = ImageDraw.Draw(image)
        box = [10 + 5 * i, 12, 90 + 5 * i, 80]
        draw.rectangle(box, fill=(250, 220, 30))
        draw.ellipse([110, 40, 180, 120], fill=(20, 20, 20))
        name = f"img_{i:03d}.png"
        image.save(images_dir / name)
        image_id = 1000 + 7 * i
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        for k, (b, cat) in enumerate([(box, CATEGORIES[i % 4]), ([110, 40, 180, 120], CATEGORIES[(i + 1) % 4])]):
            x, y, w, h = b[0], b[1], b[2] - b[0], b[3] - b[1]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat["id"],
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
            if masks:
                outline = [x, y, x + w, y, x + w, y + h, x, y + h] if k == 0 else ellipse_polygon(b)
                annotations[-1]["segmentation"] = [outline]
    ann = root / "annotations.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return ann, images_dir


def ellipse_polygon(box, vertices: int = 32) -> list[float]:
    """The outline of the ellipse inscribed in an [x0, y0, x1, y1] box, as a flat COCO polygon."""
    cx, cy, rx, ry = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, (box[2] - box[0]) / 2, (box[3] - box[1]) / 2
    points = []
    for n in range(vertices):
        angle = 2 * math.pi * n / vertices
        points += [cx + rx * math.cos(angle), cy + ry * math.sin(angle)]
    return points
