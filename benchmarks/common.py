"""What every benchmark path shares: the prompts, the images and the model directory."""
from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# The random full-size model (random_model.py, which imports torch) is built only when no checkpoint is
# given: imported where it is needed, so that a benchmark's parent process does not load torch.

ROOT = Path(__file__).resolve().parent.parent

LS_LABELS = ["Person", "Car", "Dog", "TrafficLight", "Bicycle"]
LS_CLASSES = ["person", "car", "dog", "traffic light", "bicycle"]  # what the config's labels prompt
LS_CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    + "".join(f'<Label value="{v}"/>' for v in LS_LABELS)
    + "</RectangleLabels></View>"
)
IMAGE_SIZES = [(640, 480), (480, 640), (640, 427), (500, 375)]  # COCO-like (width, height)
BOX_THRESHOLD = 0.35  # the backend's default
TEXT_THRESHOLD = 0.25  # the model card's


def caption(classes) -> str:
    return " ".join(f"{c} ." for c in classes)


def make_images(seed: int = 0) -> list[bytes]:
    """JPEG bytes of drawn shapes on noise, COCO-like sizes."""
    rng = np.random.RandomState(seed)
    out = []
    for width, height in IMAGE_SIZES:
        image = Image.fromarray((rng.rand(height, width, 3) * 255).astype("uint8"))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x0, y0 = int(rng.randint(0, width - 40)), int(rng.randint(0, height - 40))
            x1, y1 = x0 + int(rng.randint(20, width // 2)), y0 + int(rng.randint(20, height // 2))
            fill = tuple(int(v) for v in rng.randint(0, 255, 3))
            (draw.ellipse if rng.rand() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=fill)
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def model_dir(path: str | None) -> Path:
    if path:
        return Path(path)
    target = Path(tempfile.gettempdir()) / "gdino-bench-cache" / "full-tiny-random"
    if not (target / "model.safetensors").exists():
        print(f"building the full-size random model into {target} ...", file=sys.stderr, flush=True)
        from .random_model import build_full_size_model

        build_full_size_model(target)
    return target
