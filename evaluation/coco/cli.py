"""Command line of `python -m evaluation.coco` (evaluate) and `python -m evaluation.coco download`."""
from __future__ import annotations

import argparse
import sys
import time

from .dataset import InputError

DESCRIPTION = """\
Zero-shot COCO-style evaluation of a Grounding DINO checkpoint by the official protocol
(caption "person . bicycle . ... .", mean token probability per class, top-300 over queries x classes,
no threshold/NMS, pycocotools COCOeval bbox). Works on any COCO-format detection dataset.

  python -m evaluation.coco --coco-root DIR           # DIR/annotations/instances_val2017.json + DIR/val2017/
  python -m evaluation.coco --ann ANN.json --images IMG_DIR
  python -m evaluation.coco download --coco-root DIR  # fetch val2017 images + annotations first
  torchrun --nproc-per-node N -m evaluation.coco ...  # shard the images over N processes/GPUs

Writes RUN_DIR/detections.json, metrics.json, per_class.csv and prints a summary. Rerunning the same
command continues an interrupted run."""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from backend.detection import DEFAULT_MODEL

    p = argparse.ArgumentParser(prog="python -m evaluation.coco", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    data = p.add_argument_group("dataset (either --coco-root, or --ann with --images)")
    data.add_argument("--coco-root", metavar="DIR",
                      help="COCO root holding annotations/instances_val2017.json and val2017/ (as `download` makes)")
    data.add_argument("--ann", metavar="ANN.json", help="a COCO-format detection annotation file (any dataset)")
    data.add_argument("--images", metavar="IMG_DIR", help="directory the annotation file's image file_names are in")
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="ID_OR_DIR",
                   help=f"hub model id or local directory saved with save_pretrained (default {DEFAULT_MODEL})")
    p.add_argument("--out", metavar="RUN_DIR",
                   help="run directory for results and resume state (default runs/<model>-<dataset>-<date>)")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="fp32 is the parity setting; bf16/fp16 (autocast) are recorded and flagged non-parity")
    p.add_argument("--batch-size", type=positive_int, default=1, metavar="N",
                   help="images per forward pass; 1 is the parity setting (padding in larger batches shifts "
                        "the features slightly; recorded and flagged non-parity)")
    p.add_argument("--num-select", type=positive_int, default=300, metavar="K",
                   help="detections kept per image (and per prompt chunk): top-K over queries x classes (default 300)")
    p.add_argument("--limit", type=positive_int, metavar="N",
                   help="only the first N images (by image id), for a quick check; scored on those images only")
    p.add_argument("--chunk-size", type=positive_int, metavar="N",
                   help="classes per prompt chunk (mmdetection's chunked_size, e.g. 40 for LVIS); default: as "
                        "many as fit in 256 tokens (COCO's 80 fit in one caption). Changes results; recorded")
    p.add_argument("--no-resume", action="store_true",
                   help="discard results already in RUN_DIR and start over (default: continue them; a rerun "
                        "with different settings into the same RUN_DIR is refused)")
    return p


def main(argv: list[str] | None = None) -> int:
    from backend.allocator import enable_thp_allocation

    enable_thp_allocation()  # before anything imports torch
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["download"]:
        from .download import main as download_main

        return download_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return _evaluate(args, argv)
    except InputError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)  # one line, whatever the cause
        return 2


def _evaluate(args, argv) -> int:
    from backend.detection import Detector, DetectorConfig, ModelLoadError, PromptError

    from .dataset import load_dataset, resolve_paths
    from .distributed import Dist
    from .run import Settings, default_run_dir, evaluate

    from pathlib import Path

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # ours is the progress bar; keeps errors to their one line
    try:
        dist = Dist.from_env(args.device)
    except Exception as exc:  # bad rendezvous settings: say so in one line
        raise InputError(f"could not join the torchrun process group ({exc})") from None
    try:
        settings = Settings(model=args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                            num_select=args.num_select, limit=args.limit, chunk_size=args.chunk_size,
                            resume=not args.no_resume, out=args.out)
        error, dataset, detector, load_s = None, None, None, 0.0
        try:
            dataset = load_dataset(*resolve_paths(args.coco_root, args.ann, args.images))
            t0 = time.perf_counter()
            detector = Detector.load(DetectorConfig(model=args.model, device=dist.device_for(args.device),
                                                    dtype=args.dtype))
            load_s = time.perf_counter() - t0
            detector.prompt(dataset.category_names, args.chunk_size)  # a label set that cannot be prompted
        except (InputError, ModelLoadError, PromptError, ValueError) as exc:
            error = str(exc)
        error = dist.agree(error)
        if error:
            raise InputError(error)
        run_dir = Path(dist.broadcast(str(Path(args.out) if args.out else default_run_dir(args.model, dataset))))
        evaluate(dataset, settings, detector, run_dir.resolve(), dist, load_s, argv)
        return 0
    finally:
        dist.close()
