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
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from PIL import Image

from evaluation.coco.names import COCO_NAMES
from runtime.allocator import find_tcmalloc

from .agreement import detection_agreement, raw_agreement, reference_detections
from .common import IMAGE_SIZES, LS_CLASSES, ROOT, make_images, model_dir
from .workers import Worker

# torch, transformers and the backend's settings (which import torch) are imported inside the functions:
# the parent process runs no model and its settings must not reach the workers, which set their own
# before torch loads.

# Backbone reuse across prompt chunks: the 80 COCO names in CHUNKS prompts, the backbone run once per image
# vs once per chunk (= CHUNKS single-chunk forwards), both in the same interleaved rounds.
CHUNKS = 4
CHUNK_REUSE_ROW = f"evaluation rank, {CHUNKS} prompt chunks, backbone once"
CHUNK_PLAIN_ROW = f"evaluation rank, {CHUNKS} prompt chunks, backbone per chunk"
GLIBC_BACKEND_ROW = "backend /predict, 5 LS labels, fp32, glibc malloc"
GLIBC_EVAL_ROW = "evaluation rank, batch 1 (parity), fp32, glibc malloc"


BASELINE_OF = {"ls5": "model-card loop, 5 LS labels", "coco80": "model-card loop, 80 COCO names"}  # prompt -> row
PARITY_ROW = "evaluation rank, batch 1 (parity), fp32"


def build_parser() -> argparse.ArgumentParser:
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
    return parser


@dataclass(frozen=True)
class Plan:
    """The command line with the device's defaults filled in."""

    device: str
    cuda: bool
    dtypes: list[str]
    rounds: int
    per_round: int  # images per path per round
    batch_sizes: list[int]  # evaluation batch sizes besides 1
    backend_batch: int
    model: str
    quick: bool


def make_plan(args) -> Plan:
    """Defaults that depend on the device; builds the random full-size model when no --model is given."""
    device = args.device
    if device == "auto":
        import torch  # the parent runs no model; its settings do not reach the workers (explicit env)

        device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = device.startswith("cuda")
    batch_sizes = args.batch_sizes if args.batch_sizes is not None else ("2,4,8" if cuda else "2")
    return Plan(device=device, cuda=cuda,
                dtypes=(args.dtypes or ("fp32,bf16,fp16" if cuda else "fp32,bf16")).split(","),
                rounds=args.rounds or (4 if args.quick else 3),  # --quick: one image per round, finer interleave
                per_round=args.images or (1 if args.quick else 4),
                batch_sizes=[int(b) for b in batch_sizes.split(",") if b],
                backend_batch=args.backend_batch_size or (8 if cuda else 1),
                model=str(model_dir(args.model)), quick=args.quick)


@dataclass
class Workers:
    """The model-card process, the fast-path process and (CPU with tcmalloc) the fast path on glibc malloc."""

    baseline: Worker
    fast: Worker
    fast_glibc: Worker | None

    def close(self) -> None:
        for worker in (self.baseline, self.fast, self.fast_glibc):
            if worker is not None:
                worker.close()


def start_workers(plan: Plan, allocator: str, parser: argparse.ArgumentParser) -> Workers:
    """One worker process per path kind, each with its own environment: the model card as users run it,
    the fast paths on tcmalloc unless `allocator` is glibc (or it is not installed)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("LD_PRELOAD", None)
    plain_env = {k: v for k, v in env.items() if k != "THP_MEM_ALLOC_ENABLE"}  # the model card, as users run it
    tcmalloc = find_tcmalloc() if allocator != "glibc" else None
    if allocator == "tcmalloc" and tcmalloc is None:
        parser.error("--allocator tcmalloc: libtcmalloc_minimal.so.4 not found (apt-get install libtcmalloc-minimal4)")
    fast_env = dict(env, LD_PRELOAD=tcmalloc) if tcmalloc else env
    print(f"model {plan.model}; device {plan.device}; dtypes {','.join(plan.dtypes)}; {plan.rounds} rounds x "
          f"{plan.per_round} images; backend micro-batch {plan.backend_batch}; fast paths on "
          f"{'tcmalloc' if tcmalloc else 'glibc malloc'}; starting workers ...", file=sys.stderr, flush=True)
    fast_args = {"model": plan.model, "device": plan.device, "batch_size": plan.backend_batch}
    baseline = Worker("baseline", {"model": plan.model, "device": plan.device}, plain_env)
    fast = Worker("fast", fast_args, fast_env)
    # On the CPU the allocator is worth ~12%: show the fp32 rows without it too (a second process).
    fast_glibc = Worker("fast", fast_args, env, label="fast-glibc") if tcmalloc and not plan.cuda else None
    return Workers(baseline, fast, fast_glibc)


class Row(NamedTuple):
    """One measured path: the worker that runs it, its request, its prompt (a BASELINE_OF key) and dtype."""

    worker: Worker
    request: dict
    prompt: str
    dtype: str


def path_rows(plan: Plan, workers: Workers) -> dict[str, Row]:
    """Every measured path by its table name; the baseline has one row per prompt."""
    fast, fast_glibc = workers.fast, workers.fast_glibc
    ls5 = {"classes": LS_CLASSES, "mode": "backend"}
    coco = {"classes": COCO_NAMES, "mode": "eval"}
    rows = {BASELINE_OF["ls5"]: Row(workers.baseline, {"classes": LS_CLASSES}, "ls5", "fp32"),
            BASELINE_OF["coco80"]: Row(workers.baseline, {"classes": COCO_NAMES}, "coco80", "fp32")}
    for dt in plan.dtypes:
        rows[f"backend /predict, 5 LS labels, {dt}"] = Row(fast, dict(ls5, dtype=dt), "ls5", dt)
    rows[PARITY_ROW] = Row(fast, dict(coco, dtype="fp32", batch=1), "coco80", "fp32")
    if fast_glibc is not None:
        rows[GLIBC_BACKEND_ROW] = Row(fast_glibc, dict(ls5, dtype="fp32"), "ls5", "fp32")
        rows[GLIBC_EVAL_ROW] = Row(fast_glibc, dict(coco, dtype="fp32", batch=1), "coco80", "fp32")
    for dt in plan.dtypes if plan.cuda else ["fp32"]:  # on the CPU the evaluation stays fp32 (the parity setting)
        if dt != "fp32":
            rows[f"evaluation rank, batch 1, {dt}"] = Row(fast, dict(coco, dtype=dt, batch=1), "coco80", dt)
        for b in (b for b in plan.batch_sizes if b <= plan.per_round):  # a batch needs that many images per round
            rows[f"evaluation rank, batch {b}, {dt}"] = Row(fast, dict(coco, dtype=dt, batch=b), "coco80", dt)
    chunked = dict(coco, dtype="fp32", batch=1, chunk_size=len(COCO_NAMES) // CHUNKS)
    rows[CHUNK_REUSE_ROW] = Row(fast, dict(chunked, reuse_backbone=True), "coco80", "fp32")
    rows[CHUNK_PLAIN_ROW] = Row(fast, dict(chunked, reuse_backbone=False), "coco80", "fp32")
    return rows


def warm_up(rows: dict[str, Row], images: list[bytes], baseline: Worker, quick: bool) -> None:
    """First-call costs (allocator, oneDNN primitives for new shapes) paid before timing: every path,
    per dtype and batch shape, every image size (--quick: one batch)."""
    print("warm-up ...", file=sys.stderr, flush=True)
    warmed = set()
    for worker, request, _, dt in rows.values():
        key = (worker.label, dt, request.get("batch", 1))
        if key not in warmed:
            warmed.add(key)
            n = request.get("batch", 1) if quick or worker is baseline else len(images)
            worker(images=images[:n], **request)


@dataclass
class Measured:
    """Per row and round: seconds and CPU seconds per image, raw outputs and detections; per worker its
    peak RSS and malloc; the fast paths' notes and THP lever; the image indices of each round."""

    times: dict
    cpu_times: dict
    raw: dict
    dets: dict
    rss: dict = field(default_factory=dict)
    notes: set = field(default_factory=set)
    thp: object = None
    allocators: dict = field(default_factory=dict)
    round_images: list = field(default_factory=list)


def measure(rows: dict[str, Row], images: list[bytes], rounds: int, per_round: int) -> Measured:
    """Interleaved rounds A B C A B C …: every path on the same images in each round."""
    def per_row() -> dict:
        return {name: [] for name in rows}

    m = Measured(times=per_row(), cpu_times=per_row(), raw=per_row(), dets=per_row())
    for r in range(rounds):
        idx = [(r * per_round + i) % len(images) for i in range(per_round)]
        m.round_images.append(idx)
        batch = [images[i] for i in idx]
        for name, (worker, request, _, _) in rows.items():
            reply = worker(images=batch, **request)
            m.times[name].append(reply["seconds"] / len(batch))
            m.cpu_times[name].append(reply["cpu"] / len(batch))
            m.raw[name].append(reply["raw"])
            m.dets[name].append(reply.get("detections"))
            m.rss[worker.label] = reply["rss_mb"]
            if reply.get("allocator"):
                m.allocators[worker.label] = reply["allocator"]
            if reply.get("note"):
                m.notes.add(reply["note"])
            m.thp = reply.get("thp", m.thp)
            print(f"  round {r + 1}/{rounds} {name}: {reply['seconds'] / len(batch) * 1000:.0f} ms/image",
                  file=sys.stderr, flush=True)
    return m


def agreement_with_baseline(rows: dict[str, Row], m: Measured, model: str, sizes: list) -> dict:
    """Per fast row: (raw agreement with its baseline row's outputs on the same images and prompt, or None;
    for a backend row, its detections vs the same post-processing of the baseline's raw outputs)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    agreement = {}
    for name, (_, request, prompt, _) in rows.items():
        base_name = BASELINE_OF[prompt]
        if name == base_name or name.startswith("model-card"):
            continue
        ref_raw = [x for rr in m.raw[base_name] for x in rr]
        got_raw = [x for rr in m.raw[name] for x in rr]
        agree = raw_agreement(ref_raw, got_raw) if len(got_raw) == len(ref_raw) else None
        det_agree = None
        if request.get("mode") == "backend" and all(d is not None for d in m.dets[name]):
            got = [d for dd in m.dets[name] for d in dd]
            ref = reference_detections(ref_raw, request["classes"], tokenizer,
                                       [sizes[i] for idx in m.round_images for i in idx])
            det_agree = detection_agreement(ref, got)
        agreement[name] = (agree, det_agree)
    return agreement


def per_round_ratios(rows: dict[str, Row], per_image: dict) -> dict[str, list[float]]:
    """Per row and round: its baseline row's seconds per image over its own (the speed-up, > 1 is faster)."""
    return {name: [b / t for b, t in zip(per_image[BASELINE_OF[row.prompt]], per_image[name])]
            for name, row in rows.items()}


def print_table(plan: Plan, workers: Workers, rows: dict[str, Row], m: Measured, agreement: dict) -> None:
    """The header lines and the Markdown table, one line per path, with its footnote."""
    ratios, cpu_ratios = per_round_ratios(rows, m.times), per_round_ratios(rows, m.cpu_times)
    print()
    print(f"device: {plan.device} ({_device_name(plan.device)}); torch threads: {_threads()}; model: full "
          f"grounding-dino-tiny architecture, random weights; images: "
          f"{', '.join(f'{w}x{h}' for w, h in IMAGE_SIZES)}; {plan.rounds} rounds x {plan.per_round} images, interleaved")
    print(f"fast paths: THP allocation lever {'on' if m.thp else 'off'}; malloc: {m.allocators.get('fast', '?')}"
          f"{' (glibc-malloc rows: a second process on glibc malloc)' if workers.fast_glibc else ''}; backend: "
          f"{'; '.join(sorted(m.notes)) or 'core labelling mode'}; backend micro-batch {plan.backend_batch}")
    header = f"| {'path':<54} | dtype | images/s | ms/image | vs model card (median, min-max) | CPU s/image | vs model card, CPU time | max Δlogit* | max Δbox* | top-100 overlap* | detections** |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for name, (_, request, prompt, dt) in rows.items():
        ms = statistics.median(m.times[name]) * 1000
        rr, cr = ratios[name], cpu_ratios[name]
        agree, det_agree = agreement.get(name, (None, None))
        a = ("-", "-", "-") if agree is None else (
            f"{agree['logit']:.1e} ({agree['logit'] / (agree['scale'] or 1):.0e} rel.)", f"{agree['box']:.1e}",
            f"{agree['top100']:.2f}")
        d = "-" if det_agree is None else (
            f"{det_agree['matched']}/{det_agree['total']} matched, +{det_agree['extra']}, max Δscore {det_agree['score']:.1e}")
        print(f"| {name:<54} | {dt:<5} | {1000 / ms:8.3f} | {ms:8.0f} | "
              f"{statistics.median(rr):5.2f}x ({min(rr):.2f}-{max(rr):.2f}) | {statistics.median(m.cpu_times[name]):6.1f} | "
              f"{statistics.median(cr):5.2f}x ({min(cr):.2f}-{max(cr):.2f}) | {a[0]} | {a[1]} | {a[2]} | {d} |")
    print("* vs the baseline's raw outputs on its top-100 queries, queries matched up to order (nearest box and logits); "
          "rel. = relative to the baseline's largest |logit| (random weights give logits in the hundreds); "
          "** the backend's boxes vs the same post-processing of the baseline's raw outputs: matched "
          "(same label, IoU >= 0.9) / reference count, + extra boxes, max |Δscore| of matched boxes")


def print_summary(rows: dict[str, Row], m: Measured, backend_dtype: str | None) -> None:
    """Peak memory, the backbone-reuse speed-up, the glibc-malloc ratios and, last, the summary line."""
    ratios = per_round_ratios(rows, m.times)
    print(f"peak RSS: model-card process {m.rss.get('baseline', 0):.0f} MB, fast-path process {m.rss.get('fast', 0):.0f} MB "
          "(one model shared by every fast row)"
          + (f", glibc-malloc fast-path process {m.rss['fast-glibc']:.0f} MB" if "fast-glibc" in m.rss else ""))
    backend_dtype = backend_dtype or _backend_default_dtype()
    backend_default = next((n for n in rows if n.startswith("backend") and n.endswith(backend_dtype)),
                           next(n for n in rows if n.startswith("backend")))
    backend = statistics.median(ratios[backend_default])
    evaluation = statistics.median(ratios[PARITY_ROW])
    reuse = [p / r for p, r in zip(m.times[CHUNK_PLAIN_ROW], m.times[CHUNK_REUSE_ROW])]
    print(f"backbone reuse: one {CHUNKS}-chunk image {statistics.median(m.times[CHUNK_REUSE_ROW]) * 1000:.0f} ms vs "
          f"{CHUNKS} single-chunk forwards {statistics.median(m.times[CHUNK_PLAIN_ROW]) * 1000:.0f} ms: "
          f"chunk_reuse_speedup={statistics.median(reuse):.2f} (per-round ratios {min(reuse):.2f}-{max(reuse):.2f})")
    if GLIBC_BACKEND_ROW in rows:
        print(f"on glibc malloc (no tcmalloc): backend {statistics.median(ratios[GLIBC_BACKEND_ROW]):.2f}x, "
              f"evaluation {statistics.median(ratios[GLIBC_EVAL_ROW]):.2f}x")
    print(f"(backend_vs_model_card: row '{backend_default}'; eval_vs_model_card: batch-1 parity row; fast paths on "
          f"{m.allocators.get('fast', '?')}, as the backend runs from `make serve` and the Docker image)")
    print(f"backend_vs_model_card={backend:.2f} eval_vs_model_card={evaluation:.2f}")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    plan = make_plan(args)
    images = make_images()
    sizes = [Image.open(io.BytesIO(b)).size for b in images]
    workers = start_workers(plan, args.allocator, parser)
    rows = path_rows(plan, workers)
    warm_up(rows, images, workers.baseline, plan.quick)
    measured = measure(rows, images, plan.rounds, plan.per_round)
    workers.close()
    agreement = agreement_with_baseline(rows, measured, plan.model, sizes)
    print_table(plan, workers, rows, measured, agreement)
    print_summary(rows, measured, args.backend_dtype)
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
