"""Load: the real server (`python -m backend`, a small random model) under concurrent /predict calls of
1-32 tasks from several clients, while /health and /setup are probed every 200 ms.

Asserts and prints: every request answered with one item per task, in order (each item is checked to
belong to its task: region ids hash the task id, and its boxes equal the image's own reference);
/health p99 < 1 s and /setup p99 < 3 s (Label Studio's timeouts); the server's thread count bounded;
no second model copy (RSS never jumps by the model's size); RSS flat from after warm-up to the end.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageDraw

from tests.reliability.rel_helpers import CONFIG, png_bytes, same_result

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

LOAD_SECONDS = 40
MAX_REQUESTS = 120
CLIENTS = 4
SIZES = [1, 2, 3, 4, 5, 8, 13, 21, 32]
BATCH_SIZE = 4
MAX_PENDING = 16


def build_load_model(out: Path) -> Path:
    """The tiny test model with a BERT-base sized text encoder (~440 MB of weights) so that a second copy of the
    model would show in the process's RSS; the text encoder runs once per prompt (text cache), so
    predictions stay as fast as the tiny model's. Images are resized to 160 px (as the evaluation tests)."""
    from transformers import BertConfig

    from tests.model_factory import build_tiny_model, set_input_size, tiny_config

    config = tiny_config()
    config.text_config = BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                    intermediate_size=3072)
    return set_input_size(build_tiny_model(out, config=config), 160, 267)


def proc_status(pid: int) -> dict:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])  # kB, or a count
    return out


def bare_process_rss(model_dir: Path) -> int:
    """RSS (bytes) of a process that imports everything the backend imports but loads no weights."""
    code = ("import backend.app.server, detection, transformers, torch;"
            "from transformers import GroundingDinoForObjectDetection, AutoProcessor;"
            f"AutoProcessor.from_pretrained({str(model_dir)!r});"
            "print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                         cwd=Path(__file__).parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.strip().splitlines()[-1]) * 1024


def region_ids(task_id, n: int) -> set:
    return {hashlib.sha1(f"{task_id}/label/image/{k}".encode()).hexdigest()[:10] for k in range(n)}


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def make_images(root: Path) -> list[str]:
    names = []
    for i in range(6):
        image = Image.new("RGB", (120, 90), (30 * i, 200 - 25 * i, 90))
        draw = ImageDraw.Draw(image)
        draw.rectangle([10 + 8 * i, 10, 60 + 8 * i, 70], fill=(250, 230 - 30 * i, 20))
        draw.ellipse([70, 20 + 5 * i, 110, 80], fill=(20, 20, 20 + 30 * i))
        name = f"img{i}.png"
        (root / name).write_bytes(png_bytes(image))
        names.append(name)
    return names


def test_load_nothing_lost_probes_fast_memory_flat(tiny_model_dir, tmp_path, start_backend, http_server):
    model = build_load_model(tmp_path / "load-model")
    model_bytes = sum(p.stat().st_size for p in model.glob("*.safetensors"))
    bare_rss = bare_process_rss(model)
    root = tmp_path / "media"
    root.mkdir()
    names = make_images(root)
    for name in names:  # the same images over HTTP too
        http_server.file(f"/{name}", (root / name).read_bytes(), content_type="image/png")
    sources = [f"/data/local-files/?d={n}" for n in names] + [f"{http_server.url}/{n}" for n in names]
    image_of = {s: s.rsplit("=", 1)[-1].rsplit("/", 1)[-1] for s in sources}
    bad_source = f"{http_server.url}/missing.png"  # 404: an error item, in place
    server = start_backend(GROUNDING_DINO_MODEL=str(model), LOCAL_FILES_DOCUMENT_ROOT=str(root),
                           ALLOWED_MEDIA_HOSTS=f"127.0.0.1:{http_server.port}", BATCH_SIZE=str(BATCH_SIZE),
                           MAX_PENDING_PREDICTS=str(MAX_PENDING))
    base = server.url
    start_status = proc_status(server.pid)

    # ----- warm-up: every image once (its reference), then a full 32-task request -----------------------
    with httpx.Client(timeout=120) as http:
        version = http.post(f"{base}/setup", json={"project": "1.1", "schema": CONFIG}).json()["model_version"]
        ref_items = http.post(f"{base}/predict", json={
            "tasks": [{"id": i, "data": {"image": f"/data/local-files/?d={n}"}} for i, n in enumerate(names)],
            "label_config": CONFIG}).json()["results"]
        reference = dict(zip(names, ref_items))
        assert all("result" in r for r in ref_items), ref_items
        warm = http.post(f"{base}/predict", json={
            "tasks": [{"id": 10_000 + i, "data": {"image": sources[i % len(sources)]}} for i in range(32)],
            "label_config": CONFIG})
        assert warm.status_code == 200
    time.sleep(1)
    warm_status = proc_status(server.pid)

    # ----- load ------------------------------------------------------------------------------------------
    stop = threading.Event()
    lock = threading.Lock()
    next_id = [1_000_000]
    requests_sent = [0]
    problems: list[str] = []
    stats = {"sizes": [], "requests": 0, "tasks": 0, "errors_expected": 0, "regions": 0, "latency": []}
    samples = {"health": [], "setup": [], "rss": [], "threads": []}
    probe_failures: list[str] = []

    def take_ids(n):
        with lock:
            if requests_sent[0] >= MAX_REQUESTS:
                return None
            requests_sent[0] += 1
            first = next_id[0]
            next_id[0] += n
            return list(range(first, first + n))

    def client(seed: int):
        rng = random.Random(seed)
        order = []
        with httpx.Client(timeout=100) as http:  # Label Studio's /predict timeout
            while not stop.is_set():
                if not order:  # every size once per round, in a random order
                    order = rng.sample(SIZES, len(SIZES))
                size = order.pop()
                ids = take_ids(size)
                if ids is None:
                    return
                srcs = [bad_source if rng.random() < 0.05 else rng.choice(sources) for _ in ids]
                body = {"tasks": [{"id": t, "data": {"image": s}, "meta": {}, "annotations": []}
                                  for t, s in zip(ids, srcs)],
                        "project": "1.1", "label_config": CONFIG,
                        "params": {"login": None, "password": None, "context": None}}
                t0 = time.monotonic()
                try:
                    response = http.post(f"{base}/predict", json=body)
                except httpx.HTTPError as exc:
                    problems.append(f"request of {size} failed: {exc!r}")
                    continue
                latency = time.monotonic() - t0
                if response.status_code != 200:
                    problems.append(f"HTTP {response.status_code}: {response.text[:200]}")
                    continue
                results = response.json()["results"]
                local_problems = []
                if len(results) != len(ids):
                    local_problems.append(f"{len(results)} items for {len(ids)} tasks")
                for tid, src, item in zip(ids, srcs, results):
                    if item.get("model_version") != version:
                        local_problems.append(f"task {tid}: version {item.get('model_version')}")
                    if src == bad_source:
                        if "result" in item or "404" not in item.get("error", ""):
                            local_problems.append(f"task {tid}: expected a 404 error, got {item}")
                        continue
                    if "error" in item:
                        local_problems.append(f"task {tid}: {item['error']}")
                        continue
                    got_ids = {r["id"] for r in item["result"]}
                    if got_ids != region_ids(tid, len(item["result"])):
                        local_problems.append(f"task {tid}: regions of another task (dropped/duplicated/out of order)")
                    if not same_result(item, reference[image_of[src]]):
                        local_problems.append(f"task {tid}: boxes differ from its image's reference")
                with lock:
                    problems.extend(local_problems)
                    stats["requests"] += 1
                    stats["sizes"].append(size)
                    stats["tasks"] += len(ids)
                    stats["errors_expected"] += srcs.count(bad_source)
                    stats["regions"] += sum(len(r.get("result", [])) for r in results)
                    stats["latency"].append(latency)

    def probe(kind: str):
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    if kind == "health":
                        r = http.get(f"{base}/health")
                    else:
                        r = http.post(f"{base}/setup", json={"project": "1.1", "schema": CONFIG,
                                                               "hostname": "http://localhost:8080",
                                                               "access_token": "x"})
                    ok = r.status_code == 200 and (kind == "health" or r.json()["model_version"] == version)
                    if not ok:
                        probe_failures.append(f"{kind}: {r.status_code} {r.text[:100]}")
                except httpx.HTTPError as exc:
                    probe_failures.append(f"{kind}: {exc!r}")
                samples[kind].append(time.monotonic() - t0)
                stop.wait(max(0.0, 0.2 - (time.monotonic() - t0)))

    def watch():
        while not stop.is_set():
            status = proc_status(server.pid)
            samples["rss"].append((time.monotonic(), status["VmRSS"] * 1024))
            samples["threads"].append(status["Threads"])
            stop.wait(0.2)

    workers = [threading.Thread(target=client, args=(seed,)) for seed in range(CLIENTS)]
    probes = [threading.Thread(target=probe, args=(k,)) for k in ("health", "setup")] + [threading.Thread(target=watch)]
    t_start = time.monotonic()
    for t in probes + workers:
        t.start()
    deadline = t_start + LOAD_SECONDS
    while time.monotonic() < deadline and any(w.is_alive() for w in workers):
        time.sleep(0.2)
    with lock:
        requests_sent[0] = MAX_REQUESTS  # no new requests; those in flight finish
    for w in workers:
        w.join(120)
    stop.set()
    for t in probes:
        t.join(15)
    duration = time.monotonic() - t_start
    assert server.alive(), server.log()
    time.sleep(1)
    end_status = proc_status(server.pid)  # the end of the load run (the burst below is measured apart)

    # ----- burst: more simultaneous requests than MAX_PENDING_PREDICTS: queued or refused, never threads ----
    burst_stop = threading.Event()
    burst_threads = []

    def watch_burst():
        while not burst_stop.is_set():
            burst_threads.append(proc_status(server.pid)["Threads"])
            burst_stop.wait(0.05)

    burst_answers = []
    gate = threading.Barrier(3 * MAX_PENDING)

    def burst_one(i):
        body = {"tasks": [{"id": 5_000_000 + i, "data": {"image": sources[i % len(sources)]}}] * 1,
                "label_config": CONFIG}
        gate.wait(30)
        r = httpx.post(f"{base}/predict", json=body, timeout=100)
        burst_answers.append((r.status_code, r.json()))

    watcher = threading.Thread(target=watch_burst)
    watcher.start()
    senders = [threading.Thread(target=burst_one, args=(i,)) for i in range(3 * MAX_PENDING)]
    for t in senders:
        t.start()
    for t in senders:
        t.join(120)
    burst_stop.set()
    watcher.join(5)
    time.sleep(1)
    after_burst = proc_status(server.pid)

    # ----- report ----------------------------------------------------------------------------------------
    MB = 1024 * 1024
    # warm-up = the first 40% of the load (the allocator reaches its plateau under the same concurrency)
    split = t_start + 0.4 * duration
    before_load = warm_status["VmRSS"] * 1024
    warm_rss = max(r for t, r in samples["rss"] if t <= split)
    late_rss = max(r for t, r in samples["rss"] if t > split)
    end_rss = end_status["VmRSS"] * 1024
    max_rss = max([r for _, r in samples["rss"]] + [end_rss])
    thread_bound = warm_status["Threads"] + MAX_PENDING * (1 + min(8, BATCH_SIZE)) + 8
    report = {
        "duration_s": round(duration, 1), "clients": CLIENTS, "requests": stats["requests"], "tasks": stats["tasks"],
        "tasks_per_s": round(stats["tasks"] / duration, 1), "expected_errors": stats["errors_expected"],
        "regions": stats["regions"],
        "predict_latency_p50_s": round(sorted(stats["latency"])[len(stats["latency"]) // 2], 2) if stats["latency"] else None,
        "predict_latency_max_s": round(max(stats["latency"]), 2) if stats["latency"] else None,
        "health_probes": len(samples["health"]), "health_p99_s": round(p99(samples["health"]), 3),
        "health_max_s": round(max(samples["health"]), 3),
        "setup_probes": len(samples["setup"]), "setup_p99_s": round(p99(samples["setup"]), 3),
        "setup_max_s": round(max(samples["setup"]), 3),
        "model_weights_mb": round(model_bytes / MB, 1),
        "rss_bare_imports_mb": round(bare_rss / MB, 1),
        "rss_anon_file_end_mb": [round(end_status["RssAnon"] / 1024, 1), round(end_status["RssFile"] / 1024, 1)],
        "rss_at_start_mb": round(start_status["VmRSS"] / 1024, 1), "rss_before_load_mb": round(before_load / MB, 1),
        "rss_after_warmup_mb": round(warm_rss / MB, 1), "rss_max_after_warmup_mb": round(late_rss / MB, 1),
        "rss_max_mb": round(max_rss / MB, 1), "rss_end_mb": round(end_rss / MB, 1),
        "threads_after_warmup": warm_status["Threads"], "threads_max_during_load": max(samples["threads"]),
        "threads_end": end_status["Threads"], "thread_bound": thread_bound,
        "burst_requests": len(burst_answers), "burst_503": sum(1 for c, _ in burst_answers if c == 503),
        "burst_threads_max": max(burst_threads), "threads_after_burst": after_burst["Threads"],
        "rss_after_burst_mb": round(after_burst["VmRSS"] / 1024, 1),
    }
    print("\nload run: " + json.dumps(report, indent=1))

    # ----- assertions --------------------------------------------------------------------------------------
    assert not problems, f"{len(problems)} problems, first: {problems[:5]}"
    assert not probe_failures, probe_failures[:5]
    assert stats["requests"] >= 2 * CLIENTS and stats["tasks"] >= 100, report
    assert {1, 32} <= set(stats["sizes"]), stats["sizes"]  # 1-task and 32-task requests are in the mix
    assert len(samples["health"]) >= 50 and len(samples["setup"]) >= 20, report
    assert p99(samples["health"]) < 1.0, report  # Label Studio's ML_TIMEOUT_HEALTH
    assert p99(samples["setup"]) < 3.0, report  # ML_TIMEOUT_SETUP
    assert max(samples["threads"]) <= thread_bound, report  # bounded concurrency, no thread per request
    assert end_status["Threads"] <= thread_bound, report
    assert len(burst_answers) == 3 * MAX_PENDING and max(burst_threads) <= thread_bound, report
    assert after_burst["Threads"] <= thread_bound, report
    for code, answer in burst_answers:  # queued and answered in full, or refused with the setting to raise
        assert (code == 200 and len(answer["results"]) == 1 and "result" in answer["results"][0]) or (
            code == 503 and "MAX_PENDING_PREDICTS" in answer["detail"]), (code, answer)
    # one model copy: over a process with the same imports and no weights, the server never holds more
    # than 1.6 x the weights (one copy + working set; a second copy would be >= 2 x), and RSS never rose
    # by half the weights once they were paged in (the safetensors weights are mapped: RssFile)
    assert max_rss - bare_rss < 1.6 * model_bytes, report
    assert max_rss - before_load < 0.5 * model_bytes, report
    # flat: after the warm-up, RSS stays within 48 MB of its warm-up plateau, to the end of the run
    assert late_rss - warm_rss < 48 * MB, report
    assert end_rss - warm_rss < 48 * MB, report


def test_one_large_retrieve_predictions_does_not_stall_health(tiny_model_dir, tmp_path, start_backend):
    """Label Studio sends all selected tasks in ONE /predict ("Retrieve Predictions"). While that request
    runs and while its (large) answer is built, /health must keep answering well within Label Studio's 1 s.
    800 tasks x 100 regions (BOX_THRESHOLD=0 keeps every query of the small model): ~80,000 regions."""
    from tests.model_factory import with_input_size

    model = with_input_size(tiny_model_dir, tmp_path / "tiny-64", 64, 96)
    root = tmp_path / "media"
    root.mkdir()
    names = make_images(root)
    server = start_backend(GROUNDING_DINO_MODEL=str(model), LOCAL_FILES_DOCUMENT_ROOT=str(root), BATCH_SIZE="32",
                           BOX_THRESHOLD="0")
    n_tasks = 800
    body = {"tasks": [{"id": i, "data": {"image": f"/data/local-files/?d={names[i % len(names)]}"}}
                      for i in range(n_tasks)], "project": "1.1", "label_config": CONFIG,
            "params": {"login": None, "password": None, "context": None}}
    out = {}

    def big():
        t0 = time.monotonic()
        out["response"] = httpx.post(f"{server.url}/predict", json=body, timeout=300)
        out["seconds"] = time.monotonic() - t0

    worker = threading.Thread(target=big)
    worker.start()
    health = []
    with httpx.Client(timeout=30) as http:
        while worker.is_alive():
            t0 = time.monotonic()
            assert http.get(f"{server.url}/health").status_code == 200
            health.append(time.monotonic() - t0)
            time.sleep(0.05)
    worker.join()
    response = out["response"]
    assert response.status_code == 200, response.text[:300]
    results = response.json()["results"]
    regions = sum(len(r.get("result", [])) for r in results)
    print(f"\nlarge request: {n_tasks} tasks, {regions} regions, {len(response.content) / 1e6:.1f} MB answered in "
          f"{out['seconds']:.1f} s; /health over {len(health)} probes: p99 {p99(health):.3f} s, max {max(health):.3f} s")
    assert len(results) == n_tasks and all("result" in r for r in results)
    assert regions >= 50 * n_tasks
    # a margin under Label Studio's 1 s (ML_TIMEOUT_HEALTH), not the limit itself: a busy machine must pass too
    assert max(health) < 0.5, f"/health blocked for {max(health):.2f} s while the large answer was built"
