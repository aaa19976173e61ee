"""An evaluation run: the detector over a dataset's (sharded) images into durable partial results, then
the dataset's scorer on the merged results. Dataset-agnostic: COCO and LVIS supply a `Scorer`."""
from __future__ import annotations

import datetime
import hashlib
import json
import platform
import re
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from importlib.metadata import PackageNotFoundError, version
from typing import Iterable, Iterator, Protocol

import numpy
import pandas
import torch
import transformers
from PIL import Image
from tqdm import tqdm

from detection import ImageError, open_image, to_rgb
from detection.families import lever_report
from detection.masks import BOX_MARGIN, clip_to_boxes
from runtime.allocator import active_allocator, cpu_allocator_hint
from runtime.distributed import Dist
from runtime.errors import InputError
from runtime.files import atomic_write

from .store import PartialStore, check_fingerprint

PREFETCH = 2  # batches decoded ahead of the model


@dataclass(frozen=True)
class RunSettings:
    """What the user chose for one evaluation run (the command line's options)."""

    model: str
    device: str = "auto"
    dtype: str = "fp32"
    batch_size: int = 1
    num_select: int = 300
    limit: int | None = None
    chunk_size: int | None = None
    resume: bool = True
    out: str | None = None
    iou_type: str = "bbox"  # "segm": masks too, the detector's own (`own_masks`) or each box's by `sam_model`
    sam_model: str | None = None
    own_masks: bool = False  # segm with the masks the detector makes itself (SAM 3): no SAM stage
    protocol: dict | None = None  # the family's evaluation protocol (evaluation/protocols.py), recorded


class Dataset(Protocol):
    """A detection dataset as the run needs it (evaluation.coco.dataset.CocoDataset and its LVIS kind)."""

    ann_path: Path
    images_dir: Path
    image_ids: list[int]  # sorted
    files: dict[int, Path]
    sizes: dict[int, tuple[int, int]]  # image id -> declared (width, height)

    @property
    def name(self) -> str: ...

    @property
    def category_ids(self) -> list[int]: ...


class Scorer(Protocol):
    """What a dataset package supplies to the run."""

    phrase_rule: str  # how category names became phrases (recorded)
    outputs: str  # the run files it writes, for the final message

    def classes(self) -> list[tuple[str, ...]]:
        """Per category (label index order) the phrases it is prompted with."""

    def encode(self, image_id: int, detections, masks=None) -> list | dict:
        """One image's ranked `Detections` (and, in a segm run, their (N, H, W) masks) -> the JSON
        payload stored in the partial results."""

    def finish(self, run_dir: Path, records: Iterator[tuple[int, list | dict]], ids: list[int],
               config: dict) -> dict:
        """Rank 0, once every image is done: score the records (in store order), write the run files,
        print the summary;
        returns metrics.json's content (with `config`)."""


def default_run_dir(model: str, dataset: Dataset) -> Path:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model.rstrip("/")).name or model)
    return Path("runs") / f"{name}-{dataset.name}-{datetime.date.today():%Y%m%d}"


def selected_ids(dataset: Dataset, limit: int | None) -> list[int]:
    return dataset.image_ids[:limit] if limit else list(dataset.image_ids)


def file_digest(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(dataset: Dataset, scorer: Scorer, s: RunSettings, detector, masker=None) -> dict:
    """The settings that change per-image results: a rerun into the same RUN_DIR must match them.

    --limit and the number of ranks are not in it: they only choose which images are run. A box run's
    fingerprint has no mask keys, so box run directories of earlier versions still resume.
    """
    out = {
        "ann": str(dataset.ann_path), "ann_sha1": file_digest(dataset.ann_path), "images": str(dataset.images_dir),
        "model": s.model, "revision": detector.model_revision, "device_type": detector.device.type,
        "dtype": s.dtype, "batch_size": s.batch_size, "num_select": s.num_select, "chunk_size": s.chunk_size,
        "phrase_rule": scorer.phrase_rule,
    }
    if masker is not None or s.own_masks:
        out.update(mask_config(s, masker, detector))
    return out


def mask_config(s: RunSettings, masker, detector=None) -> dict:
    """How a segm run's masks were made (fingerprint and metrics.json)."""
    if s.own_masks:
        return {"iou_type": s.iou_type, "masks": f"the detector's own ({detector.family.title})"}
    return {"iou_type": s.iou_type, "sam_model": s.sam_model, "sam_revision": masker.model_revision,
            "sam_model_type": masker.model_type, "mask_box_margin": BOX_MARGIN}


def load_image(dataset: Dataset, image_id: int):
    """EXIF-transposed RGB, unless the annotation file declares the stored (untransposed) frame."""
    path = dataset.files[image_id]
    try:
        image = open_image(path)
        declared = dataset.sizes.get(image_id)
        if declared and image.size != declared and image.size == declared[::-1]:
            with Image.open(path) as raw:  # boxes are annotated in the frame of the JSON's width/height
                raw.load()
                image = to_rgb(raw)
        return image
    except ImageError as exc:
        raise InputError(f"{path}: {exc}") from None


def infer(dataset: Dataset, scorer: Scorer, s: RunSettings, detector, store: PartialStore, shard: list[int],
          done: set, dist: Dist, masker=None):
    """Run the detector (and the mask model) over this rank's images not yet done; append each batch
    durably. Returns (images processed, seconds, of which seconds in the mask model)."""
    prompt = detector.prompt(scorer.classes(), s.chunk_size)
    todo = [i for i in shard if i not in done]
    bar = tqdm(total=len(shard), initial=len(shard) - len(todo), unit="img", desc="evaluating",
               disable=not dist.is_main, dynamic_ncols=True, file=sys.stderr)
    batches = [todo[b : b + s.batch_size] for b in range(0, len(todo), s.batch_size)]
    start = time.perf_counter()
    mask_s = 0.0
    store.open()
    # Decode the next PREFETCH batches' images in worker threads while the model runs.
    pool = ThreadPoolExecutor(max_workers=PREFETCH)
    decode = lambda ids: [load_image(dataset, i) for i in ids]  # noqa: E731
    pending = deque(pool.submit(decode, ids) for ids in batches[:PREFETCH])
    try:
        for n, ids in enumerate(batches):
            images = pending.popleft().result()
            if n + PREFETCH < len(batches):
                pending.append(pool.submit(decode, batches[n + PREFETCH]))
            if s.own_masks:  # the family's `rank` returns each detection's mask (Capabilities.own_masks)
                ranked = detector.rank(images, prompt, s.num_select, masks=True)
                payloads = [scorer.encode(i, d, d.masks) for i, d in zip(ids, ranked)]
            elif masker is None:
                ranked = detector.rank(images, prompt, s.num_select)
                payloads = [scorer.encode(i, d) for i, d in zip(ids, ranked)]
            else:
                ranked = detector.rank(images, prompt, s.num_select)
                t0 = time.perf_counter()
                masks = image_masks(masker, images, ranked)
                mask_s += time.perf_counter() - t0
                payloads = [scorer.encode(i, d, m) for i, d, m in zip(ids, ranked, masks)]
            store.append([{"image_id": i, "detections": p} for i, p in zip(ids, payloads)])
            bar.update(len(ids))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        store.close()
        bar.close()
    return len(todo), time.perf_counter() - start, mask_s


def image_masks(masker, images, ranked) -> list:
    """Per image the (N, H, W) masks of its ranked boxes: one embedding per image, all its boxes in one
    decoder batch, each mask cut to its box (with the backend's margin)."""
    masks = masker.masks_for_boxes(images, [d.boxes for d in ranked])
    return [clip_to_boxes(m, d.boxes, BOX_MARGIN) for m, d in zip(masks, ranked)]


def library_versions() -> dict:
    try:
        pycocotools = version("pycocotools")
    except PackageNotFoundError:
        pycocotools = None
    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "pycocotools": pycocotools, "numpy": numpy.__version__, "pandas": pandas.__version__}


def stored_records(store: PartialStore, ids: list[int]) -> Iterable[tuple[int, list | dict]]:
    """(image id, stored payload) of each of `ids`, one at a time, in store order (not id order: the
    scorer orders them); an InputError naming the first missing image when some are not done."""
    have = store.done_ids()
    missing = [i for i in ids if i not in have]
    if missing:
        raise InputError(f"{len(missing)} images have no results in {store.dir} (first: {missing[0]}); "
                         "run the same command again to finish them")
    wanted = set(ids)
    return ((i, p) for i, p in store.records() if i in wanted)


def evaluate(dataset: Dataset, scorer: Scorer, s: RunSettings, detector, run_dir: Path, dist: Dist, load_s: float,
             argv, masker=None) -> dict | None:
    """The whole run on every rank: accept (or resume) the run directory, infer this rank's shard into
    its partial store, then on the main rank score the merged results and write metrics.json. Returns
    metrics.json's content on the main rank, None on the others."""
    t_start = time.perf_counter()
    ids = selected_ids(dataset, s.limit)
    state = together(dist, lambda: check_fingerprint(run_dir, fingerprint(dataset, scorer, s, detector, masker),
                                                     s.resume) if dist.is_main else None)
    store = PartialStore(run_dir, dist.rank, dist.world_size)
    done = store.done_ids()
    resumed = len([i for i in ids if i in done])
    announce_start(detector, dist, run_dir, resumed, len(ids))
    shard = ids[dist.rank :: dist.world_size]
    stats = dist.gather(together(dist, lambda: infer(dataset, scorer, s, detector, store, shard, done, dist, masker)))
    if not dist.is_main:
        dist.barrier()
        return None
    config = run_config(dataset, scorer, s, detector, masker, dist, ids, RunRecord(state, resumed, argv, load_s, stats))
    try:
        metrics = scorer.finish(run_dir, stored_records(store, ids), ids, config)
        metrics["config"]["timings"]["total_s"] = round(time.perf_counter() - t_start + load_s, 3)
        atomic_write(run_dir / "metrics.json", json.dumps(metrics, indent=2, default=str))
        print(f"results in {run_dir}/ ({scorer.outputs})")
    finally:
        dist.barrier()
    return metrics


def together(dist: Dist, step):
    """`step()` on this rank; an InputError on any rank is raised on every rank (the first rank's
    message), so that no rank goes on to wait for the others at the next collective."""
    error, result = None, None
    try:
        result = step()
    except InputError as exc:
        error = str(exc)
    error = dist.agree(error)
    if error:
        raise InputError(error)
    return result


def announce_start(detector, dist: Dist, run_dir: Path, resumed: int, total: int) -> None:
    """The main rank's notes once the run is accepted (a refused run prints its one error line and
    nothing else): how much a resume finds done, and the CPU allocator hint."""
    if not dist.is_main:
        return
    if resumed:
        print(f"resuming: {resumed} of {total} images already done in {run_dir}", file=sys.stderr)
    hint = cpu_allocator_hint(detector.device.type)
    if hint:
        print(f"note: {hint}", file=sys.stderr)


@dataclass(frozen=True)
class RunRecord:
    """What this run did, for metrics.json's config: the resume state, images found done, the command,
    the model load time and every rank's (images processed, inference seconds, mask seconds)."""

    state: str  # check_fingerprint's 'new', 'resumed' or 'restarted'
    resumed: int
    argv: list
    load_s: float
    stats: list


def run_config(dataset: Dataset, scorer: Scorer, s: RunSettings, detector, masker, dist: Dist, ids: list[int],
               record: RunRecord) -> dict:
    """metrics.json's `config`: the settings, the prompt, the levers as installed, versions and timings."""
    classes = scorer.classes()
    prompt = detector.prompt(classes, s.chunk_size)
    # Speed levers as installed: a lever that found nothing to patch (a newer transformers) says so here.
    levers, lever_warnings = lever_report(detector)
    stats = record.stats
    processed_all = sum(p for p, _, _ in stats)
    infer_all = max(t for _, t, _ in stats)
    return {
        "ann": str(dataset.ann_path), "images": str(dataset.images_dir), "model": s.model,
        "revision": detector.model_revision, "device": str(detector.device), "dtype": s.dtype,
        "batch_size": s.batch_size, "num_select": s.num_select, "limit": s.limit, "chunk_size": s.chunk_size,
        **detector.describe_prompt(prompt), "num_categories": len(dataset.category_ids),
        "phrase_rule": scorer.phrase_rule, "phrases": [" | ".join(p) for p in classes],
        "preprocessing": getattr(detector, "preprocessing", None),
        "levers": levers, "lever_warnings": lever_warnings,
        "num_images": len(ids), "image_ids": ids, "world_size": dist.world_size, "run_state": record.state,
        "resumed_images": record.resumed, "versions": library_versions(),
        "allocator": active_allocator(),  # CPU timings depend on it
        "iou_type": s.iou_type, **(mask_config(s, masker, detector) if masker is not None or s.own_masks else {}),
        "family": detector.family.name, "protocol": s.protocol,
        "command": list(record.argv),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "timings": {"model_load_s": round(record.load_s, 3), "inference_s": round(infer_all, 3),
                    "images_this_run": processed_all,
                    "images_per_s": round(processed_all / infer_all, 3) if infer_all > 0 else None,
                    **({"mask_s": round(max(m for _, _, m in stats), 3)} if masker is not None else {})},
    }
