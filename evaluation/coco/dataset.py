"""A COCO-format detection dataset: annotation JSON + image directory, validated up front."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from runtime.errors import InputError


@dataclass
class CocoDataset:
    ann_path: Path  # absolute
    images_dir: Path  # absolute
    data: dict
    image_ids: list[int]  # sorted, as torchvision's CocoDetection (the official loader) orders them
    files: dict[int, Path]
    sizes: dict[int, tuple[int, int]]  # image id -> (width, height) from the JSON (may be absent)

    @property
    def categories(self) -> list[dict]:
        """In annotation-file order: label index i of the detector is categories[i]."""
        return self.data["categories"]

    @property
    def category_names(self) -> list[str]:
        return [c["name"] for c in self.categories]

    @property
    def category_ids(self) -> list[int]:
        return [int(c["id"]) for c in self.categories]

    @property
    def name(self) -> str:
        """A short dataset name for default run directories: instances_val2017.json -> val2017."""
        stem = self.ann_path.stem
        for prefix in ("instances_", "annotations_", "_annotations"):
            stem = stem.replace(prefix, "")
        return stem.strip("_.") or self.images_dir.name


def dataset_paths(root: str | None, ann: str | None, images: str | None, root_option: str, root_usage: str,
                  files_usage: str, from_root: Callable[[Path], tuple[Path, Path]]) -> tuple[Path, Path]:
    """(annotation file, image directory): from a dataset root laid out as `download` makes it, or given as
    --ann and --images (either, not both)."""
    if root and (ann or images):
        raise InputError(f"give either {root_option} or --ann with --images, not both")
    if root:
        return from_root(Path(root).expanduser())
    if not ann or not images:
        raise InputError(f"give {root_usage}, or both {files_usage}")
    return Path(ann).expanduser(), Path(images).expanduser()


def resolve_paths(coco_root: str | None, ann: str | None, images: str | None) -> tuple[Path, Path]:
    return dataset_paths(coco_root, ann, images, "--coco-root", "--coco-root DIR", "--ann ANN.json and --images IMG_DIR",
                         lambda root: (root / "annotations" / "instances_val2017.json", root / "val2017"))


def load_dataset(ann_path: Path, images_dir: Path, check_files: bool = True, prepare=None) -> CocoDataset:
    """Read and validate a COCO-format annotation file. `prepare(data, ann_path)` adapts a related format
    before validation (evaluation.lvis: image file names from `coco_url`, LVIS's fields)."""
    ann_path, images_dir = Path(ann_path).resolve(), Path(images_dir).resolve()
    if not ann_path.is_file():
        raise InputError(f"annotation file not found: {ann_path}")
    if not images_dir.is_dir():
        raise InputError(f"image directory not found: {images_dir}")
    try:
        data = json.loads(ann_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{ann_path} is not valid JSON ({exc})") from None
    if prepare is not None:
        prepare(data, ann_path)
    _validate(data, ann_path)
    _fill_defaults(data)
    files, sizes = {}, {}
    for img in data["images"]:
        iid = int(img["id"])
        files[iid] = images_dir / img["file_name"]
        if "width" in img and "height" in img:
            sizes[iid] = (int(img["width"]), int(img["height"]))
    ids = sorted(files)
    if check_files:
        missing = [files[i] for i in ids if not files[i].is_file()]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise InputError(f"image file not found: {missing[0]}{more} (is --images / --coco-root right?)")
    return CocoDataset(ann_path, images_dir, data, ids, files, sizes)


def _validate(data, path: Path) -> None:
    what = f"{path} is not a COCO detection annotation file"
    if not isinstance(data, dict):
        raise InputError(f"{what}: expected a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise InputError(f"{what}: no {key!r} list")
    if not data["images"]:
        raise InputError(f"{path} lists no images: nothing to evaluate")
    if not data["categories"]:
        raise InputError(f"{what}: the 'categories' list is empty")
    for c in data["categories"]:
        if not isinstance(c, dict) or "id" not in c or not isinstance(c.get("name"), str) or not c["name"].strip():
            raise InputError(f"{what}: every category needs an 'id' and a non-empty 'name' (got {c!r:.80})")
    if len({c["id"] for c in data["categories"]}) != len(data["categories"]):
        raise InputError(f"{what}: category ids are not unique")
    for img in data["images"]:
        if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
            raise InputError(f"{what}: every image needs an 'id' and a 'file_name' (got {img!r:.80})")
    for a in data["annotations"][:1000]:
        bbox = a.get("bbox") if isinstance(a, dict) else None
        if not isinstance(bbox, list) or len(bbox) != 4 or "image_id" not in a or "category_id" not in a:
            raise InputError(f"{what}: annotations need image_id, category_id and bbox [x, y, w, h] (got {a!r:.80})")


def _fill_defaults(data: dict) -> None:
    """Fields pycocotools needs that custom exports often omit (COCO's own files have them all)."""
    for n, a in enumerate(data["annotations"], start=1):
        a.setdefault("id", n)
        a.setdefault("iscrowd", 0)
        if "area" not in a:
            a["area"] = float(a["bbox"][2]) * float(a["bbox"][3])
