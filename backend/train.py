"""`python -m backend.train`: fine-tune Grounding DINO on a Label Studio project or a COCO-format dataset.

    python -m backend.train --ann ANN.json --images IMG_DIR --out MODEL_DIR [--model BASE] [--steps 1000] ...
    python -m backend.train --project 12 --out MODEL_DIR ...          (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY)
    python -m backend.train --project 12 --thresholds-only            (STATE_DIR or --state-dir)
    torchrun --nproc-per-node 4 -m backend.train --ann ... --out ...  (several GPUs or nodes; gloo on the CPU)

MODEL_DIR is a model directory that GROUNDING_DINO_MODEL and `python -m evaluation.coco --model` load as
any checkpoint. Exit status 0 when done, 2 on bad input or settings (one `error:` line), 130 when interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path

from runtime.allocator import enable_thp_allocation
from runtime.distributed import Dist
from runtime.errors import InputError

from .training.errors import NotEnoughAnnotations, TrainingCancelled, TrainingError
from .training.threads import choose_threads

# The detection core, the settings, the devices and the training modules are imported inside the
# functions that use them: they import torch, the THP lever (runtime.allocator) must be set before that,
# and --help answers without loading them (nor the Label Studio SDK).


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m backend.train", description=__doc__.split("\n\n")[0])
    src = p.add_argument_group("data (one of)")
    src.add_argument("--project", type=int,
                     help="Label Studio project id: its annotated tasks, its label config's phrases")
    src.add_argument("--ann", help="COCO-format annotation file (category names are the phrases)")
    src.add_argument("--images", help="image directory of --ann")
    p.add_argument("--model", default=None,
                   help="base checkpoint, hub id or directory (default: MODEL, alias GROUNDING_DINO_MODEL, or grounding-dino-tiny)")
    p.add_argument("--out", help="output model directory (also holds checkpoint/, heldout/ and training.json)")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps (default 1000)")
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate of the heads and fusion layers (default 1e-4)")
    p.add_argument("--encoder-lr-factor", type=float, default=0.1,
                   help="image backbone and text encoder learn at lr x this (default 0.1)")
    p.add_argument("--batch-size", type=int, default=4, help="images per step over all processes (default 4)")
    p.add_argument("--image-size", type=int, default=None,
                   help="shortest image edge for training, saved into the output's processor (default: the base model's)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="fraction of images held out to score before/after AP (default 0.2; 0 = none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the batch order and dropout (default 0)")
    p.add_argument("--no-dropout", action="store_true",
                   help="train without dropout and drop-path (deterministic per image: N processes = 1 process)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints (default 100)")
    p.add_argument("--no-resume", action="store_true", help="discard a checkpoint in --out and start over")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N (default auto)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per process on the CPU (default: 1 when the CPU is busy, else cores / processes)")
    p.add_argument("--min-tasks", type=int, default=20,
                   help="--project: annotated tasks needed to fine-tune (default 20)")
    p.add_argument("--thresholds-only", action="store_true",
                   help="--project: learn per-label thresholds from reviewed tasks into STATE_DIR, no fine-tuning")
    p.add_argument("--min-reviewed-boxes", type=int, default=20,
                   help="reviewed boxes a label needs before its threshold moves (default 20)")
    p.add_argument("--state-dir", default=None, help="--thresholds-only: state directory (default: STATE_DIR)")
    p.add_argument("--progress-file", default=None, help="append progress events as JSON lines to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    enable_thp_allocation()  # before anything imports torch (the speed lever of runtime.allocator)
    args = build_parser().parse_args(argv)
    from detection import ModelLoadError

    try:
        check_args(args)
        if args.thresholds_only:
            return thresholds_only(args)
        return train(args)
    except (TrainingError, InputError, ModelLoadError, ValueError) as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    except (KeyboardInterrupt, TrainingCancelled):
        print(f"interrupted: rerun the same command to resume from the last checkpoint in {args.out}", file=sys.stderr)
        return 130


def check_args(args) -> None:
    if args.project is not None and (args.ann or args.images):
        raise TrainingError("give either --project ID or --ann FILE with --images DIR, not both")
    if args.project is None and not (args.ann and args.images):
        raise TrainingError("give --project ID (a Label Studio project) or both --ann FILE and --images DIR")
    if args.thresholds_only and args.project is None:
        raise TrainingError("--thresholds-only learns from a Label Studio project's reviewed tasks: give --project ID")
    if not args.thresholds_only and not args.out:
        raise TrainingError("give --out DIR, the directory the fine-tuned model is written to")


def _settings():
    from .settings import Settings

    return Settings.from_env()


def _client(settings):
    from label_studio_sdk import LabelStudio

    if not settings.label_studio_url or not settings.label_studio_api_key:
        raise TrainingError("set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (Label Studio's address and an API key)")
    return LabelStudio(base_url=settings.label_studio_url, api_key=settings.label_studio_api_key, timeout=300)


def thresholds_only(args) -> int:
    from backend.serving.devices import device_names, load_on
    from .training.store import ProjectStore
    from .training.tasks import fetch_project
    from .training.thresholds import configured_thresholds, learn_thresholds

    state_dir = args.state_dir or os.environ.get("STATE_DIR")
    if not state_dir:
        raise TrainingError("set STATE_DIR (or --state-dir DIR): the directory where the backend keeps what it learns")
    settings = replace(_settings(), state_dir=state_dir)
    snapshot = fetch_project(_client(settings), args.project)
    # The model serving the project and its own thresholds (the server's rule), so that the version is the
    # one the backend stamps; one device is enough to compute it.
    served = ProjectStore(state_dir).served(str(args.project), settings.model)
    predictor = load_on(replace(settings, model=served.model), device_names(settings)[0])
    version = predictor.model_version(snapshot.label_config, served.applied())
    configured = configured_thresholds(predictor.mapping(snapshot.label_config), predictor.box_threshold)
    learned = learn_thresholds(snapshot.tasks, str(args.project), version, configured, args.min_reviewed_boxes,
                               model=served.model, earlier=served.applied())
    for warning in learned.warnings():
        print(warning)
    path = ProjectStore(state_dir).save_thresholds(learned)
    print(learned.describe())
    print(f"saved to {path}")
    return 0


def train(args) -> int:
    from detection import resolve_device
    from .settings import model_setting
    from .training.data import load_training_data
    from .training.trainer import Trainer, TrainConfig

    import torch

    dist = Dist.from_env(args.device)
    try:
        threads = choose_threads(args.threads, resolve_device(dist.device_for(args.device)).type, dist.world_size)
        if threads:
            torch.set_num_threads(threads)
        out = Path(args.out).expanduser().resolve()
        if args.project is not None:
            ann, images = export_labelstudio(args, out, dist)
        else:
            ann, images = args.ann, args.images
        data = load_training_data(ann, images)
        config = TrainConfig(
            model=args.model or model_setting(os.environ), out=out, steps=args.steps,
            lr=args.lr, batch_size=args.batch_size, image_size=args.image_size, val_fraction=args.val_fraction,
            seed=args.seed, checkpoint_every=args.checkpoint_every, resume=not args.no_resume, device=args.device,
            encoder_lr_factor=args.encoder_lr_factor, dropout=not args.no_dropout)
        if dist.is_main:
            print(f"fine-tuning {config.model} on {len(data.image_ids)} images of {len(data.classes)} classes "
                  f"({', '.join(c.name for c in data.classes)}); {dist.world_size} process(es), "
                  f"{torch.get_num_threads()} thread(s) each", file=sys.stderr)
        progress = ProgressFile(args.progress_file) if (args.progress_file and dist.is_main) else None
        outcome = Trainer(config, data, dist, progress=progress, show_bar=not args.no_progress).run()
    finally:
        dist.close()
    if outcome is not None:
        print(outcome.summary())
        print(f"model directory: {outcome.model_dir} (load it with GROUNDING_DINO_MODEL={outcome.model_dir}); "
              f"report: {outcome.model_dir / 'training.json'}")
    return 0


def export_labelstudio(args, out: Path, dist) -> tuple[Path, Path]:
    """Rank 0 writes the project's annotated tasks as a COCO dataset under OUT/data; the others wait."""
    data_dir = out / "data"
    error = None
    if dist.is_main:
        try:
            from labelstudio.media import MediaFetcher
            from .training.project_data import export_project
            from .training.tasks import fetch_project

            settings = _settings()
            snapshot = fetch_project(_client(settings), args.project)
            annotated = len(snapshot.annotated_tasks())
            if annotated < args.min_tasks:
                raise NotEnoughAnnotations(f"project {args.project} has {annotated} annotated tasks; at least "
                                           f"{args.min_tasks} are needed to fine-tune (--min-tasks)")
            fetcher = MediaFetcher(settings)
            report = export_project(snapshot, data_dir, lambda url, task_id: fetcher.fetch(
                url, task_id=task_id, hostname=settings.label_studio_url, access_token=settings.label_studio_api_key))
            print(report.describe(), file=sys.stderr)
        except TrainingError as exc:
            error = str(exc)
    error = dist.agree(error)
    if error:
        raise TrainingError(error)
    return data_dir / "annotations.json", data_dir / "images"


class ProgressFile:
    """Progress events as JSON lines (for a parent process: the backend's training job)."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, progress) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(progress)) + "\n")


if __name__ == "__main__":
    sys.exit(main())
