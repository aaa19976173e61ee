"""The model glue: Label Studio tasks + label config -> one Label Studio prediction item per task.

`Predictor.predict_tasks` is also the entry point of bulk pre-labelling (`backend/prelabel.py`):
keep its name and signature.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePath

import torch

from .detection import ImageError, PromptError, open_image
from .label_config import (
    LabelConfigError,
    LabelMapping,
    LabelSet,
    TextPromptError,
    model_version_hash,
    parse_label_config,
    prompt_texts,
    resolve_text_prompt,
)
from .media import MediaError, MediaFetcher
from .settings import Settings

log = logging.getLogger(__name__)
DOWNLOAD_WORKERS = 8


def is_oom(exc: BaseException) -> bool:
    oom_type = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    if isinstance(exc, MemoryError):
        return True
    # CUDA says "out of memory"; the CPU allocator says "can't allocate memory" (DefaultCPUAllocator).
    message = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        sign in message for sign in ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory")
    )


@dataclass
class _Job:
    """One task on its way through the batch."""

    index: int
    task: dict
    images: dict = field(default_factory=dict)  # image name -> PIL image
    regions: list = field(default_factory=list)
    error: str | None = None

    @property
    def task_id(self):
        return self.task.get("id") if isinstance(self.task, dict) else None


class Predictor:
    def __init__(self, detector, settings: Settings, fetcher: MediaFetcher | None = None):
        self.detector = detector
        self.settings = settings
        self.fetcher = fetcher or MediaFetcher(settings)
        device = getattr(detector, "device", None)
        on_cpu = device is None or getattr(device, "type", "cpu") == "cpu"
        self.batch_size = settings.batch_size or (1 if on_cpu else 4)
        self._lock = threading.Lock()  # one forward pass at a time per process
        # Tokenizers are not safe to share between threads; prompts are quick to build, so /setup
        # (which validates them) never waits behind a long forward pass holding `_lock`.
        self._prompt_lock = threading.Lock()
        model = settings.model.rstrip("/\\")
        self.model_name = PurePath(model).name or model

    # ----- versions ---------------------------------------------------------------------------

    def model_version(self, label_config: str) -> str:
        """Model name + short hash of what changes predictions; raises LabelConfigError.

        The labels are turned into prompts here too, so a config that can never be predicted
        (a label over the model's text length, say) is refused when Label Studio connects.
        """
        mapping = parse_label_config(label_config)
        self._prompts(mapping.active, from_text=False, jobs=[])
        return self._version(mapping)

    def _version(self, mapping: LabelMapping) -> str:
        revision = getattr(self.detector, "model_revision", None)
        extra = {
            "model": self.settings.model,
            "revision": revision,
            "box_threshold": self.settings.box_threshold,
            "nms_iou": self.settings.nms_iou,
            "dtype": self.settings.dtype,
        }
        return f"{self.model_name}-{model_version_hash(mapping, extra)}"

    # ----- prediction -------------------------------------------------------------------------

    def predict_tasks(
        self,
        tasks: list[dict],
        label_config: str,
        context: dict | None = None,
        hostname: str | None = None,
        access_token: str | None = None,
    ) -> list[dict]:
        """Exactly one item per task, in order: a prediction, or `{model_version, error}` (no `result`).

        Raises LabelConfigError for a label config that cannot be used (nothing can be predicted).
        """
        mapping = parse_label_config(label_config)
        version = self._version(mapping)
        jobs = [_Job(i, t) for i, t in enumerate(tasks)]
        typed = prompt_texts(mapping, context)
        try:
            label_sets = resolve_text_prompt(mapping, typed)
        except TextPromptError as exc:
            for job in jobs:
                job.error = str(exc)
            log.warning("no predictions for tasks %s: %s", [j.task_id for j in jobs], exc)
            return [self._item(job, version) for job in jobs]
        prompts = self._prompts(label_sets, from_text=bool(typed), jobs=jobs)
        if prompts is None:
            return [self._item(job, version) for job in jobs]

        for job in jobs:
            if not isinstance(job.task, dict) or not isinstance(job.task.get("data"), dict):
                job.error = "the task has no 'data' object"
        needed = {s.to_name: s.data_key for s, _ in prompts}
        pending = [j for j in jobs if j.error is None]
        batch_size = self.batch_size
        with ThreadPoolExecutor(max_workers=min(DOWNLOAD_WORKERS, max(1, batch_size))) as pool:
            for start in range(0, len(pending), batch_size):
                batch = pending[start : start + batch_size]
                list(pool.map(lambda job: self._load_images(job, needed, hostname, access_token), batch))
                ready = [j for j in batch if j.error is None]
                if ready:
                    self._run_batch(ready, prompts)
                for job in batch:
                    job.images = {}  # free memory as we go
        items = [self._item(job, version) for job in jobs]
        for job in jobs:
            if job.error is not None:
                log.warning("task %s: no prediction: %s", job.task_id, job.error)
        return items

    def _prompts(self, label_sets: tuple[LabelSet, ...], from_text: bool, jobs: list[_Job]):
        out = []
        try:
            with self._prompt_lock:
                for label_set in label_sets:
                    out.append((label_set, self.detector.prompt(label_set.prompt_classes)))
        except PromptError as exc:
            if not from_text:
                raise LabelConfigError(f"the labels cannot be turned into a prompt: {exc}") from None
            for job in jobs:
                job.error = f"the prompt cannot be used: {exc}"
            return None
        return out

    def _load_images(self, job: _Job, needed: dict, hostname, access_token) -> None:
        try:
            for image_name, key in needed.items():
                url = job.task["data"].get(key)
                if url is None:
                    raise MediaError(f"the task has no data.{key} (the <Image> value ${key})")
                data = self.fetcher.fetch(url, task_id=job.task_id, hostname=hostname, access_token=access_token)
                job.images[image_name] = open_image(data, max_pixels=self.settings.max_image_pixels)
        except (MediaError, ImageError) as exc:
            job.error = str(exc)
            job.images = {}
        except Exception as exc:  # never let one task take the batch down
            log.exception("task %s: unexpected error loading its image", job.task_id)
            job.error = f"could not load the image ({type(exc).__name__}: {exc})"
            job.images = {}

    def _run_batch(self, jobs: list[_Job], prompts) -> None:
        """Detect on a micro-batch; on out-of-memory retry in halves; fail only what still fails."""
        try:
            results = self._detect(jobs, prompts)
        except Exception as exc:
            if is_oom(exc):
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if len(jobs) > 1:
                    half = len(jobs) // 2
                    log.warning("out of memory on a batch of %d images: retrying in halves", len(jobs))
                    self._run_batch(jobs[:half], prompts)
                    self._run_batch(jobs[half:], prompts)
                    return
                message = (
                    "out of memory running the model on this image: lower MAX_IMAGE_PIXELS or BATCH_SIZE, "
                    "or use a device with more memory"
                )
            else:
                log.exception("inference failed on a batch of %d images", len(jobs))
                message = f"inference failed ({type(exc).__name__}: {exc})"
            for job in jobs:
                job.error = message
            return
        for job, regions in zip(jobs, results):
            job.regions = regions

    def _detect(self, jobs: list[_Job], prompts) -> list[list[dict]]:
        regions: list[list[dict]] = [[] for _ in jobs]
        for label_set, prompt in prompts:
            images = [job.images[label_set.to_name] for job in jobs]
            threshold = label_set.threshold if label_set.threshold is not None else self.settings.box_threshold
            with self._lock:
                detections = self.detector.detect(images, prompt, threshold, nms_iou=self.settings.nms_iou)
            for i, (job, image, dets) in enumerate(zip(jobs, images, detections)):
                for k in range(len(dets)):
                    regions[i].append(
                        make_region(
                            job.task_id, label_set, image.size, dets.boxes[k].tolist(),
                            float(dets.scores[k]), label_set.classes[int(dets.labels[k])].label, len(regions[i]),
                        )
                    )
        return regions

    def _item(self, job: _Job, version: str) -> dict:
        if job.error is not None:
            return {"model_version": version, "error": job.error}
        regions = sorted(job.regions, key=lambda r: -r["score"])
        score = sum(r["score"] for r in regions) / len(regions) if regions else 0.0
        return {"result": regions, "score": score, "model_version": version}


def make_region(task_id, label_set: LabelSet, size, box, score: float, label: str, n: int) -> dict:
    """One Label Studio region: percent x/y/width/height of the image as shown (EXIF applied)."""
    width, height = size
    x0, y0, x1, y1 = box
    value = {
        "x": _pct(x0, width),
        "y": _pct(y0, height),
        "width": _pct(x1 - x0, width),
        "height": _pct(y1 - y0, height),
        "rotation": 0,
    }
    if label_set.kind == "rectanglelabels":
        value["rectanglelabels"] = [label]
    region_id = hashlib.sha1(f"{task_id}/{label_set.from_name}/{label_set.to_name}/{n}".encode()).hexdigest()[:10]
    return {
        "id": region_id,
        "from_name": label_set.from_name,
        "to_name": label_set.to_name,
        "type": label_set.kind,
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": value,
        "score": score,
    }


def _pct(pixels: float, size: int) -> float:
    return min(100.0, max(0.0, float(pixels) / size * 100.0))
