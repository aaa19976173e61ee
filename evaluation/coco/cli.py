"""Command line of `python -m evaluation.coco` (evaluate) and `python -m evaluation.coco download`."""
from __future__ import annotations

import argparse

from evaluation.runner.cli import add_mask_arguments, add_run_arguments, dataset_main

from .dataset import load_dataset, resolve_paths
from .download import main as download_main

# The run (.run) is imported inside load(): it imports torch, and the THP lever must be set before that
# (runner.cli.dataset_main sets it); a download answers without loading the model code.

DESCRIPTION = """\
Zero-shot COCO-style evaluation of a Grounding DINO checkpoint by the official protocol
(caption "person . bicycle . ... .", mean token probability per class, top-300 over queries x classes,
no threshold/NMS, pycocotools COCOeval bbox). Works on any COCO-format detection dataset; category
names are prompted as the backend prompts labels (`TrafficLight` -> "traffic light").

  python -m evaluation.coco --coco-root DIR           # DIR/annotations/instances_val2017.json + DIR/val2017/
  python -m evaluation.coco --ann ANN.json --images IMG_DIR
  python -m evaluation.coco download --coco-root DIR  # fetch val2017 images + annotations first
  torchrun --nproc-per-node N -m evaluation.coco ...  # shard the images over N processes/GPUs
  python -m evaluation.coco ... --iou-type segm [--sam-model ID_OR_DIR]  # mask AP (box AP beside it)

Writes RUN_DIR/detections.json, metrics.json, per_class.csv and prints a summary. Rerunning the same
command continues an interrupted run. With --iou-type segm each detection's box is turned into a mask by
a SAM-family model (one image embedding per image, all its boxes in one batch, the mask cut to its box
+ 10%), stored as compressed RLE in detections.json `segmentation` and scored by COCOeval segm;
metrics.json keeps box AP at the top level and adds mask AP under "segm"."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evaluation.coco", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    data = p.add_argument_group("dataset (either --coco-root, or --ann with --images)")
    data.add_argument("--coco-root", metavar="DIR",
                      help="COCO root holding annotations/instances_val2017.json and val2017/ (as `download` makes)")
    data.add_argument("--ann", metavar="ANN.json", help="a COCO-format detection annotation file (any dataset)")
    data.add_argument("--images", metavar="IMG_DIR", help="directory the annotation file's image file_names are in")
    add_run_arguments(p, chunk_help="classes per prompt chunk (mmdetection's chunked_size, e.g. 40 for LVIS); "
                                    "default: as many as fit in 256 tokens (COCO's 80 fit in one caption). "
                                    "Changes results; recorded")
    add_mask_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    def load_for(args):
        def load():
            from .run import CocoScorer

            dataset = load_dataset(*resolve_paths(args.coco_root, args.ann, args.images))
            return dataset, CocoScorer(dataset, args.model)  # segm: runner.cli.resolve_settings

        return load

    return dataset_main(argv, build_parser, download_main, load_for)
