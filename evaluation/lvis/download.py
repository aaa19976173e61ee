"""`python -m evaluation.lvis download --lvis-root DIR --split minival|val`: annotations + images.

The annotation file of the split, then each of its images from its `coco_url` into DIR/train2017/ or
DIR/val2017/ (only the split's images: 5,000 for minival, 19,809 for val1.0, not COCO's 18 GB train
zip). Every file goes through evaluation.runner.download (resume, atomic rename: a file that exists
is complete), so rerunning the command continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from evaluation.runner.cli import exit_code
from evaluation.runner.download import RemoteFile, download, fetch
from runtime.errors import InputError

from .dataset import SPLITS, image_file

ANNOTATIONS = {  # split -> (base URL, file under it); the files the published figures were measured on
    "minival": ("https://huggingface.co/GLIPModel/GLIP/resolve/main", RemoteFile(SPLITS["minival"], None, None)),
    "val": ("https://dl.fbaipublicfiles.com/LVIS", RemoteFile("lvis_v1_val.json.zip", None, None)),
}
PARALLEL = 8  # image downloads in flight


def download_split(root: Path, split: str, base_url: str | None = None, image_base_url: str | None = None,
                   progress: bool = True) -> int:
    """Fetch the split's annotation file and images; returns the number of images."""
    root = Path(root).expanduser()
    default_base, spec = ANNOTATIONS[split]
    ann = root / "annotations" / SPLITS[split]
    url = (base_url or default_base).rstrip("/") + "/" + spec.path
    if spec.path.endswith(".zip"):  # extracted into annotations/
        download(root / "annotations", base_url or default_base, (spec,), progress=progress)
    elif not ann.is_file():
        fetch(url, ann, spec, progress=progress)
    try:
        images = json.loads(ann.read_text(encoding="utf-8"))["images"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{ann}: not a readable LVIS annotation file ({exc})") from None
    jobs = []
    for img in images:
        name = image_file(img)
        url = img.get("coco_url")
        if name is None or not url:
            raise InputError(f"{ann}: image {img.get('id')!r} has no coco_url to download it from")
        if image_base_url:  # a mirror of images.cocodataset.org
            url = image_base_url.rstrip("/") + "/" + name
        if not (root / name).is_file():
            jobs.append((url, root / name))
    with ThreadPoolExecutor(PARALLEL) as pool, tqdm(total=len(images), initial=len(images) - len(jobs), unit="img",
                                                    desc="images", disable=not progress, file=sys.stderr) as bar:
        for _ in pool.map(lambda job: fetch(job[0], job[1], RemoteFile(job[0], None, None), progress=False), jobs):
            bar.update(1)
    return len(images)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.lvis download",
        description="Download an LVIS v1 split's annotation file into DIR/annotations/ and its images (COCO 2017 "
                    "images, from their coco_url) into DIR/train2017/ and DIR/val2017/, resumably.")
    p.add_argument("--lvis-root", required=True, metavar="DIR", help="where to put the dataset")
    p.add_argument("--split", choices=sorted(SPLITS), default="minival", help="minival (default) or val (val1.0)")
    p.add_argument("--base-url", help="host serving the split's annotation file (a mirror of the default: "
                                      + "; ".join(f"{k}: {v[0]}" for k, v in ANNOTATIONS.items()) + ")")
    p.add_argument("--image-base-url", help="host serving train2017/NAME and val2017/NAME (default: each image's coco_url)")
    args = p.parse_args(argv)

    def fetch_split() -> int:
        n = download_split(Path(args.lvis_root), args.split, args.base_url, args.image_base_url)
        print(f"done: {n} images of LVIS {args.split} in {Path(args.lvis_root).expanduser()}")
        return 0

    return exit_code(fetch_split)
