"""`python -m evaluation.coco download --coco-root DIR`: val2017 images + annotations, resumable.

The machinery (resume, size/MD5 check, safe extraction) is evaluation.runner.download; this module
lists COCO's files: DIR/val2017/ and DIR/annotations/instances_val2017.json after extraction.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from evaluation.runner.cli import exit_code
from evaluation.runner.download import RemoteFile, download, load_manifest

DEFAULT_BASE_URL = "http://images.cocodataset.org"

VAL2017 = (
    RemoteFile("zips/val2017.zip", 815585330, "442b8da7639aecaf257c1dceb8ba8c80"),
    RemoteFile("annotations/annotations_trainval2017.zip", 252907541, "f4bbac642086de4f52a3fdda2de5fa2c"),
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.coco download",
        description="Download COCO val2017 images and annotations into DIR (DIR/val2017/, "
                    "DIR/annotations/instances_val2017.json) with resume, size/MD5 check and extraction.")
    p.add_argument("--coco-root", required=True, metavar="DIR", help="where to put the dataset")
    p.add_argument("--base-url", default=DEFAULT_BASE_URL,
                   help=f"host serving zips/val2017.zip and annotations/annotations_trainval2017.zip "
                        f"(default {DEFAULT_BASE_URL}; a mirror works)")
    p.add_argument("--manifest", metavar="FILE",
                   help="JSON list of {path, size, md5} to fetch instead of the val2017 pair (other datasets)")
    p.add_argument("--delete-zips", action="store_true", help="remove the zip files after extraction")
    args = p.parse_args(argv)

    def fetch_all() -> int:
        files = load_manifest(args.manifest) if args.manifest else VAL2017
        download(Path(args.coco_root), args.base_url, files, keep_zips=not args.delete_zips)
        print(f"done: {Path(args.coco_root).expanduser()}")
        return 0

    return exit_code(fetch_all)
