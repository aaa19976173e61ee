"""The backend's training job for one project: thresholds, then fine-tuning in a subprocess.

    job = TrainingJob(project_id, snapshot_source, model_version, configured, fetch_image, config,
                      served_model=..., served_thresholds=...)
    result = job.run(cancel_event, progress_callback)      # blocking: run it in a background thread

1. Per-label thresholds of the *served* model from the tasks reviewed against ``model_version``.
2. With at least ``min_annotated_tasks`` annotated tasks: the project is written as a COCO dataset
   (``STATE_DIR/projects/<id>/data``, images kept for the next job) and ``python -m backend.train`` fine-tunes
   the base model in a subprocess (its own memory and threads; the server keeps serving; cancelling
   terminates it) into ``STATE_DIR/projects/<id>/models/<name>``. Progress comes back through
   ``--progress-file``, the log goes to ``<model dir>/train.log``.
3. The fine-tuned model's *own* thresholds, from its detections on the held-out images (labelling mode).
4. It is adopted when its held-out AP is not worse than the base model's and, at its own thresholds, it
   shows boxes on the held-out images (an adopted model never pre-labels nothing).

Nothing is written to the served state until the end: a cancelled or failed job changes nothing, a
finished one commits its thresholds and model at once (``ProjectStore.commit``).
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from detection import Detector, DetectorConfig, resolve_device

from .data import load_training_data
from .errors import NotEnoughAnnotations, TrainingCancelled, TrainingError
from .heldout import heldout_ground_truth, labelled_detections
from .numbers import metric_change
from .project_data import FetchImage, export_project
from .store import ProjectStore, TrainedModel
from .tasks import ProjectSnapshot
from .thresholds import EARLIER, HELDOUT_FLOOR, LearnedThresholds, learn_heldout_thresholds, learn_thresholds

REPO_ROOT = Path(__file__).resolve().parents[2]
# Defaults when TRAIN_STEPS / TRAIN_IMAGE_SIZE are not set. 1,000 steps at the model's own 800 px took
# about 2 h on a CPU (~7.5 s a step); 200 steps at 512 px take about 1/12 of that.
GPU_DEFAULTS = (1000, None)
CPU_DEFAULTS = (200, 512)


@dataclass(frozen=True)
class TrainingJobConfig:
    state_dir: Path
    base_model: str
    steps: int = 1000
    lr: float = 1e-4
    batch_size: int = 4
    image_size: int | None = None
    val_fraction: float = 0.2
    seed: int = 0
    checkpoint_every: int = 100
    device: str = "auto"
    threads: int | None = None  # None: 1 on the CPU, where the server competes for the cores (threads.py)
    min_annotated_tasks: int = 20
    min_reviewed_boxes: int = 20
    nms_iou: float | None = None  # the server's NMS_IOU: held-out boxes as the server shows them
    device_defaults: tuple[str, ...] = ()  # which of steps / image_size are the device's defaults (plan text)
    # Why the served model cannot be fine-tuned (its family: SAM 3), or None: the job then learns thresholds
    # only and says this sentence in its result.
    not_tunable: str | None = None

    @classmethod
    def for_device(cls, state_dir, base_model: str, device: str, steps: int | None = None,
                   image_size: int | None = None, **kwargs) -> "TrainingJobConfig":
        """Steps and image size as set, else the defaults of the device that trains (CPU_DEFAULTS on the CPU)."""
        default_steps, default_size = CPU_DEFAULTS if _on_cpu(device) else GPU_DEFAULTS
        chosen = tuple(name for name, value in (("steps", steps), ("image_size", image_size)) if value is None)
        return cls(state_dir=Path(state_dir), base_model=base_model, device=device,
                   steps=default_steps if steps is None else steps,
                   image_size=default_size if image_size is None else image_size, device_defaults=chosen, **kwargs)

    def plan(self) -> str:
        """What fine-tuning will do and which settings make it shorter, for the job's message."""
        on = "the CPU" if _on_cpu(self.device) else self.device
        size = f"{self.image_size} px" if self.image_size else "the model's own image size"
        defaults = {"steps": "TRAIN_STEPS", "image_size": "TRAIN_IMAGE_SIZE"}
        named = " and ".join(defaults[d] for d in self.device_defaults)
        source = f" (the defaults for {on}: set {named} to choose)" if named else ""
        return (f"fine-tuning {self.steps:,} steps at {size} on {on}{source}; fewer TRAIN_STEPS or a smaller "
                "TRAIN_IMAGE_SIZE make it shorter")


@dataclass(frozen=True)
class JobProgress:
    phase: str  # reading project, learning thresholds, fetching images, evaluating base model, training, ...
    step: int = 0
    total: int = 0
    loss: float | None = None
    message: str = ""


@dataclass
class TrainingResult:
    project: str
    thresholds: LearnedThresholds  # the served model's, from its reviewed tasks
    model: TrainedModel | None = None  # the fine-tuned model, when fine-tuning ran
    model_thresholds: LearnedThresholds | None = None  # the fine-tuned model's own, from its held-out detections
    adopted: bool = False  # recorded as the project's model
    why_not: str = ""  # why a fine-tuned model was not adopted
    notes: list[str] = field(default_factory=list)
    statement: str | None = None  # said first (a model this backend cannot fine-tune: thresholds only)

    @property
    def model_dir(self) -> Path | None:
        return Path(self.model.model_dir) if self.model else None

    def summary(self) -> str:
        learned = self.thresholds.learned_labels
        lines = [self.statement] if self.statement else []
        lines += [f"thresholds learned for {len(learned)} of {len(self.thresholds.labels)} labels"
                 + (f" ({', '.join(learned)})" if learned else "")]
        # Still applied: without this, "learned for 0 of 2" after a second run reads as thresholds dropped.
        earlier = [f"{label} {t.threshold:.2f}" for label, t in sorted(self.thresholds.labels.items())
                   if t.source == EARLIER]
        if earlier:
            lines.append(f"kept from an earlier training (too little new evidence to move them): {', '.join(earlier)}")
        lines += self.thresholds.warnings()
        if self.model:
            verdict = ("now serving the project" if self.adopted else f"not adopted ({self.why_not})")
            lines.append(f"fine-tuned model {self.model.name}: {heldout_comparison(self.model)}; {verdict}")
            if self.model_thresholds is not None:
                own = self.model_thresholds.learned_labels
                lines.append(f"its own thresholds, from {self.model_thresholds.reviewed_tasks} held-out images: "
                             f"learned for {len(own)} of {len(self.model_thresholds.labels)} labels"
                             + (f" ({', '.join(own)})" if own else ""))
                lines += self.model_thresholds.warnings()
        return "; ".join(lines + self.notes)


def heldout_comparison(model: TrainedModel) -> str:
    """``"held-out AP 0.014 -> 0.000, AP50 0.10 -> 0.00"``: enough digits to carry the comparison."""
    if model.ap_before is None or model.ap_after is None:
        return "no held-out tasks to compare"
    text = "held-out " + metric_change("AP", model.ap_before, model.ap_after)
    if model.ap50_before is not None and model.ap50_after is not None:
        text += ", " + metric_change("AP50", model.ap50_before, model.ap50_after)
    return text


class TrainingJob:
    def __init__(self, project_id, snapshot_source: Callable[[], ProjectSnapshot], model_version: str,
                 configured_thresholds: Mapping[str, float], fetch_image: FetchImage, config: TrainingJobConfig,
                 served_model: str | None = None, served_thresholds: Mapping[str, float] | None = None):
        """``snapshot_source`` reads the project (``lambda: fetch_project(client, id)``); ``model_version`` is
        the version the project is served with now, by ``served_model`` (default: the base model) with its
        learned ``served_thresholds``; ``configured_thresholds`` are the label config's (control or
        BOX_THRESHOLD); ``fetch_image(url, task_id) -> bytes`` reads a task's image."""
        self.project = str(project_id)
        self.snapshot_source, self.model_version = snapshot_source, model_version
        self.configured = dict(configured_thresholds)
        self.served_model = served_model or config.base_model
        self.served_thresholds = dict(served_thresholds or {})
        self.fetch_image, self.config = fetch_image, config
        self.store = ProjectStore(config.state_dir)

    def run(self, cancel_event: threading.Event | None = None,
            progress_callback: Callable[[JobProgress], None] | None = None) -> TrainingResult:
        cancel = cancel_event or threading.Event()
        report = progress_callback or (lambda p: None)
        c = self.config

        report(JobProgress("reading project"))
        snapshot = self.snapshot_source()
        self._check(cancel)
        report(JobProgress("learning thresholds"))
        thresholds = learn_thresholds(snapshot.tasks, self.project, self.model_version, self.configured,
                                      c.min_reviewed_boxes, model=self.served_model, earlier=self.served_thresholds)
        result = TrainingResult(self.project, thresholds)
        if c.not_tunable:
            if not thresholds.learned_labels:
                raise NotEnoughAnnotations(f"{c.not_tunable}; no label has enough reviewed boxes yet: thresholds need "
                                           f"{c.min_reviewed_boxes} reviewed boxes per label on tasks predicted by "
                                           f"{self.model_version} ({self._reviewed(thresholds)})")
            result.statement = c.not_tunable
            return self._commit(result, cancel, report)

        annotated = len(snapshot.annotated_tasks())
        if annotated < c.min_annotated_tasks:
            message = self._too_few(annotated, thresholds)
            if not thresholds.learned_labels:
                raise NotEnoughAnnotations(message)
            result.notes.append(message)
            return self._commit(result, cancel, report)

        self._check(cancel)
        report(JobProgress("fetching images", message=f"{annotated} annotated tasks"))
        data_dir = self.store.project_dir(self.project) / "data"
        export = export_project(snapshot, data_dir, self.fetch_image, cancel)
        if export.skipped_tasks:
            result.notes.append(f"{len(export.skipped_tasks)} tasks left out (see the training log)")
        if export.tasks < c.min_annotated_tasks:
            raise NotEnoughAnnotations(self._too_few(export.tasks, thresholds, export.describe()))

        name = "ft-" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
        model_dir = self.store.models_dir(self.project) / name
        try:
            report(JobProgress("fine-tuning", 0, c.steps, message=c.plan()))
            self._fine_tune(export.ann, export.images, model_dir, export.describe(), cancel, report)
            result.model = self._record(model_dir)
            self._check(cancel)
            report(JobProgress("learning thresholds for the fine-tuned model", c.steps, c.steps))
            result.model_thresholds = self._own_thresholds(model_dir, export.ann, export.images, cancel)
            result.adopted, result.why_not = self._adopt(result.model, result.model_thresholds)
            self._commit(result, cancel, report)
        except TrainingCancelled:
            shutil.rmtree(model_dir, ignore_errors=True)  # never served: an unfinished run is only disk space
            raise
        return result

    # ----- pieces -----------------------------------------------------------------------------

    def _commit(self, result: TrainingResult, cancel: threading.Event,
                report: Callable[[JobProgress], None]) -> TrainingResult:
        """The one point where the job changes what serves the project (nothing before it, nothing on cancel)."""
        self._check(cancel)
        own = [result.model_thresholds] if result.model_thresholds is not None else []
        self.store.commit(self.project, [result.thresholds, *own], result.model if result.adopted else None)
        if result.model is not None and not result.adopted:
            # A copy of the model per Start Training (hundreds of MB each) would fill STATE_DIR week by week;
            # its report and log stay beside it as the evidence of the verdict.
            removed = discard_weights(result.model_dir)
            if removed:
                result.notes.append(f"its weights were deleted (not adopted); its report stays in {result.model_dir}")
        report(JobProgress("done", self.config.steps, self.config.steps, message=result.summary()))
        return result

    def _adopt(self, model: TrainedModel, own: LearnedThresholds | None) -> tuple[bool, str]:
        if not model.not_worse:
            return False, ("no held-out tasks to compare it with the base model" if model.ap_before is None
                           else "its held-out AP is lower than the base model's")
        if own is None or not any(t.tp + t.fp > 0 for t in own.labels.values()):
            return False, "at its own thresholds it shows no box on the held-out images"
        return True, ""

    def _own_thresholds(self, model_dir: Path, ann: Path, images: Path,
                        cancel: threading.Event) -> LearnedThresholds | None:
        """The fine-tuned model's thresholds, learned on its own boxes on the held-out images."""
        heldout = json.loads((model_dir / "training.json").read_text(encoding="utf-8"))["heldout_image_ids"]
        if not heldout:
            return None
        data = load_training_data(ann, images)
        detector = Detector.load(DetectorConfig(model=str(model_dir), device=self.config.device))
        try:
            dets = labelled_detections(detector, data, heldout, HELDOUT_FLOOR, self.config.nms_iou, cancel)
        finally:
            del detector
        return learn_heldout_thresholds(heldout_ground_truth(data, heldout), dets, self.project, str(model_dir),
                                        self.configured, self.config.min_reviewed_boxes)

    def _too_few(self, annotated: int, thresholds: LearnedThresholds, extra: str = "") -> str:
        message = (f"project {self.project} has {annotated} annotated tasks; at least {self.config.min_annotated_tasks} "
                   f"are needed to fine-tune; thresholds need {self.config.min_reviewed_boxes} reviewed boxes per "
                   f"label on tasks predicted by {self.model_version} ({self._reviewed(thresholds)})")
        return message + (f" ({extra})" if extra else "")

    @staticmethod
    def _reviewed(thresholds: LearnedThresholds) -> str:
        boxes = ", ".join(f"{label} {t.reviewed_boxes}" for label, t in sorted(thresholds.labels.items()))
        return f"now: {boxes or 'no labels'}"

    def _check(self, cancel: threading.Event) -> None:
        if cancel.is_set():
            raise TrainingCancelled(f"training of project {self.project} was cancelled")

    def command(self, ann: Path, images: Path, model_dir: Path, progress_file: Path) -> list[str]:
        c = self.config
        cmd = [sys.executable, "-m", "backend.train", "--ann", str(ann), "--images", str(images),
               "--model", c.base_model, "--out", str(model_dir), "--steps", str(c.steps), "--lr", str(c.lr),
               "--batch-size", str(c.batch_size), "--val-fraction", str(c.val_fraction), "--seed", str(c.seed),
               "--checkpoint-every", str(c.checkpoint_every), "--device", c.device,
               "--progress-file", str(progress_file), "--no-progress"]
        if c.image_size:
            cmd += ["--image-size", str(c.image_size)]
        threads = c.threads or (1 if _on_cpu(c.device) else None)
        if threads:
            cmd += ["--threads", str(threads)]
        return cmd

    def _fine_tune(self, ann: Path, images: Path, model_dir: Path, export_text: str, cancel: threading.Event,
                   report: Callable[[JobProgress], None]) -> None:
        model_dir.mkdir(parents=True, exist_ok=True)
        progress_file, log_path = model_dir / "progress.jsonl", model_dir / "train.log"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
        with open(log_path, "w", encoding="utf-8") as log:
            log.write(export_text + "\n")
            log.flush()
            proc = subprocess.Popen(self.command(ann, images, model_dir, progress_file), cwd=REPO_ROOT, env=env,
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            offset = 0
            try:
                while proc.poll() is None:
                    if cancel.wait(0.5):
                        raise TrainingCancelled(f"training of project {self.project} was cancelled")
                    offset = _forward_progress(progress_file, offset, report)
            finally:
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            _forward_progress(progress_file, offset, report)
        if proc.returncode != 0:
            tail = " | ".join(log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:])
            raise TrainingError(f"fine-tuning of project {self.project} failed (exit status {proc.returncode}): "
                                f"{tail} (full log: {log_path})")

    def _record(self, model_dir: Path) -> TrainedModel:
        report = json.loads((model_dir / "training.json").read_text(encoding="utf-8"))
        before, after = report["heldout"]["before"], report["heldout"]["after"]

        def metric(score, name):
            return None if score is None else float(score["metrics"][name])

        return TrainedModel(model_dir=str(model_dir), base_model=self.config.base_model,
                            ap_before=metric(before, "AP"), ap_after=metric(after, "AP"),
                            ap50_before=metric(before, "AP50"), ap50_after=metric(after, "AP50"),
                            not_worse=bool(report["heldout"]["not_worse"]),
                            train_tasks=len(report["train_image_ids"]), heldout_tasks=len(report["heldout_image_ids"]))


def _on_cpu(device: str) -> bool:
    return resolve_device(device).type == "cpu"


def _forward_progress(path: Path, offset: int, report: Callable[[JobProgress], None]) -> int:
    """Pass on the complete progress lines written since byte ``offset``; returns the new offset."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            chunk = f.read()
    except FileNotFoundError:
        return offset
    complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written is read next time
    for line in complete.splitlines():
        event = json.loads(line)
        report(JobProgress(event["phase"], event.get("step", 0), event.get("total", 0), event.get("loss")))
    return offset + len(complete)


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def discard_weights(model_dir: Path) -> list[str]:
    """Delete a checkpoint's weight files (config, report and log stay); the names of those deleted."""
    removed = []
    for path in sorted(model_dir.glob("*")):
        if path.is_file() and path.name.endswith(WEIGHT_SUFFIXES):
            path.unlink()
            removed.append(path.name)
    return removed
