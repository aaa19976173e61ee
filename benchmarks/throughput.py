"""Throughput: the model-card loop vs our backend and evaluation paths, interleaved, same model/images.

    python -m benchmarks.throughput [--quick] [--device cpu|cuda|auto] [--dtypes fp32,bf16] [--rounds N]

Every path runs in a worker process that loads the model once (the same directory: the full
grounding-dino-tiny architecture, `GroundingDinoConfig()`, random weights, built into a cache under the
system temp dir when missing). Rounds go A B C A B C …, each path on the same images, so machine load
cancels out in the per-round ratios. Paths:

- model-card loop (the baseline, 1.0×), per image `AutoProcessor(images, text)` → `model(**inputs)` under
  `torch.no_grad()` → `post_process_grounded_object_detection(threshold=…)`, in a plain process (default
  PyTorch settings, as a user runs the hub's model card);
- backend: the tasks of one /predict through `backend.predictor.Predictor.predict_tasks` when it exists,
  else the core's labelling mode (`Detector.detect`) in micro-batches of the backend's batch size
  (decoding included), on a 5-label Label Studio config;
- evaluation: ranking mode (`Detector.rank`, top-300) at batch 1 in fp32 (the parity settings), with the
  80 COCO names; and the fastest batch size separately.

The fast paths run on tcmalloc when it is installed (`LD_PRELOAD`, as `make serve` and the Docker image
run the backend; `--allocator glibc` to turn it off); on the CPU their fp32 rows then run once more in a
second process on glibc malloc, so both figures come from the same run.

Agreement with the baseline's raw outputs is checked on every image (max |Δlogit|, max |Δbox|, overlap
of the top-100 queries); the backend's detections are compared with the detections the same
post-processing gives on the baseline's raw outputs. The last line is
`backend_vs_model_card=<x> eval_vs_model_card=<y>`.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from evaluation.coco.names import COCO_NAMES  # noqa: E402
LS_LABELS = ["Person", "Car", "Dog", "TrafficLight", "Bicycle"]
LS_CLASSES = ["person", "car", "dog", "traffic light", "bicycle"]  # what the config's labels prompt
LS_CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    + "".join(f'<Label value="{v}"/>' for v in LS_LABELS)
    + "</RectangleLabels></View>"
)
IMAGE_SIZES = [(640, 480), (480, 640), (640, 427), (500, 375)]  # COCO-like (width, height)
BOX_THRESHOLD = 0.35  # the backend's default
TEXT_THRESHOLD = 0.25  # the model card's
GLIBC_BACKEND_ROW = "backend /predict, 5 LS labels, fp32, glibc malloc"
GLIBC_EVAL_ROW = "evaluation rank, batch 1 (parity), fp32, glibc malloc"


def caption(classes) -> str:
    return " ".join(f"{c} ." for c in classes)


def make_images(seed: int = 0) -> list[bytes]:
    """JPEG bytes of drawn shapes on noise, COCO-like sizes."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.RandomState(seed)
    out = []
    for width, height in IMAGE_SIZES:
        image = Image.fromarray((rng.rand(height, width, 3) * 255).astype("uint8"))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x0, y0 = int(rng.randint(0, width - 40)), int(rng.randint(0, height - 40))
            x1, y1 = x0 + int(rng.randint(20, width // 2)), y0 + int(rng.randint(20, height // 2))
            fill = tuple(int(v) for v in rng.randint(0, 255, 3))
            (draw.ellipse if rng.rand() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=fill)
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def model_dir(path: str | None) -> Path:
    if path:
        return Path(path)
    target = Path(tempfile.gettempdir()) / "gdino-bench-cache" / "full-tiny-random"
    if not (target / "model.safetensors").exists():
        print(f"building the full-size random model into {target} ...", file=sys.stderr, flush=True)
        sys.path.insert(0, str(ROOT / "tests"))
        from model_factory import build_full_size_model

        build_full_size_model(target)
    return target


# ----------------------------------------------------------------------------------------------------
# Workers: one process per kind, length-prefixed pickles over stdin/stdout.


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
    import resource

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
        from PIL import Image

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
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class FastWorker:
    """Our code: the backend path and the evaluation path, sharing one model (as the server does)."""

    def __init__(self, model: str, device: str, batch_size: int):
        from backend.detection import Detector, DetectorConfig  # first: sets the THP lever before torch
        from backend.detection import detector as detector_module

        self.thp = detector_module.THP_LEVER_ACTIVE
        self.Detector, self.DetectorConfig = Detector, DetectorConfig
        self.base = Detector.load(DetectorConfig(model=model, device=device))
        self.detectors = {"fp32": self.base}
        self.device = device
        self.batch_size = batch_size
        self.predictor_note = None
        self.predictors = {}
        self._recorded: list = []

    def detector(self, dtype: str):
        if dtype not in self.detectors:
            cfg = self.DetectorConfig(model=self.base.config.model, device=self.device, dtype=dtype)
            self.detectors[dtype] = self.Detector(self.base.model, self.base.processor, cfg)  # same weights
        det = self.detectors[dtype]
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
        """backend.predictor.Predictor if the backend has one, else None (core fallback)."""
        if dtype in self.predictors:
            return self.predictors[dtype]
        try:
            from backend.predictor import Predictor
            from backend.settings import Settings
        except ImportError as exc:
            self.predictor_note = f"backend.predictor unavailable ({exc}); core labelling mode used"
            self.predictors[dtype] = None
            return None
        settings = Settings(model=self.base.config.model, device=self.device, dtype=dtype, batch_size=self.batch_size)
        self.predictors[dtype] = Predictor(self.detector(dtype), settings, fetcher=MemoryFetcher())
        self.predictor_note = "backend.predictor.Predictor.predict_tasks (everything but HTTP)"
        return self.predictors[dtype]

    def run(self, images: list[bytes], classes: list[str], mode: str, dtype: str = "fp32", batch: int = 1, **_):
        from backend.detection import open_image

        det = self.detector(dtype)
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
        else:  # evaluation: ranking mode
            prompt = det.prompt(classes)
            _sync(self.device)
            start, cpu_start = time.perf_counter(), _cpu_seconds()
            decoded = [open_image(data) for data in images]
            for i in range(0, len(decoded), batch):
                det.rank(decoded[i : i + batch], prompt, num_select=300)
            _sync(self.device)
            seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
        from backend.allocator import active_allocator

        return {"seconds": seconds, "cpu": cpu, "raw": self._recorded, "detections": detections, "rss_mb": _peak_rss_mb(),
                "thp": self.thp, "note": self.predictor_note, "allocator": active_allocator()}



class MemoryFetcher:
    """The backend's MediaFetcher interface over images already in memory (no network: HTTP excluded)."""

    images: dict = {}

    def fetch(self, url, task_id=None, hostname=None, access_token=None) -> bytes:
        return self.images[url]


def _ls_boxes(prediction, size):
    """Label Studio regions -> (class indices, scores, xyxy pixel boxes), as the core's Detections."""
    width, height = size
    labels, scores, boxes = [], [], []
    for r in (prediction or {}).get("result", []):
        v = r["value"]
        labels.append(LS_LABELS.index(v["rectanglelabels"][0]))
        scores.append(r["score"])
        x, y = v["x"] / 100 * width, v["y"] / 100 * height
        boxes.append([x, y, x + v["width"] / 100 * width, y + v["height"] / 100 * height])
    return labels, scores, boxes


def worker_main(kind: str, args: dict) -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but our frames on the pipe
    if kind == "baseline":
        worker = BaselineWorker(args["model"], args["device"])
    else:
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
            import traceback

            _send(stdout, {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()})


class Worker:
    def __init__(self, kind: str, args: dict, env: dict, label: str | None = None):
        self.kind = kind
        self.label = label or kind
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.throughput", "--worker", kind, "--worker-args", json.dumps(args)],
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


# ----------------------------------------------------------------------------------------------------
# Agreement checks


def raw_agreement(ref, got, k=100):
    """Raw outputs vs the baseline's, on the baseline's top-k queries (by max logit).

    Queries are matched up to order first: the two-stage selection of the 900 decoder queries is a top-k
    over encoder proposal scores, and proposals whose scores tie to float precision may come out in
    another order (the decoder is permutation-equivariant, so the outputs are the same set). Each
    baseline query is matched to the query with the nearest box; then max |Δlogit| (finite entries),
    max |Δbox|, and the overlap of the top-k query sets.
    """
    import torch

    out = {"logit": 0.0, "box": 0.0, "top100": 1.0, "scale": 0.0}
    for (lr, br), (lg, bg) in zip(ref, got):
        out["scale"] = max(out["scale"], float(lr[torch.isfinite(lr)].abs().max()))
        k_ = min(k, lr.shape[0])
        top_r = lr.max(-1).values.topk(k_).indices
        # Match on boxes and logits together: random weights saturate many boxes to the same values.
        key_r = torch.cat([br, torch.nan_to_num(lr, neginf=0.0)], -1)
        key_g = torch.cat([bg, torch.nan_to_num(lg, neginf=0.0)], -1)
        match = torch.cdist(key_r[top_r], key_g, p=float("inf")).argmin(-1)  # (k,) index into got
        lr_, lg_ = lr[top_r], lg[match]
        finite = torch.isfinite(lr_)
        if not torch.equal(finite, torch.isfinite(lg_)):
            out["logit"] = float("inf")
        else:
            out["logit"] = max(out["logit"], float((lr_[finite] - lg_[finite]).abs().max()))
        out["box"] = max(out["box"], float((br[top_r] - bg[match]).abs().max()))
        top_g = set(lg.max(-1).values.topk(k_).indices.tolist())
        out["top100"] = min(out["top100"], len(set(match.tolist()) & top_g) / k_)
    return out


def detection_agreement(ref, got, iou_min=0.9):
    """Reference detections (same post-processing on the baseline's raw outputs) vs the path's."""
    import torch
    from backend.detection import box_iou

    total = matched = extra = 0
    score_diff = 0.0
    for (rl, rs, rb), (gl, gs, gb) in zip(ref, got):
        total += len(rl)
        extra += max(0, len(gl) - len(rl))
        if not rl or not gl:
            continue
        iou = box_iou(torch.tensor(rb, dtype=torch.float32).view(-1, 4), torch.tensor(gb, dtype=torch.float32).view(-1, 4))
        used = set()
        for i in range(len(rl)):
            best, best_j = 0.0, None
            for j in range(len(gl)):
                if j not in used and gl[j] == rl[i] and float(iou[i, j]) > best:
                    best, best_j = float(iou[i, j]), j
            if best_j is not None and best >= iou_min:
                used.add(best_j)
                matched += 1
                score_diff = max(score_diff, abs(rs[i] - gs[best_j]))
    return {"matched": matched, "total": total, "extra": extra, "score": score_diff}


def reference_detections(raw, classes, tokenizer, sizes):
    """Our labelling post-processing on the baseline's raw outputs (the detections to reproduce)."""
    from backend.detection import build_prompt, label_detections

    chunk = build_prompt(tokenizer, classes).chunks[0]
    out = []
    for (logits, boxes), size in zip(raw, sizes):
        (d,) = label_detections(logits[None], boxes[None], chunk, [size], BOX_THRESHOLD)
        out.append((d.labels.tolist(), d.scores.tolist(), d.boxes.tolist()))
    return out


# ----------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 rounds of 1 image per path (6-12 minutes on a shared "
                        "2-core CPU); batch sizes > 1 need --images >= the batch size")
    parser.add_argument("--device", default="auto", help="auto (cuda if present, else cpu), cpu, cuda, cuda:N")
    parser.add_argument("--dtypes", default=None, help="backend/evaluation dtypes, e.g. fp32,bf16 (default: "
                        "fp32,bf16 on the CPU, fp32,bf16,fp16 on CUDA)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3; --quick 2)")
    parser.add_argument("--images", type=int, default=None, help="images per path per round (default 4; --quick 2)")
    parser.add_argument("--batch-sizes", default=None, help="evaluation batch sizes besides 1 (default 2 on the "
                        "CPU, 2,4,8 on CUDA; empty for none)")
    parser.add_argument("--backend-batch-size", type=int, default=None, help="micro-batch of the backend path "
                        "(default: 1 on the CPU, where batching does not pay, 8 on CUDA)")
    parser.add_argument("--backend-dtype", default=None, help="the backend row of the summary line (default: "
                        "the backend's default DTYPE setting)")
    parser.add_argument("--model", default=None, help="model directory (default: a random full-size model)")
    parser.add_argument("--allocator", choices=("auto", "tcmalloc", "glibc"), default="auto", help="malloc of the "
                        "fast paths: auto = tcmalloc when installed, as `make serve` and the Docker image run the "
                        "backend (backend/allocator.py); on the CPU the fp32 rows are then also run on glibc malloc")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-args", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.worker, json.loads(args.worker_args))
        return 0

    device = args.device
    if device == "auto":
        import torch  # the parent runs no model; its settings do not reach the workers (explicit env)

        device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = device.startswith("cuda")
    dtypes = (args.dtypes or ("fp32,bf16,fp16" if cuda else "fp32,bf16")).split(",")
    rounds = args.rounds or (4 if args.quick else 3)  # --quick: one image per path per round, finer interleave
    per_round = args.images or (1 if args.quick else 4)
    batch_sizes = [int(b) for b in (args.batch_sizes if args.batch_sizes is not None else ("2,4,8" if cuda else "2")).split(",") if b]
    backend_batch = args.backend_batch_size or (8 if cuda else 1)
    model = str(model_dir(args.model))
    images = make_images()
    from PIL import Image

    sizes = [Image.open(io.BytesIO(b)).size for b in images]

    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("LD_PRELOAD", None)
    plain_env = {k: v for k, v in env.items() if k != "THP_MEM_ALLOC_ENABLE"}  # the model card, as users run it
    from backend.allocator import find_tcmalloc

    tcmalloc = find_tcmalloc() if args.allocator != "glibc" else None
    if args.allocator == "tcmalloc" and tcmalloc is None:
        parser.error("--allocator tcmalloc: libtcmalloc_minimal.so.4 not found (apt-get install libtcmalloc-minimal4)")
    fast_env = dict(env, LD_PRELOAD=tcmalloc) if tcmalloc else env
    print(f"model {model}; device {device}; dtypes {','.join(dtypes)}; {rounds} rounds x {per_round} images; "
          f"backend micro-batch {backend_batch}; fast paths on {'tcmalloc' if tcmalloc else 'glibc malloc'}; "
          "starting workers ...", file=sys.stderr, flush=True)
    fast_args = {"model": model, "device": device, "batch_size": backend_batch}
    baseline = Worker("baseline", {"model": model, "device": device}, plain_env)
    fast = Worker("fast", fast_args, fast_env)
    # On the CPU the allocator is worth ~12%: show the fp32 rows without it too (a second process).
    fast_glibc = Worker("fast", fast_args, env, label="fast-glibc") if tcmalloc and not cuda else None

    # Rows: name -> (worker, request, prompt); the baseline has one row per prompt.
    rows = {
        "model-card loop, 5 LS labels": (baseline, {"classes": LS_CLASSES}, "ls5", "fp32"),
        "model-card loop, 80 COCO names": (baseline, {"classes": COCO_NAMES}, "coco80", "fp32"),
    }
    for dt in dtypes:
        rows[f"backend /predict, 5 LS labels, {dt}"] = (fast, {"classes": LS_CLASSES, "mode": "backend", "dtype": dt}, "ls5", dt)
    rows["evaluation rank, batch 1 (parity), fp32"] = (fast, {"classes": COCO_NAMES, "mode": "eval", "dtype": "fp32", "batch": 1}, "coco80", "fp32")
    if fast_glibc is not None:
        rows[GLIBC_BACKEND_ROW] = (fast_glibc, {"classes": LS_CLASSES, "mode": "backend", "dtype": "fp32"}, "ls5", "fp32")
        rows[GLIBC_EVAL_ROW] = (fast_glibc, {"classes": COCO_NAMES, "mode": "eval", "dtype": "fp32", "batch": 1}, "coco80", "fp32")
    for dt in dtypes if cuda else ["fp32"]:  # on the CPU the evaluation stays fp32 (the parity setting)
        if dt != "fp32":
            rows[f"evaluation rank, batch 1, {dt}"] = (fast, {"classes": COCO_NAMES, "mode": "eval", "dtype": dt, "batch": 1}, "coco80", dt)
        for b in (b for b in batch_sizes if b <= per_round):  # a batch needs that many images per round
            rows[f"evaluation rank, batch {b}, {dt}"] = (fast, {"classes": COCO_NAMES, "mode": "eval", "dtype": dt, "batch": b}, "coco80", dt)
    baseline_of = {"ls5": "model-card loop, 5 LS labels", "coco80": "model-card loop, 80 COCO names"}

    # Warm-up (first-call costs: allocator, oneDNN primitives for new shapes): every path, every size.
    print("warm-up ...", file=sys.stderr, flush=True)
    warmed = set()
    for name, (worker, request, _, dt) in rows.items():
        key = (worker.label, dt, request.get("batch", 1))
        if key not in warmed:  # per dtype and batch shape: every image size (--quick: one batch)
            warmed.add(key)
            n = request.get("batch", 1) if args.quick or worker is baseline else len(images)
            worker(images=images[:n], **request)

    times = {name: [] for name in rows}
    cpu_times = {name: [] for name in rows}
    raw = {name: [] for name in rows}
    dets = {name: [] for name in rows}
    rss, notes, thp, allocators = {}, set(), None, {}
    round_images = []
    for r in range(rounds):
        idx = [(r * per_round + i) % len(images) for i in range(per_round)]
        round_images.append(idx)
        batch = [images[i] for i in idx]
        for name, (worker, request, _, _) in rows.items():
            reply = worker(images=batch, **request)
            times[name].append(reply["seconds"] / len(batch))
            cpu_times[name].append(reply["cpu"] / len(batch))
            raw[name].append(reply["raw"])
            dets[name].append(reply.get("detections"))
            rss[worker.label] = reply["rss_mb"]
            if reply.get("allocator"):
                allocators[worker.label] = reply["allocator"]
            if reply.get("note"):
                notes.add(reply["note"])
            thp = reply.get("thp", thp)
            print(f"  round {r + 1}/{rounds} {name}: {reply['seconds'] / len(batch) * 1000:.0f} ms/image",
                  file=sys.stderr, flush=True)
    for worker in (baseline, fast, fast_glibc):
        if worker is not None:
            worker.close()

    # Agreement with the baseline's raw outputs (same images, same prompt).
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    agreement = {}
    for name, (_, request, prompt, _) in rows.items():
        base_name = baseline_of[prompt]
        if name == base_name or name.startswith("model-card"):
            continue
        ref_raw = [x for rr in raw[base_name] for x in rr]
        got_raw = [x for rr in raw[name] for x in rr]
        agree = raw_agreement(ref_raw, got_raw) if len(got_raw) == len(ref_raw) else None
        det_agree = None
        if request.get("mode") == "backend" and all(d is not None for d in dets[name]):
            got = [d for dd in dets[name] for d in dd]
            ref = reference_detections(ref_raw, request["classes"], tokenizer,
                                       [sizes[i] for idx in round_images for i in idx])
            det_agree = detection_agreement(ref, got)
        agreement[name] = (agree, det_agree)

    # Table
    ratios, cpu_ratios = {}, {}
    for name, (_, _, prompt, _) in rows.items():
        base = times[baseline_of[prompt]]
        ratios[name] = [b / t for b, t in zip(base, times[name])]
        cpu_ratios[name] = [b / t for b, t in zip(cpu_times[baseline_of[prompt]], cpu_times[name])]
    print()
    print(f"device: {device} ({_device_name(device)}); torch threads: {_threads()}; model: full grounding-dino-tiny "
          f"architecture, random weights; images: {', '.join(f'{w}x{h}' for w, h in IMAGE_SIZES)}; "
          f"{rounds} rounds x {per_round} images, interleaved")
    print(f"fast paths: THP allocation lever {'on' if thp else 'off'}; malloc: {allocators.get('fast', '?')}"
          f"{' (glibc-malloc rows: a second process on glibc malloc)' if fast_glibc else ''}; backend: "
          f"{'; '.join(sorted(notes)) or 'core labelling mode'}; backend micro-batch {backend_batch}")
    header = f"| {'path':<54} | dtype | images/s | ms/image | vs model card (median, min-max) | CPU s/image | vs model card, CPU time | max Δlogit* | max Δbox* | top-100 overlap* | detections** |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for name, (_, request, prompt, dt) in rows.items():
        ms = statistics.median(times[name]) * 1000
        rr, cr = ratios[name], cpu_ratios[name]
        agree, det_agree = agreement.get(name, (None, None))
        a = ("-", "-", "-") if agree is None else (
            f"{agree['logit']:.1e} ({agree['logit'] / (agree['scale'] or 1):.0e} rel.)", f"{agree['box']:.1e}",
            f"{agree['top100']:.2f}")
        d = "-" if det_agree is None else (
            f"{det_agree['matched']}/{det_agree['total']} matched, +{det_agree['extra']}, max Δscore {det_agree['score']:.1e}")
        print(f"| {name:<54} | {dt:<5} | {1000 / ms:8.3f} | {ms:8.0f} | "
              f"{statistics.median(rr):5.2f}x ({min(rr):.2f}-{max(rr):.2f}) | {statistics.median(cpu_times[name]):6.1f} | "
              f"{statistics.median(cr):5.2f}x ({min(cr):.2f}-{max(cr):.2f}) | {a[0]} | {a[1]} | {a[2]} | {d} |")
    print("* vs the baseline's raw outputs on its top-100 queries, queries matched up to order (nearest box and logits); "
          "rel. = relative to the baseline's largest |logit| (random weights give logits in the hundreds); "
          "** the backend's boxes vs the same post-processing of the baseline's raw outputs: matched "
          "(same label, IoU >= 0.9) / reference count, + extra boxes, max |Δscore| of matched boxes")
    print(f"peak RSS: model-card process {rss.get('baseline', 0):.0f} MB, fast-path process {rss.get('fast', 0):.0f} MB "
          "(one model shared by every fast row)"
          + (f", glibc-malloc fast-path process {rss['fast-glibc']:.0f} MB" if "fast-glibc" in rss else ""))
    backend_dtype = args.backend_dtype or _backend_default_dtype()
    backend_default = next((n for n in rows if n.startswith("backend") and n.endswith(backend_dtype)),
                           next(n for n in rows if n.startswith("backend")))
    backend = statistics.median(ratios[backend_default])
    evaluation = statistics.median(ratios["evaluation rank, batch 1 (parity), fp32"])
    if fast_glibc is not None:
        print(f"on glibc malloc (no tcmalloc): backend {statistics.median(ratios[GLIBC_BACKEND_ROW]):.2f}x, "
              f"evaluation {statistics.median(ratios[GLIBC_EVAL_ROW]):.2f}x")
    print(f"(backend_vs_model_card: row '{backend_default}'; eval_vs_model_card: batch-1 parity row; fast paths on "
          f"{allocators.get('fast', '?')}, as the backend runs from `make serve` and the Docker image)")
    print(f"backend_vs_model_card={backend:.2f} eval_vs_model_card={evaluation:.2f}")
    return 0


def _backend_default_dtype() -> str:
    """The backend's configured default dtype (backend.settings), used for the summary line."""
    try:
        from backend.settings import Settings

        return Settings().dtype
    except Exception:
        return "fp32"


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{os.cpu_count()} cores"


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    sys.exit(main())
