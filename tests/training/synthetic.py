"""A synthetic detection domain no model knows: coloured shapes on noise, as a COCO-format dataset."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Each class is one shape in one colour; ids are not contiguous and names need the label -> phrase rule.
CLASSES = [
    {"id": 4, "name": "red_square", "shape": "square", "colour": (220, 30, 30)},
    {"id": 9, "name": "GreenDisk", "shape": "disk", "colour": (30, 200, 60)},
    {"id": 12, "name": "blue triangle", "shape": "triangle", "colour": (40, 60, 230)},
]


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: list[float], colour) -> None:
    x0, y0, x1, y1 = box
    if shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "disk":
        draw.ellipse(box, fill=colour)
    else:
        draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=colour)


def make_shapes_dataset(root: Path, num_images: int = 100, size: int = 128, seed: int = 0,
                        max_objects: int = 3) -> tuple[Path, Path]:
    """``num_images`` noisy ``size`` x ``size`` images with 1..max_objects shapes each; (annotation file, image dir)."""
    rng = np.random.default_rng(seed)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        placed: list[list[float]] = []
        for _ in range(int(rng.integers(1, max_objects + 1))):
            for _attempt in range(20):  # no overlaps: every box is fully visible
                side = float(rng.uniform(0.18, 0.4) * size)
                x0, y0 = (float(v) for v in rng.uniform(0, size - side, 2))
                box = [x0, y0, x0 + side, y0 + side]
                if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in placed):
                    break
            else:
                continue
            cls = CLASSES[int(rng.integers(len(CLASSES)))]
            draw_shape(draw, cls["shape"], box, cls["colour"])
            placed.append(box)
            annotations.append({"id": len(annotations) + 1, "image_id": 100 + i, "category_id": cls["id"],
                                "bbox": [box[0], box[1], side, side], "area": side * side, "iscrowd": 0})
        name = f"shapes_{i:04d}.png"
        image.save(images_dir / name)
        images.append({"id": 100 + i, "file_name": name, "width": size, "height": size})
    categories = [{"id": c["id"], "name": c["name"]} for c in CLASSES]
    ann = root / "annotations.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return ann, images_dir
