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


LABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
""" + "".join(f'    <Label value="{c["name"]}"/>\n' for c in CLASSES) + """  </RectangleLabels>
</View>"""


def labelstudio_tasks(ann: Path, model_version: str, annotated: int | None = None) -> list[dict]:
    """The dataset as Label Studio tasks: every image annotated (or the first ``annotated``), each with a
    prediction of ``model_version`` holding its true boxes at score 0.9 and one wrong box at 0.5."""
    coco = json.loads(Path(ann).read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    tasks = []
    for n, im in enumerate(coco["images"]):
        w, h = im["width"], im["height"]

        def region(rid, name, bbox, score=None):
            x, y, bw, bh = bbox
            r = {"id": rid, "type": "rectanglelabels", "from_name": "label", "to_name": "image",
                 "original_width": w, "original_height": h,
                 "value": {"x": 100 * x / w, "y": 100 * y / h, "width": 100 * bw / w, "height": 100 * bh / h,
                           "rotation": 0, "rectanglelabels": [name]}}
            return r if score is None else {**r, "score": score}

        boxes = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
        final = [region(f"r{a['id']}", names[a["category_id"]], a["bbox"]) for a in boxes]
        wrong = names[coco["categories"][n % len(names)]["id"]]
        prediction = [region(f"r{a['id']}", names[a["category_id"]], a["bbox"], 0.9) for a in boxes]
        prediction.append(region(f"x{im['id']}", wrong, [0, 0, w / 10, h / 10], 0.5))
        task = {"id": im["id"], "data": {"image": im["file_name"]},
                "predictions": [{"model_version": model_version, "score": 0.7, "result": prediction}],
                "annotations": []}
        if annotated is None or n < annotated:
            task["annotations"] = [{"id": 10_000 + im["id"], "was_cancelled": False, "result": final}]
        tasks.append(task)
    return tasks
