"""The evaluation run: detector over the (sharded) images, durable partial results, merge and score."""
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

from backend.allocator import active_allocator, cpu_allocator_hint

from .dataset import CocoDataset, InputError
from .distributed import Dist
from .store import PartialStore, _atomic_write, check_fingerprint

PREFETCH = 2  # batches decoded ahead of the model


@dataclass
class Settings:
    model: str
    device: str = "auto"
    dtype: str = "fp32"
    batch_size: int = 1
    num_select: int = 300
    limit: int | None = None
    chunk_size: int | None = None
    resume: bool = True
    out: str | None = None


def default_run_dir(model: str, dataset: CocoDataset) -> Path:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model.rstrip("/")).name or model)
    return Path("runs") / f"{name}-{dataset.name}-{datetime.date.today():%Y%m%d}"


def selected_ids(dataset: CocoDataset, limit: int | None) -> list[int]:
    return dataset.image_ids[:limit] if limit else list(dataset.image_ids)


def file_digest(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(dataset: CocoDataset, s: Settings, detector) -> dict:
    """The settings that change per-image results: a rerun into the same RUN_DIR must match them.

    --limit and the number of ranks are not in it: they only choose which images are run.
    """
    return {
        "ann": str(dataset.ann_path), "ann_sha1": file_digest(dataset.ann_path), "images": str(dataset.images_dir),
        "model": s.model, "revision": detector.model_revision, "device_type": detector.device.type,
        "dtype": s.dtype, "batch_size": s.batch_size, "num_select": s.num_select, "chunk_size": s.chunk_size,
    }


def to_coco(image_id: int, dets, category_ids: list[int]) -> list[dict]:
    """Ranked detections of one image -> COCO results ([x, y, w, h] in original pixels)."""
    boxes = dets.boxes.float()
    xywh = boxes.clone()
    xywh[:, 2:] = boxes[:, 2:] - boxes[:, :2]
    return [
        {"image_id": image_id, "category_id": category_ids[label], "bbox": box, "score": score}
        for label, box, score in zip(dets.labels.tolist(), xywh.tolist(), dets.scores.float().tolist())
    ]


def load_image(dataset: CocoDataset, image_id: int):
    """EXIF-transposed RGB, unless the annotation file declares the stored (untransposed) frame."""
    from PIL import Image

    from backend.detection import ImageError, open_image, to_rgb

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


def infer(dataset: CocoDataset, s: Settings, detector, store: PartialStore, shard: list[int], done: set, dist: Dist):
    """Run the detector over this rank's images not yet done; append each batch durably."""
    from tqdm import tqdm

    prompt = detector.prompt(dataset.category_names, s.chunk_size)
    todo = [i for i in shard if i not in done]
    bar = tqdm(total=len(shard), initial=len(shard) - len(todo), unit="img", desc="evaluating",
               disable=not dist.is_main, dynamic_ncols=True, file=sys.stderr)
    batches = [todo[b : b + s.batch_size] for b in range(0, len(todo), s.batch_size)]
    start = time.perf_counter()
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
            ranked = detector.rank(images, prompt, s.num_select)
            store.append([{"image_id": i, "detections": to_coco(i, d, dataset.category_ids)}
                          for i, d in zip(ids, ranked)])
            bar.update(len(ids))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        store.close()
        bar.close()
    return len(todo), time.perf_counter() - start


def library_versions() -> dict:
    import numpy
    import pandas
    import torch
    import transformers
    from importlib.metadata import PackageNotFoundError, version

    try:
        pycocotools = version("pycocotools")
    except PackageNotFoundError:
        pycocotools = None
    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "pycocotools": pycocotools, "numpy": numpy.__version__, "pandas": pandas.__version__}


def finish(dataset: CocoDataset, s: Settings, detector, run_dir: Path, ids: list[int], config: dict) -> dict:
    """Rank 0: merge all partial files in image order, write the run files, score once."""
    from .scoring import coco_gt, non_parity_reasons, per_class_table, published_for, score, summary_text

    merged = PartialStore(run_dir).load()
    missing = [i for i in ids if i not in merged]
    if missing:
        raise InputError(f"{len(missing)} images have no results in {run_dir}/partial (first: {missing[0]}); "
                         "run the same command again to finish them")
    detections = [d for i in ids for d in merged[i]]
    _atomic_write(run_dir / "detections.json", json.dumps(detections, separators=(",", ":")))
    t0 = time.perf_counter()
    metrics, ev, text = score(coco_gt(dataset.data), detections, ids)
    config["timings"]["scoring_s"] = round(time.perf_counter() - t0, 3)
    config["published"] = published_for(s.model, len(ids), dataset.ann_path.name)
    config["non_parity"] = non_parity_reasons(config)
    config["parity"] = not config["non_parity"]
    per_class = per_class_table(ev, dataset.categories)
    per_class.to_csv(run_dir / "per_class.csv", index=False)
    metrics = {**metrics, "config": config}
    _atomic_write(run_dir / "metrics.json", json.dumps(metrics, indent=2, default=str))
    print(summary_text(metrics, config, text))
    print(f"results in {run_dir}/ (detections.json, metrics.json, per_class.csv)")
    return metrics


def evaluate(dataset: CocoDataset, s: Settings, detector, run_dir: Path, dist: Dist, load_s: float, argv) -> dict | None:
    t_start = time.perf_counter()
    ids = selected_ids(dataset, s.limit)
    error = None
    state = None
    if dist.is_main:
        try:
            state = check_fingerprint(run_dir, fingerprint(dataset, s, detector), s.resume)
        except InputError as exc:
            error = str(exc)
    error = dist.agree(error)
    if error:
        raise InputError(error)
    store = PartialStore(run_dir, dist.rank, dist.world_size)
    done = set(store.load())
    shard = ids[dist.rank :: dist.world_size]
    resumed = len([i for i in ids if i in done])
    if dist.is_main and resumed:
        print(f"resuming: {resumed} of {len(ids)} images already done in {run_dir}", file=sys.stderr)
    hint = cpu_allocator_hint(detector.device.type) if dist.is_main else None
    if hint:  # only once the run is accepted: a refused run prints its one error line and nothing else
        print(f"note: {hint}", file=sys.stderr)
    error, processed, infer_s = None, 0, 0.0
    try:
        processed, infer_s = infer(dataset, s, detector, store, shard, done, dist)
    except InputError as exc:
        error = str(exc)
    error = dist.agree(error)
    if error:
        raise InputError(error)
    stats = dist.gather((processed, infer_s))
    if not dist.is_main:
        dist.barrier()
        return None
    prompt = detector.prompt(dataset.category_names, s.chunk_size)
    processed_all = sum(p for p, _ in stats)
    infer_all = max(t for _, t in stats)
    config = {
        "ann": str(dataset.ann_path), "images": str(dataset.images_dir), "model": s.model,
        "revision": detector.model_revision, "device": str(detector.device), "dtype": s.dtype,
        "batch_size": s.batch_size, "num_select": s.num_select, "limit": s.limit, "chunk_size": s.chunk_size,
        "num_chunks": len(prompt.chunks), "chunk_tokens": [c.num_tokens for c in prompt.chunks],
        "captions": [c.caption.text for c in prompt.chunks], "num_categories": len(dataset.categories),
        "num_images": len(ids), "image_ids": ids, "world_size": dist.world_size, "run_state": state,
        "resumed_images": resumed, "versions": library_versions(), "allocator": active_allocator(),  # CPU timings depend on it
        "command": list(argv),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "timings": {"model_load_s": round(load_s, 3), "inference_s": round(infer_all, 3),
                    "images_this_run": processed_all,
                    "images_per_s": round(processed_all / infer_all, 3) if infer_all > 0 else None},
    }
    try:
        metrics = finish(dataset, s, detector, run_dir, ids, config)
        metrics["config"]["timings"]["total_s"] = round(time.perf_counter() - t_start + load_s, 3)
        _atomic_write(run_dir / "metrics.json", json.dumps(metrics, indent=2, default=str))
    finally:
        dist.barrier()
    return metrics
