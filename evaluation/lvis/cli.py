"""Command line of `python -m evaluation.lvis` (evaluate) and `python -m evaluation.lvis download`."""
from __future__ import annotations

import argparse

from evaluation.protocols import GROUNDING_DINO_PROTOCOL
from evaluation.runner.cli import add_mask_arguments, add_run_arguments, dataset_main, positive_int

from .dataset import SPLITS, load_lvis, resolve_paths
from .download import main as download_main
from .scoring import FIXED_AP_TOPK

# The run (.run) is imported inside load(): it imports torch, and the THP lever must be set before that
# (runner.cli.dataset_main sets it); a download answers without loading the model code.

DESCRIPTION = f"""\
Zero-shot LVIS v1 evaluation of a Grounding DINO checkpoint by mmdetection's protocol: the 1,203
category names cleaned as mmdetection does (`ball_(sports)` -> "ball"), prompted in chunks of
{GROUNDING_DINO_PROTOCOL.lvis_chunk_size}, each chunk's own top-300 per image, Fixed AP (top {FIXED_AP_TOPK} detections per
category over the split, no per-image cap) with APr/APc/APf by the LVIS rules (federated negatives,
not-exhaustive categories).

  python -m evaluation.lvis download --lvis-root DIR --split minival   # annotations + the split's images
  python -m evaluation.lvis --lvis-root DIR --split minival            # or --split val (val1.0)
  python -m evaluation.lvis --ann LVIS.json --images COCO_ROOT         # any LVIS-format file
  torchrun --nproc-per-node N -m evaluation.lvis ...                   # shard the images over N GPUs

Writes RUN_DIR/detections.npz (the scored detections), metrics.json, per_class.csv and prints a
summary beside the published figures. Rerunning the same command continues an interrupted run."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evaluation.lvis", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    data = p.add_argument_group("dataset (either --lvis-root with --split, or --ann with --images)")
    data.add_argument("--lvis-root", metavar="DIR",
                      help="holding annotations/<split file> and the COCO train2017/ val2017/ images (as `download` makes)")
    data.add_argument("--split", choices=sorted(SPLITS), default="minival",
                      help="LVIS v1 minival (5,000 images, GLIP's list) or val (val1.0, 19,809 images); default minival")
    data.add_argument("--ann", metavar="LVIS.json", help="an LVIS-format annotation file")
    data.add_argument("--images", metavar="COCO_ROOT", help="directory holding train2017/ and val2017/ (the images' files)")
    add_run_arguments(p, chunk_help=f"categories per prompt chunk of a Grounding DINO caption (mmdetection's "
                                    f"chunked_size; default {GROUNDING_DINO_PROTOCOL.lvis_chunk_size}, the published figures' setting). "
                                    "Changes results; recorded. SAM 3 prompts each category alone: not used")
    add_mask_arguments(p)
    p.add_argument("--topk", type=positive_int, default=FIXED_AP_TOPK, metavar="K",
                   help=f"Fixed AP's detections per category over the split (default {FIXED_AP_TOPK}, the protocol's)")
    return p


def main(argv: list[str] | None = None) -> int:
    def load_for(args):
        def load():
            from .run import LvisScorer

            dataset = load_lvis(*resolve_paths(args.lvis_root, args.split, args.ann, args.images))
            return dataset, LvisScorer(dataset, args.model, args.topk)

        return load

    return dataset_main(argv, build_parser, download_main, load_for)
