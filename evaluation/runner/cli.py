"""The command-line options and start-up shared by `python -m evaluation.coco` and `python -m evaluation.lvis`."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

from evaluation.protocols import protocol_for
from runtime.allocator import enable_thp_allocation
from runtime.distributed import Dist
from runtime.errors import InputError

# The detection core, transformers and the run (.run) are imported inside the functions: they import
# torch, and the THP lever (runtime.allocator) must be set before that (dataset_main sets it); a
# download answers without loading the model code.


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_run_arguments(p: argparse.ArgumentParser, chunk_help: str, chunk_default: int | None = None) -> None:
    """The model and run options every evaluation command takes."""
    from detection import DEFAULT_MODEL

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
    p.add_argument("--num-select", type=positive_int, default=None, metavar="K",
                   help="detections kept per image: top-K over queries x classes (default: the model family's "
                        "protocol, evaluation/protocols.py: Grounding DINO 300 per prompt chunk; SAM 3 100 per "
                        "image on COCO, 300 on LVIS)")
    p.add_argument("--limit", type=positive_int, metavar="N",
                   help="only the first N images (by image id), for a quick check; scored on those images only")
    p.add_argument("--chunk-size", type=positive_int, default=chunk_default, metavar="N", help=chunk_help)
    p.add_argument("--no-resume", action="store_true",
                   help="discard results already in RUN_DIR and start over (default: continue them; a rerun "
                        "with different settings into the same RUN_DIR is refused)")


def add_mask_arguments(p: argparse.ArgumentParser) -> None:
    """Instance masks (mask AP): the model's own (SAM 3), or each detection's box turned into a mask by a
    SAM-family model (evaluation.coco, evaluation.lvis)."""
    from detection.masks import DEFAULT_SAM_MODEL

    p.add_argument("--iou-type", choices=["bbox", "segm"], default=None,
                   help="bbox: box AP. segm: mask AP (COCOeval segm) with box AP of the same detections beside "
                        "it; the masks are the model's own (SAM 3) or each box turned into a mask by --sam-model "
                        "(Grounding DINO). Default: segm for a model with its own masks on a dataset with "
                        "instance masks, else bbox")
    p.add_argument("--sam-model", metavar="ID_OR_DIR",
                   help=f"SAM-family hub id or local directory for --iou-type segm with a box-only model (SAM, "
                        f"SAM-HQ, SAM 2 / 2.1; default {DEFAULT_SAM_MODEL}); runs on --device with --dtype. "
                        "Refused with a model that makes its own masks (SAM 3)")


def dataset_main(argv: list[str] | None, build_parser, download_main, load_for) -> int:
    """`python -m evaluation.<dataset> [download ...]`: the memory lever first, then either the dataset's
    download or a run (`load_for(args)` -> the `load()` of `run_command`)."""
    enable_thp_allocation()  # before anything imports torch
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["download"]:
        return download_main(argv[1:])
    args = build_parser().parse_args(argv)
    return run_command(args, argv, load_for(args))


def exit_code(action: Callable[[], int]) -> int:
    """`action()`'s exit code; an InputError is one line on stderr ("error: ...") and exit code 2."""
    try:
        return action()
    except InputError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)  # one line, whatever the cause
        return 2


def run_command(args, argv: list[str], load: Callable[[], tuple[object, object]]) -> int:
    """Start a run: torchrun group, dataset and scorer (`load()`), detector, run directory; then evaluate.

    Every rank loads and checks the same things; the first error on any rank stops all of them with
    one line (exit code 2).
    """
    return exit_code(lambda: _run(args, argv, load))


def _run(args, argv, load) -> int:
    from transformers.utils import logging as hf_logging

    from detection import DetectorConfig, ModelLoadError, PromptError, load_detector
    from detection.masks import MaskModelLoadError

    from .run import default_run_dir, evaluate

    hf_logging.disable_progress_bar()  # ours is the progress bar; keeps errors to their one line
    try:
        dist = Dist.from_env(args.device)
    except Exception as exc:  # bad rendezvous settings: say so in one line
        raise InputError(f"could not join the torchrun process group ({exc})") from None
    try:
        error, dataset, scorer, detector, masker, settings, load_s = None, None, None, None, None, None, 0.0
        try:
            check_mask_arguments(args)
            dataset, scorer = load()
            t0 = time.perf_counter()
            detector = load_detector(DetectorConfig(model=args.model, device=dist.device_for(args.device),
                                                    dtype=args.dtype))
            settings = resolve_settings(args, detector.family, scorer)
            detector.prompt(scorer.classes(), settings.chunk_size)  # a label set that cannot be prompted
            if settings.sam_model:
                masker = _load_masker(settings, dist.device_for(args.device))
            load_s = time.perf_counter() - t0
        except (InputError, ModelLoadError, MaskModelLoadError, PromptError, ValueError) as exc:
            error = str(exc)
        error = dist.agree(error)
        if error:
            raise InputError(error)
        run_dir = Path(dist.broadcast(str(Path(args.out) if args.out else default_run_dir(args.model, dataset))))
        evaluate(dataset, scorer, settings, detector, run_dir.resolve(), dist, load_s, argv, masker)
        return 0
    finally:
        dist.close()


def check_mask_arguments(args) -> None:
    """--sam-model only makes masks in a segm run (checked before anything loads)."""
    if getattr(args, "sam_model", None) and getattr(args, "iou_type", None) != "segm":
        raise InputError("--sam-model is used only with --iou-type segm (masks): add --iou-type segm, "
                         "or drop --sam-model for box AP")


def resolve_settings(args, family, scorer):
    """The run's settings: the command line's, with what it left open taken from the family's protocol
    (evaluation/protocols.py); options that mean nothing for the family are refused, naming it."""
    from detection.masks import DEFAULT_SAM_MODEL

    from .run import RunSettings

    protocol = protocol_for(family)
    lvis = getattr(scorer, "benchmark_kind", "coco") == "lvis"
    chunk_size = args.chunk_size
    if not protocol.chunks_prompts:
        if chunk_size is not None:
            raise InputError(f"--chunk-size splits a Grounding DINO caption; {args.model} is a {family.title} "
                             "checkpoint, which prompts each category on its own: drop --chunk-size")
    elif chunk_size is None and lvis:
        chunk_size = protocol.lvis_chunk_size
    num_select = args.num_select or (protocol.lvis_num_select if lvis else protocol.num_select)
    own_masks = family.capabilities.own_masks
    iou_type, sam_model = getattr(args, "iou_type", None), getattr(args, "sam_model", None)
    if own_masks and sam_model:
        raise InputError(f"--sam-model: {args.model} is a {family.title} checkpoint, which makes its own masks "
                         "(no SAM stage): drop --sam-model")
    if iou_type is None:
        iou_type = "segm" if own_masks and getattr(scorer, "has_masks", lambda: False)() else "bbox"
    if iou_type == "segm":
        scorer.use_masks()  # refuses a dataset without instance masks, saying what to change
        if not own_masks:
            sam_model = sam_model or DEFAULT_SAM_MODEL
    return RunSettings(model=args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                       num_select=num_select, limit=args.limit, chunk_size=chunk_size, resume=not args.no_resume,
                       out=args.out, iou_type=iou_type, sam_model=sam_model, own_masks=own_masks and iou_type == "segm",
                       protocol=protocol.as_dict())


def _load_masker(settings, device: str):
    from detection.masks import MaskModel, MaskModelConfig

    return MaskModel.load(MaskModelConfig(model=settings.sam_model, device=device, dtype=settings.dtype))
