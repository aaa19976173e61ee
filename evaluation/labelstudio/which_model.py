"""`python -m evaluation.labelstudio EXPORT.json --model A --model B ...`: the command around compare.py."""
from __future__ import annotations

import datetime
import os
import time
from pathlib import Path

import pandas as pd
from transformers.utils import logging as hf_logging

from detection import DetectorConfig, ModelLoadError, PromptError, load_detector
from evaluation.runner.run import library_versions
from runtime.errors import InputError

from .compare import ImageSource, ground_truth, recommend, run_model, score_run, write_comparison
from .export import is_mask_export, tasks_from_dicts
from .formats import read_export, require_annotated
from .target_options import TargetOptions


def image_source(args) -> ImageSource:
    if args.images:
        images = Path(args.images).expanduser().resolve()
        if not images.is_dir():
            raise InputError(f"--images {images}: not a directory")
        return ImageSource(images_dir=images)
    options = TargetOptions.from_options(args.label_studio_url, args.api_key, os.environ)
    if options.missing():
        raise InputError(f"--model runs the models on the tasks' images: give --images DIR, or {options.missing()} "
                         "to fetch them from Label Studio")
    return ImageSource(fetcher=options.media_fetcher())


def run_models(args, argv) -> int:
    if args.delete_cost < 0:
        raise InputError(f"--delete-cost must be >= 0, got {args.delete_cost}")
    if len(set(args.model)) != len(args.model):
        raise InputError("a --model is given twice: give each model once")
    t0 = time.perf_counter()
    export = Path(args.export).expanduser().resolve()
    exported = read_export(export)
    require_annotated(exported.tasks, str(export))
    tasks = [t for t in tasks_from_dicts(exported.tasks, str(export)) if t.annotation is not None]
    gt, labels = ground_truth(tasks)
    if not labels:
        raise InputError(f"{export}: the annotated tasks hold no regions to compare the models with")
    masks = is_mask_export(tasks)
    images = image_source(args)
    out = Path(args.out or f"runs/labelstudio-{export.stem}-models-{datetime.date.today():%Y%m%d}").resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the run directory {out} ({exc.strerror or exc}): choose another --out")
    images.check(tasks)  # every image there before a model loads
    hf_logging.disable_progress_bar()  # errors stay one line
    runs, tables = [], []
    for model in args.model:
        try:
            detector = load_detector(DetectorConfig(model=model, device=args.device, dtype=args.dtype))
            run = run_model(detector, model, tasks, labels, images, masks)
        except InputError:
            raise
        except (ModelLoadError, PromptError, ValueError) as exc:
            raise InputError(f"--model {model}: {exc}") from None
        runs.append(run)
        tables.append(score_run(gt, run, masks, args.iou, args.delete_cost))
        del detector  # one model in memory at a time
    table = pd.concat(tables, ignore_index=True)
    best = recommend(table, list(args.model))
    config = {"export": str(export), "export_format": exported.format, "models": list(args.model),
              "families": {r.model: r.family for r in runs}, "num_select": {r.model: r.num_select for r in runs},
              "images": args.images or "fetched from Label Studio", "iou": args.iou, "delete_cost": args.delete_cost,
              "iou_type": "segm" if masks else "bbox", "num_images": len(tasks), "image_ids": [t.id for t in tasks],
              "labels": labels, "device": args.device, "dtype": args.dtype, "versions": library_versions(),
              "command": argv, "timings": {"total_s": round(time.perf_counter() - t0, 3)}}
    write_comparison(out, gt, runs, table, best, config)
    print(f"Label Studio {exported.format} export {export}: {len(tasks)} annotated tasks, {len(args.model)} models")
    for r in best.itertuples():
        ap = "" if r.AP != r.AP else f", AP {100 * r.AP:.1f}"
        print(f"{r.label}: {r.model} at threshold {r.threshold:.2f} ({r.saved:g} regions saved{ap})")
    print(f"results in {out}/ (comparison.md, comparison.png, comparison.csv, recommendation.csv, metrics.json, "
          "models/*/detections.json)")
    return 0
