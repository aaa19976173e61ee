"""Throughput: the model-card loop vs our backend and evaluation paths, interleaved, same model/images.

    python -m benchmarks.throughput [--quick] [--device cpu|cuda|auto] [--dtypes fp32,bf16] [--rounds N]

Every path runs in a worker process that loads the model once (the same directory: the full
grounding-dino-tiny architecture, `GroundingDinoConfig()`, random weights, built into a cache under the
system temp dir when missing). Rounds go A B C A B C …, each path on the same images, so machine load
cancels out in the per-round ratios. Paths:

- model-card loop (the baseline, 1.0×), per image `AutoProcessor(images, text)` → `model(**inputs)` under
  `torch.no_grad()` → `post_process_grounded_object_detection(threshold=…)`, in a plain process (default
  PyTorch settings, as a user runs the hub's model card);
- backend: the tasks of one /predict through `backend.serving.predictor.Predictor.predict_tasks` when it exists,
  else the core's labelling mode (`Detector.detect`) in micro-batches of the backend's batch size
  (decoding included), on a 5-label Label Studio config;
- evaluation: ranking mode (`Detector.rank`, top-300) at batch 1 in fp32 (the parity settings), with the
  80 COCO names; and the fastest batch size separately;
- prompt chunks: the 80 names in 4 chunks of 20 (as LVIS's 1,203 in chunks of 40), the vision backbone run
  once per image for all chunks (the backbone_reuse lever) vs once per chunk (4 single-chunk forwards);
  the ratio of the two is printed as `chunk_reuse_speedup=<x>`.

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
import os
import statistics
import sys
from pathlib import Path

from evaluation.coco.names import COCO_NAMES

from .agreement import detection_agreement, raw_agreement, reference_detections
from .common import IMAGE_SIZES, LS_CLASSES, ROOT, make_images, model_dir
from .workers import Worker

# torch and our packages are imported inside the functions: the parent process runs no model and its
# settings must not reach the workers, which set their own before torch loads.

# Backbone reuse across prompt chunks: the 80 COCO names in CHUNKS prompts, the backbone run once per image
# vs once per chunk (= CHUNKS single-chunk forwards), both in the same interleaved rounds.
CHUNKS = 4
CHUNK_REUSE_ROW = f"evaluation rank, {CHUNKS} prompt chunks, backbone once"
CHUNK_PLAIN_ROW = f"evaluation rank, {CHUNKS} prompt chunks, backbone per chunk"
GLIBC_BACKEND_ROW = "backend /predict, 5 LS labels, fp32, glibc malloc"
GLIBC_EVAL_ROW = "evaluation rank, batch 1 (parity), fp32, glibc malloc"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 rounds of 1 image per path (3-6 minutes on a "
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
                        "backend (runtime/allocator.py); on the CPU the fp32 rows are then also run on glibc malloc")
    args = parser.parse_args(argv)
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
    from runtime.allocator import find_tcmalloc

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
    chunked = {"classes": COCO_NAMES, "mode": "eval", "dtype": "fp32", "batch": 1, "chunk_size": len(COCO_NAMES) // CHUNKS}
    rows[CHUNK_REUSE_ROW] = (fast, dict(chunked, reuse_backbone=True), "coco80", "fp32")
    rows[CHUNK_PLAIN_ROW] = (fast, dict(chunked, reuse_backbone=False), "coco80", "fp32")
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
    reuse = [p / r for p, r in zip(times[CHUNK_PLAIN_ROW], times[CHUNK_REUSE_ROW])]
    print(f"backbone reuse: one {CHUNKS}-chunk image {statistics.median(times[CHUNK_REUSE_ROW]) * 1000:.0f} ms vs "
          f"{CHUNKS} single-chunk forwards {statistics.median(times[CHUNK_PLAIN_ROW]) * 1000:.0f} ms: "
          f"chunk_reuse_speedup={statistics.median(reuse):.2f} (per-round ratios {min(reuse):.2f}-{max(reuse):.2f})")
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
