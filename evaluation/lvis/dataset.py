"""An LVIS v1 annotation file (minival, val1.0, or any LVIS-format file) as the run's dataset.

LVIS images are COCO 2017 images: an image's file is IMAGES_DIR/<file_name> when the file names one
(the minival file GLIP published "inserts" them: `val2017/000000397133.jpg`), else it is taken from its
`coco_url` (`.../train2017/000000391895.jpg` -> IMAGES_DIR/train2017/000000391895.jpg). IMAGES_DIR is
a COCO root holding train2017/ and val2017/ (what `python -m evaluation.lvis download` makes).
"""
from __future__ import annotations

from pathlib import Path

from evaluation.coco.dataset import CocoDataset, dataset_paths, load_dataset
from evaluation.published import LVIS_MINIVAL, LVIS_VAL
from runtime.errors import InputError

SPLITS = {  # --split -> annotation file under LVIS_ROOT/annotations/
    "minival": "lvis_v1_minival_inserted_image_name.json",
    "val": "lvis_v1_val.json",
}
FREQUENCIES = {"r", "c", "f"}


def image_file(image: dict) -> str | None:
    """Where an LVIS image lies under a COCO root: its file_name, or split/name from its coco_url."""
    if isinstance(image.get("file_name"), str) and image["file_name"]:
        return image["file_name"]
    url = image.get("coco_url")
    if isinstance(url, str) and url.count("/") >= 2:
        split, name = url.rstrip("/").split("/")[-2:]
        return f"{split}/{name}"
    return None


def prepare(data: dict, path: Path) -> None:
    """Check the LVIS fields and give every image the file name the COCO loader reads."""
    what = f"{path} is not an LVIS annotation file"
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("categories"), list):
        raise InputError(f"{what}: expected an object with images, annotations and categories")
    for c in data["categories"]:
        if not isinstance(c, dict) or c.get("frequency") not in FREQUENCIES:
            raise InputError(f"{what}: every category needs a frequency r, c or f (got {c!r:.80})")
    for img in data["images"]:
        if not isinstance(img, dict):
            raise InputError(f"{what}: images must be objects (got {img!r:.80})")
        name = image_file(img)
        if name is None:
            raise InputError(f"{what}: image {img.get('id')!r} has neither a file_name nor a coco_url")
        img["file_name"] = name
        for key in ("neg_category_ids", "not_exhaustive_category_ids"):
            if not isinstance(img.setdefault(key, []), list):
                raise InputError(f"{what}: image {img.get('id')!r} has a {key} that is not a list")


def benchmark_of(ann_path: Path) -> str:
    """The published-table benchmark an annotation file is (by its official name), else 'lvis-custom'."""
    name = Path(ann_path).name
    if name == SPLITS["minival"]:
        return LVIS_MINIVAL
    if name == SPLITS["val"]:
        return LVIS_VAL
    return "lvis-custom"


def resolve_paths(lvis_root: str | None, split: str, ann: str | None, images: str | None) -> tuple[Path, Path]:
    return dataset_paths(lvis_root, ann, images, "--lvis-root (with --split)", "--lvis-root DIR (with --split minival|val)",
                         "--ann LVIS.json and --images COCO_ROOT", lambda root: (root / "annotations" / SPLITS[split], root))


def load_lvis(ann_path: Path, images_dir: Path, check_files: bool = True) -> CocoDataset:
    return load_dataset(ann_path, images_dir, check_files, prepare=prepare)
