"""Benchmark worker processes: one per path kind, length-prefixed pickles over stdin/stdout.

    python -m benchmarks.workers baseline|fast '<json args>'   (started by benchmarks.throughput)
"""
from __future__ import annotations

import io
import json
import pickle
import resource
import struct
import subprocess
import sys
import time
import traceback

import numpy as np
from PIL import Image

from runtime.allocator import active_allocator, enable_thp_allocation

from .common import BOX_THRESHOLD, LS_CONFIG, LS_LABELS, ROOT, TEXT_THRESHOLD, caption

# torch, transformers and the detection core (which imports torch) are imported inside the workers: each
# worker process sets its THP lever before torch loads (its thread environment comes from its parent).

def _send(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _recv(stream):
    header = stream.read(8)
    if len(header) < 8:
        raise EOFError("worker closed its pipe")
    (size,) = struct.unpack("<Q", header)
    return pickle.loads(stream.read(size))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class BaselineWorker:
    """The hub model card, verbatim apart from the image source (JPEG bytes in memory)."""

    def __init__(self, model: str, device: str):
        import torch
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        self.torch = torch
        self.device = device
        self.processor = AutoProcessor.from_pretrained(model)
        self.model = AutoModelForZeroShotObjectDetection.from_pretrained(model).to(device)

    def run(self, images: list[bytes], classes: list[str], **_):
        torch = self.torch
        text = caption(classes)
        raw, n_dets = [], []
        _sync(self.device)
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        for data in images:
            image = Image.open(io.BytesIO(data)).convert("RGB")
            inputs = self.processor(images=image, text=text, return_tensors="pt").to(self.device)
            with torch.no_grad():
                outputs = self.model(**inputs)
            results = self.processor.post_process_grounded_object_detection(
                outputs, inputs.input_ids, threshold=BOX_THRESHOLD, text_threshold=TEXT_THRESHOLD,
                target_sizes=[image.size[::-1]],
            )
            n_dets.append(len(results[0]["boxes"]))
            raw.append((outputs.logits[0].float().cpu(), outputs.pred_boxes[0].float().cpu()))
        _sync(self.device)
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
        return {"seconds": seconds, "cpu": cpu, "raw": raw, "n_dets": n_dets, "rss_mb": _peak_rss_mb()}


def _cpu_seconds() -> float:
    """CPU time of this process (all threads): far less sensitive than wall time to other load."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class FastWorker:
    """Our code: the backend path and the evaluation path, sharing one model (as the server does)."""

    def __init__(self, model: str, device: str, batch_size: int):
        from detection import Detector, DetectorConfig

        self.Detector, self.DetectorConfig = Detector, DetectorConfig
        self.base = Detector.load(DetectorConfig(model=model, device=device))
        self.detectors = {("fp32", True): self.base}
        self.device = device
        self.batch_size = batch_size
        self.predictor_note = None
        self.predictors = {}
        self._recorded: list = []

    def detector(self, dtype: str, reuse_backbone: bool = True):
        key = (dtype, reuse_backbone)
        if key not in self.detectors:
            cfg = self.DetectorConfig(model=self.base.config.model, device=self.device, dtype=dtype,
                                      reuse_backbone=reuse_backbone)
            self.detectors[key] = self.Detector(self.base.model, self.base.processor, cfg)  # same weights
        det = self.detectors[key]
        if not getattr(det, "_bench_recording", False):
            inner = det.forward

            def forward(images, chunk, _inner=inner):
                logits, boxes = _inner(images, chunk)
                self._recorded.extend(zip(logits.cpu(), boxes.cpu()))
                return logits, boxes

            det.forward = forward
            det._bench_recording = True
        return det

    def predictor(self, dtype: str):
        """backend.serving.predictor.Predictor if the backend has one, else None (core fallback)."""
        if dtype in self.predictors:
            return self.predictors[dtype]
        try:
            from backend.serving.predictor import Predictor
            from backend.settings import Settings
        except ImportError as exc:
            self.predictor_note = f"backend.serving.predictor unavailable ({exc}); core labelling mode used"
            self.predictors[dtype] = None
            return None
        settings = Settings(model=self.base.config.model, device=self.device, dtype=dtype, batch_size=self.batch_size)
        self.predictors[dtype] = Predictor(self.detector(dtype), settings, fetcher=MemoryFetcher())
        self.predictor_note = "backend.serving.predictor.Predictor.predict_tasks (everything but HTTP)"
        return self.predictors[dtype]

    def run(self, images: list[bytes], classes: list[str], mode: str, dtype: str = "fp32", batch: int = 1,
            chunk_size: int | None = None, reuse_backbone: bool = True, **_):
        from detection import open_image

        det = self.detector(dtype, reuse_backbone)
        self._recorded = []
        detections = None
        if mode == "backend":
            predictor = self.predictor(dtype)
            if predictor is not None:
                predictor.fetcher.images = {f"mem://{i}": data for i, data in enumerate(images)}
                tasks = [{"id": i + 1, "data": {"image": f"mem://{i}"}} for i in range(len(images))]
                _sync(self.device)
                start, cpu_start = time.perf_counter(), _cpu_seconds()
                response = predictor.predict_tasks(tasks, LS_CONFIG)
                _sync(self.device)
                seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
                sizes = [open_image(data).size for data in images]  # outside the timed part
                detections = [_ls_boxes(r, size) for r, size in zip(response, sizes)]
            else:
                prompt = det.prompt(classes)
                _sync(self.device)
                start, cpu_start = time.perf_counter(), _cpu_seconds()
                decoded = [open_image(data) for data in images]
                found = []
                for i in range(0, len(decoded), self.batch_size):
                    found.extend(det.detect(decoded[i : i + self.batch_size], prompt, BOX_THRESHOLD))
                _sync(self.device)
                seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
                detections = [(d.labels.tolist(), d.scores.tolist(), d.boxes.tolist()) for d in found]
        else:  # evaluation: ranking mode (chunk_size: the label set in several prompts, as LVIS)
            prompt = det.prompt(classes, chunk_size)
            _sync(self.device)
            start, cpu_start = time.perf_counter(), _cpu_seconds()
            decoded = [open_image(data) for data in images]
            for i in range(0, len(decoded), batch):
                det.rank(decoded[i : i + batch], prompt, num_select=300)
            _sync(self.device)
            seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
        return {"seconds": seconds, "cpu": cpu, "raw": self._recorded, "detections": detections, "rss_mb": _peak_rss_mb(),
                "thp": self.base.lever_report["thp_allocation"] == "active", "note": self.predictor_note, "allocator": active_allocator()}



class MemoryFetcher:
    """The backend's MediaFetcher interface over images already in memory (no network: HTTP excluded)."""

    images: dict = {}

    def fetch(self, url, task_id=None, hostname=None, access_token=None) -> bytes:
        return self.images[url]

    def fetch_image(self, url, task_id=None, hostname=None, access_token=None):
        from detection import open_image

        return open_image(self.fetch(url))


def _ls_boxes(prediction, size):
    """Label Studio regions -> (class indices, scores, xyxy pixel boxes), as the core's Detections."""
    from detection.boxes import xywh_to_xyxy

    width, height = size
    labels, scores, boxes = [], [], []
    for r in (prediction or {}).get("result", []):
        v = r["value"]
        labels.append(LS_LABELS.index(v["rectanglelabels"][0]))
        scores.append(r["score"])
        boxes.append([v["x"] / 100 * width, v["y"] / 100 * height, v["width"] / 100 * width,
                      v["height"] / 100 * height])
    return labels, scores, xywh_to_xyxy(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)).tolist()


def worker_main(kind: str, args: dict) -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but our frames on the pipe
    if kind == "baseline":
        worker = BaselineWorker(args["model"], args["device"])
    else:
        enable_thp_allocation()  # the process's start: before the worker imports torch
        worker = FastWorker(args["model"], args["device"], args["batch_size"])
    _send(stdout, {"ready": True, "rss_mb": _peak_rss_mb()})
    while True:
        try:
            request = _recv(stdin)
        except EOFError:
            return
        if request.get("op") == "quit":
            return
        try:
            _send(stdout, worker.run(**request))
        except Exception as exc:  # report, keep serving
            _send(stdout, {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()})


class Worker:
    def __init__(self, kind: str, args: dict, env: dict, label: str | None = None):
        self.kind = kind
        self.label = label or kind
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.workers", kind, json.dumps(args)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, env=env,
        )
        hello = _recv(self.proc.stdout)
        assert hello.get("ready"), hello

    def __call__(self, **request):
        _send(self.proc.stdin, request)
        reply = _recv(self.proc.stdout)
        if "error" in reply:
            raise RuntimeError(f"{self.kind} worker: {reply['error']}\n{reply['trace']}")
        return reply

    def close(self):
        try:
            _send(self.proc.stdin, {"op": "quit"})
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()


if __name__ == "__main__":
    worker_main(sys.argv[1], json.loads(sys.argv[2]))
