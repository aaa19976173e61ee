"""Fine-tune Grounding DINO on a COCO-format dataset with transformers' own loss.

One process, or several under torchrun (DDP; gloo on the CPU, nccl on GPUs) set up by the evaluation's
``Dist``. ``batch_size`` is the effective (global) batch: each of N ranks takes its 1/N of every batch,
and the loss is rescaled so that the averaged gradients equal one process's over the whole batch
(transformers normalises each rank's loss by that rank's own box count).
"""
from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from detection import (
    Detector, DetectorConfig, OfficialPreprocessing, build_prompt, load_checkpoint, resolve_device,
)
from runtime.distributed import Dist
from evaluation.runner.run import file_digest, library_versions
from runtime.files import atomic_write

from .batches import BatchBuilder, BatchSchedule
from .checkpoint import FINISHED_FILE, Checkpoints, step_seed
from .data import TrainingData
from .errors import TrainingCancelled, TrainingError
from .heldout import HeldoutScore, load_score, score_heldout
from .numbers import metric_change


@dataclass(frozen=True)
class TrainConfig:
    model: str  # base checkpoint: hub id or directory
    out: Path  # the fine-tuned model directory
    steps: int = 1000
    lr: float = 1e-4
    batch_size: int = 4  # effective batch over all ranks
    image_size: int | None = None  # shortest edge; None: the base processor's
    val_fraction: float = 0.2
    seed: int = 0
    checkpoint_every: int = 100
    resume: bool = True
    device: str = "auto"
    weight_decay: float = 1e-4
    # The image backbone and the text encoder learn at lr x this (mmdetection's Grounding DINO fine-tuning
    # configs use 0.1): they carry the pre-training that a few hundred images should not wash out.
    encoder_lr_factor: float = 0.1
    max_grad_norm: float = 0.1  # DINO's clip_max_norm
    # Dropout and drop-path as the checkpoint configures them. Off (the model runs in eval mode, which in
    # Grounding DINO changes nothing else: no batch norm), every image's forward is a function of the
    # weights alone, so N processes sharing a batch match one process exactly (with it, each rank draws
    # its own masks).
    dropout: bool = True

    def check(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise TrainingError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise TrainingError(f"--lr must be positive, got {self.lr}")
        if self.image_size is not None and not 32 <= self.image_size <= 4096:
            raise TrainingError(f"--image-size must be between 32 and 4096 pixels, got {self.image_size}")


@dataclass(frozen=True)
class Progress:
    phase: str  # "evaluating base model", "training", "saving", "evaluating fine-tuned model", "done"
    step: int = 0
    total: int = 0
    loss: float | None = None


@dataclass
class TrainingOutcome:
    model_dir: Path
    steps: int
    train_images: int
    heldout_images: int
    before: HeldoutScore | None
    after: HeldoutScore | None
    losses: list[float] = field(default_factory=list)

    @property
    def not_worse(self) -> bool | None:
        """Held-out AP of the fine-tuned model >= the base model's (None without a held-out part)."""
        if self.before is None or self.after is None:
            return None
        return self.after.ap >= self.before.ap

    def summary(self) -> str:
        if self.before is None or self.after is None:
            return f"fine-tuned {self.steps} steps on {self.train_images} images; no held-out images to score"
        b, a = self.before, self.after
        verdict = "not worse" if self.not_worse else "WORSE"
        return (f"held-out on {self.heldout_images} images: {metric_change('AP', b.ap, a.ap)} "
                f"({metric_change('AP50', b.ap50, a.ap50)}); the fine-tuned model is {verdict} than the base")


def training_size(image_processor, shortest_edge: int | None) -> dict:
    """The processor's resize for training: the given shortest edge, the longest scaled alike."""
    size = image_processor.size
    field = (lambda name: size.get(name)) if isinstance(size, dict) else (lambda name: getattr(size, name, None))
    base_short, base_long = field("shortest_edge"), field("longest_edge")
    if not base_short:
        raise TrainingError(f"the model's image processor resizes by {size}, not by a shortest edge: "
                            "--image-size cannot be applied to it")
    short = int(shortest_edge or base_short)
    return {"shortest_edge": short, "longest_edge": None if not base_long else int(round(short * base_long / base_short))}


def make_optimizer(model, config: TrainConfig) -> torch.optim.Optimizer:
    slow, fast = [], []
    encoders = (model.model.backbone, model.model.text_backbone)
    slow_ids = {id(p) for m in encoders for p in m.parameters()}
    for p in model.parameters():
        if p.requires_grad:
            (slow if id(p) in slow_ids else fast).append(p)
    return torch.optim.AdamW([{"params": fast, "lr": config.lr},
                              {"params": slow, "lr": config.lr * config.encoder_lr_factor}],
                             weight_decay=config.weight_decay)


class Trainer:
    """One fine-tuning run into ``config.out``; ``run()`` on every rank."""

    def __init__(self, config: TrainConfig, data: TrainingData, dist: Dist = Dist(),
                 progress: Callable[[Progress], None] | None = None, cancel: threading.Event | None = None,
                 show_bar: bool = True):
        config.check()
        self.config, self.data, self.dist = config, data, dist
        self.progress = progress or (lambda p: None)
        self.cancel = cancel
        self.show_bar = show_bar and dist.is_main
        self.device = resolve_device(dist.device_for(config.device))
        self.split = data.split(config.val_fraction, config.seed)

    def fingerprint(self, size: dict) -> dict:
        c = self.config
        ann = self.data.dataset.ann_path
        return {"model": c.model, "ann": str(ann), "ann_sha1": file_digest(ann),
                "images": str(self.data.dataset.images_dir), "image_size": size, "lr": c.lr, "batch_size": c.batch_size,
                "seed": c.seed, "val_fraction": c.val_fraction, "weight_decay": c.weight_decay,
                "encoder_lr_factor": c.encoder_lr_factor, "max_grad_norm": c.max_grad_norm, "dropout": c.dropout}

    def run(self) -> TrainingOutcome | None:
        """Train, save the model directory, score before/after; the outcome on rank 0, None elsewhere."""
        c, dist = self.config, self.dist
        out = Path(c.out)
        model, processor = load_checkpoint(c.model)  # the family's loader: refuses what would load wrong
        model.to(self.device)
        size = training_size(processor.image_processor, c.image_size)
        processor.image_processor.size = size  # saved with the model: it predicts at the size it learned
        prompt = build_prompt(processor.tokenizer, self.data.class_phrases,
                              max_text_len=int(getattr(model.config, "max_text_len", 256)))
        builder = BatchBuilder(OfficialPreprocessing.from_image_processor(processor.image_processor, c.model), prompt)
        schedule = BatchSchedule(self.split.train, len(prompt.chunks), c.batch_size, c.seed)
        if schedule.batch_size % dist.world_size:
            raise TrainingError(f"the batch of {schedule.batch_size} images cannot be shared by {dist.world_size} "
                                "processes: use a --batch-size that is a multiple of the number of processes")
        checkpoints = Checkpoints(out, self.fingerprint(size))
        error = None
        if dist.is_main:
            try:
                out.mkdir(parents=True, exist_ok=True)
                checkpoints.prepare(c.resume)
            except (TrainingError, OSError) as exc:
                error = str(exc)
        error = dist.agree(error)
        if error:
            raise TrainingError(error)

        before = self._score(c.model, out / "heldout" / "before", "evaluating base model")
        losses = self._train(model, builder, schedule, checkpoints)
        self.progress(Progress("saving", c.steps, c.steps, losses[-1] if losses else None))
        if dist.is_main:
            model.save_pretrained(out)
            processor.save_pretrained(out)
        dist.barrier()
        del model
        after = self._score(str(out), out / "heldout" / "after", "evaluating fine-tuned model", cached=False)
        if not dist.is_main:
            return None
        outcome = TrainingOutcome(out, c.steps, len(self.split.train), len(self.split.heldout), before, after, losses)
        self._write_report(outcome, checkpoints, size)
        checkpoints.discard()
        self.progress(Progress("done", c.steps, c.steps, losses[-1] if losses else None))
        return outcome

    # ----- steps ------------------------------------------------------------------------------

    def _train(self, model, builder: BatchBuilder, schedule: BatchSchedule, checkpoints: Checkpoints) -> list[float]:
        c, dist = self.config, self.dist
        optimizer = make_optimizer(model, c)
        start, losses = self._resume(model, optimizer, checkpoints)
        net = model
        if dist.enabled:
            # transformers' loss leaves some parameters without a gradient (the two-stage proposal heads:
            # its encoder loss is computed on detached proposals; Swin's final norm): DDP must expect that.
            net = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                          find_unused_parameters=True)
        model.train(c.dropout)
        bar = tqdm(total=c.steps, initial=min(start, c.steps), desc="fine-tuning", unit="step",
                   disable=not self.show_bar, dynamic_ncols=True, file=sys.stderr)
        batches = self._prefetched(builder, schedule, start)
        try:
            for step, inputs in batches:
                if self.cancel is not None and self.cancel.is_set():
                    raise TrainingCancelled(f"cancelled at step {step} of {c.steps}")
                torch.manual_seed(step_seed(c.seed, step, dist.rank))
                value = self._step(net, model, optimizer, inputs)
                losses.append(value)
                bar.update(1)
                bar.set_postfix(loss=f"{value:.3f}", mean100=f"{sum(losses[-100:]) / len(losses[-100:]):.3f}")
                self.progress(Progress("training", step + 1, c.steps, value))
                if dist.is_main and ((step + 1) % c.checkpoint_every == 0 or step + 1 == c.steps):
                    checkpoints.save(step + 1, model, optimizer, losses)
        finally:
            batches.close()
            bar.close()
        dist.barrier()  # every rank has stepped; rank 0 has written the last checkpoint
        model.eval()
        return losses

    def _resume(self, model, optimizer, checkpoints: Checkpoints) -> tuple[int, list[float]]:
        state = checkpoints.load(map_location=self.device)
        if state is None:
            return 0, []
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["step"])
        if self.dist.is_main:
            print(f"resuming from step {start} of {self.config.steps} ({checkpoints.path})", file=sys.stderr)
        return start, list(state["losses"])[:start]

    def _prefetched(self, builder: BatchBuilder, schedule: BatchSchedule, start: int):
        """(step, model inputs) from ``start`` on; the next batch is decoded and resized in a worker thread
        while the model runs (the batches hold no randomness, so this changes nothing but the time)."""
        dist, per_rank = self.dist, schedule.batch_size // self.dist.world_size

        def make(step: int) -> dict:
            chunk, ids = schedule.batch(step)
            ids = ids[dist.rank * per_rank : (dist.rank + 1) * per_rank]
            return builder.build([self.data.load_image(i) for i in ids], [self.data.targets[i] for i in ids],
                                 chunk, self.device)

        pool = ThreadPoolExecutor(max_workers=1)
        try:
            pending = pool.submit(make, start) if start < self.config.steps else None
            for step in range(start, self.config.steps):
                inputs = pending.result()
                if step + 1 < self.config.steps:
                    pending = pool.submit(make, step + 1)
                yield step, inputs
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _step(self, net, model, optimizer, inputs: dict) -> float:
        """One optimizer step; the batch's loss over all ranks."""
        c, dist = self.config, self.dist
        local_boxes = sum(len(t["boxes"]) for t in inputs["labels"])
        total_boxes = sum(dist.gather(local_boxes))
        try:
            loss = net(**inputs).loss
        except RuntimeError as exc:
            if "selected index k out of range" in str(exc):  # fewer image features than queries
                raise TrainingError(
                    f"--image-size {c.image_size} is too small for this model: its {model.config.num_queries} "
                    "queries need more image features than such images give; use a larger --image-size") from None
            raise
        # transformers divides each rank's loss by max(1, its own box count); DDP averages over ranks.
        scaled = loss * (max(local_boxes, 1) * dist.world_size / max(total_boxes, 1))
        optimizer.zero_grad(set_to_none=True)
        scaled.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), c.max_grad_norm)
        optimizer.step()
        return sum(dist.gather(float(scaled.detach()))) / dist.world_size

    # ----- held-out ---------------------------------------------------------------------------

    def _score(self, model: str, run_dir: Path, phase: str, cached: bool = True) -> HeldoutScore | None:
        if not self.split.heldout:
            return None
        dist = self.dist
        known = load_score(run_dir) if (cached and dist.is_main) else None
        if dist.broadcast(known is not None):
            return known
        self.progress(Progress(phase))
        detector = Detector.load(DetectorConfig(model=model, device=str(self.device)))
        try:
            return score_heldout(detector, model, self.data, self.split.heldout, dist, run_dir)
        finally:
            del detector

    def _write_report(self, outcome: TrainingOutcome, checkpoints: Checkpoints, size: dict) -> None:
        report = {
            "base_model": self.config.model, "model_dir": str(outcome.model_dir),
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self.config).items()},
            "image_size": size, "world_size": self.dist.world_size, "device": str(self.device),
            "threads": torch.get_num_threads(), "steps": outcome.steps,
            "classes": [asdict(cls) for cls in self.data.classes],
            "train_image_ids": list(self.split.train), "heldout_image_ids": list(self.split.heldout),
            "heldout": {"before": outcome.before.as_dict() if outcome.before else None,
                        "after": outcome.after.as_dict() if outcome.after else None,
                        "not_worse": outcome.not_worse},
            "summary": outcome.summary(), "losses": outcome.losses, "fingerprint": checkpoints.fingerprint,
            "versions": library_versions(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write(Path(outcome.model_dir) / FINISHED_FILE, json.dumps(report, indent=2, default=str))
