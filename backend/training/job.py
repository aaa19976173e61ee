"""The backend's training job for one project: thresholds, then fine-tuning in a subprocess.

    job = TrainingJob(project_id, snapshot_source, model_version, configured, fetch_image, config)
    result = job.run(cancel_event, progress_callback)      # blocking: run it in a background thread

1. Per-label thresholds from the tasks reviewed against ``model_version`` -> ``STATE_DIR/projects/<id>/thresholds.json``.
2. With at least ``min_annotated_tasks`` annotated tasks: the project is written as a COCO dataset
   (``STATE_DIR/projects/<id>/data``, images kept for the next job) and ``python -m backend.train`` fine-tunes
   the base model in a subprocess (its own memory and threads; the server keeps serving; cancelling
   terminates it) into ``STATE_DIR/projects/<id>/models/<name>``. Progress comes back through
   ``--progress-file``, the log goes to ``<model dir>/train.log``.
3. When its held-out AP is not worse than the base model's, the model is recorded as the project's
   (``model.json``); the caller then serves the project with it.
"""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from detection import resolve_device

from .errors import NotEnoughAnnotations, TrainingCancelled, TrainingError
from .project_data import FetchImage, export_project
from .store import ProjectStore, TrainedModel
from .tasks import ProjectSnapshot
from .thresholds import LearnedThresholds, learn_thresholds

REPO_ROOT = Path(__file__).resolve().parents[2]


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
    thresholds: LearnedThresholds
    model: TrainedModel | None = None  # the fine-tuned model, when fine-tuning ran
    adopted: bool = False  # recorded as the project's model (held-out AP not worse)
    notes: list[str] = field(default_factory=list)

    @property
    def model_dir(self) -> Path | None:
        return Path(self.model.model_dir) if self.model else None

    def summary(self) -> str:
        learned = self.thresholds.learned_labels
        lines = [f"thresholds learned for {len(learned)} of {len(self.thresholds.labels)} labels"
                 + (f" ({', '.join(learned)})" if learned else "")]
        if self.model:
            m = self.model
            ap = ("no held-out tasks to compare" if m.ap_before is None else
                  f"held-out AP {100 * m.ap_before:.1f} -> {100 * m.ap_after:.1f}")
            lines.append(f"fine-tuned model {m.name}: {ap}; "
                         + ("now serving the project" if self.adopted else "not adopted (worse than the current model)"))
        return "; ".join(lines + self.notes)


class TrainingJob:
    def __init__(self, project_id, snapshot_source: Callable[[], ProjectSnapshot], model_version: str,
                 configured_thresholds: Mapping[str, float], fetch_image: FetchImage, config: TrainingJobConfig):
        """``snapshot_source`` reads the project (``lambda: fetch_project(client, id)``); ``model_version`` is
        the version the project is served with now and ``configured_thresholds`` the per-label thresholds
        its predictions were made with; ``fetch_image(url, task_id) -> bytes`` reads a task's image."""
        self.project = str(project_id)
        self.snapshot_source, self.model_version = snapshot_source, model_version
        self.configured = dict(configured_thresholds)
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
                                      c.min_reviewed_boxes)
        self.store.save_thresholds(thresholds)
        result = TrainingResult(self.project, thresholds)

        annotated = len(snapshot.annotated_tasks())
        if annotated < c.min_annotated_tasks:
            message = self._too_few(annotated, thresholds)
            if not thresholds.learned_labels:
                raise NotEnoughAnnotations(message)
            result.notes.append(message)
            return result

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
        self._fine_tune(export.ann, export.images, model_dir, export.describe(), cancel, report)
        result.model = self._record(model_dir)
        result.adopted = result.model.not_worse
        if result.adopted:
            self.store.save_model(self.project, result.model)
        report(JobProgress("done", c.steps, c.steps, message=result.summary()))
        return result

    # ----- pieces -----------------------------------------------------------------------------

    def _too_few(self, annotated: int, thresholds: LearnedThresholds, extra: str = "") -> str:
        boxes = ", ".join(f"{label} {t.reviewed_boxes}" for label, t in sorted(thresholds.labels.items()))
        message = (f"project {self.project} has {annotated} annotated tasks; at least {self.config.min_annotated_tasks} "
                   f"are needed to fine-tune; thresholds need {self.config.min_reviewed_boxes} reviewed boxes per "
                   f"label on tasks predicted by {self.model_version} (now: {boxes or 'no labels'})")
        return message + (f" ({extra})" if extra else "")

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
