"""The phases of the load test (tests/reliability/test_load.py), each on its own: reading the server's
/proc status once it has settled, the warm-up, the load run (clients, probes, a watcher) and the burst."""
from __future__ import annotations

import hashlib
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.backend.processes import BackendProcess
from tests.reliability.predict_batches import CONFIG, same_result

LOAD_SECONDS = 40
MAX_REQUESTS = 120
CLIENTS = 4
SIZES = [1, 2, 3, 4, 5, 8, 13, 21, 32]
BATCH_SIZE = 4
MAX_PENDING = 16
SETTLE_MB = 1  # RSS moving less than this between two reads counts as settled


def proc_status(pid: int) -> dict:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])  # kB, or a count
    return out


def settled_status(pid: int, timeout: float = 10.0, interval: float = 0.2) -> dict:
    """The server's /proc status once the requests just answered have left it: the same thread count and
    RSS within SETTLE_MB in two reads `interval` apart. At the deadline, the last read (the assertions on
    it then judge a server that does not settle)."""
    deadline = time.monotonic() + timeout
    before = proc_status(pid)
    while True:
        time.sleep(interval)
        now = proc_status(pid)
        settled = now["Threads"] == before["Threads"] and abs(now["VmRSS"] - before["VmRSS"]) < SETTLE_MB * 1024
        if settled or time.monotonic() >= deadline:
            return now
        before = now


def region_ids(task_id, n: int) -> set:
    return {hashlib.sha1(f"{task_id}/label/image/{k}".encode()).hexdigest()[:10] for k in range(n)}


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


@dataclass
class Target:
    """The server under load and the images it is asked about (by local path and over HTTP)."""

    server: BackendProcess
    names: list[str]  # the image files
    sources: list[str]  # each image as a local-files URL and as an HTTP URL
    bad_source: str  # a URL answered 404: an error item, in place

    @property
    def base(self) -> str:
        return self.server.url

    def image_of(self, source: str) -> str:
        return source.rsplit("=", 1)[-1].rsplit("/", 1)[-1]


def warm_up(target: Target) -> tuple[str, dict]:
    """Every image once (its reference), then a full 32-task request: the model version, the references."""
    base, names, sources = target.base, target.names, target.sources
    with httpx.Client(timeout=120) as http:
        version = http.post(f"{base}/setup", json={"project": "1.1", "schema": CONFIG}).json()["model_version"]
        ref_items = http.post(f"{base}/predict", json={
            "tasks": [{"id": i, "data": {"image": f"/data/local-files/?d={n}"}} for i, n in enumerate(names)],
            "label_config": CONFIG}).json()["results"]
        assert all("result" in r for r in ref_items), ref_items
        warm = http.post(f"{base}/predict", json={
            "tasks": [{"id": 10_000 + i, "data": {"image": sources[i % len(sources)]}} for i in range(32)],
            "label_config": CONFIG})
        assert warm.status_code == 200
    return version, dict(zip(names, ref_items))


@dataclass
class LoadRun:
    """CLIENTS clients sending /predict calls of SIZES tasks (MAX_REQUESTS in all, for LOAD_SECONDS at most)
    while /health and /setup are probed every 200 ms and the server's RSS and thread count are sampled.
    Every answer is checked against its tasks; what went wrong is collected, not raised (threads)."""

    target: Target
    version: str
    reference: dict  # image name -> its result item
    problems: list[str] = field(default_factory=list)
    probe_failures: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=lambda: {"sizes": [], "requests": 0, "tasks": 0, "errors_expected": 0,
                                                 "regions": 0, "latency": []})
    samples: dict = field(default_factory=lambda: {"health": [], "setup": [], "rss": [], "threads": []})
    t_start: float = 0.0
    duration: float = 0.0

    def __post_init__(self):
        self._stop, self._lock = threading.Event(), threading.Lock()
        self._next_id, self._requests_sent = 1_000_000, 0

    def run(self) -> None:
        workers = [threading.Thread(target=self._client, args=(seed,)) for seed in range(CLIENTS)]
        probes = [threading.Thread(target=self._probe, args=(k,)) for k in ("health", "setup")]
        probes.append(threading.Thread(target=self._watch))
        self.t_start = time.monotonic()
        for t in probes + workers:
            t.start()
        deadline = self.t_start + LOAD_SECONDS
        while time.monotonic() < deadline and any(w.is_alive() for w in workers):
            time.sleep(0.2)
        with self._lock:
            self._requests_sent = MAX_REQUESTS  # no new requests; those in flight finish
        for w in workers:
            w.join(120)
        self._stop.set()
        for t in probes:
            t.join(15)
        self.duration = time.monotonic() - self.t_start

    def _take_ids(self, n: int) -> list[int] | None:
        with self._lock:
            if self._requests_sent >= MAX_REQUESTS:
                return None
            self._requests_sent += 1
            first = self._next_id
            self._next_id += n
            return list(range(first, first + n))

    def _client(self, seed: int) -> None:
        rng = random.Random(seed)
        order: list[int] = []
        bad = self.target.bad_source
        with httpx.Client(timeout=100) as http:  # Label Studio's /predict timeout
            while not self._stop.is_set():
                if not order:  # every size once per round, in a random order
                    order = rng.sample(SIZES, len(SIZES))
                size = order.pop()
                ids = self._take_ids(size)
                if ids is None:
                    return
                srcs = [bad if rng.random() < 0.05 else rng.choice(self.target.sources) for _ in ids]
                body = {"tasks": [{"id": t, "data": {"image": s}, "meta": {}, "annotations": []}
                                  for t, s in zip(ids, srcs)],
                        "project": "1.1", "label_config": CONFIG,
                        "params": {"login": None, "password": None, "context": None}}
                t0 = time.monotonic()
                try:
                    response = http.post(f"{self.target.base}/predict", json=body)
                except httpx.HTTPError as exc:
                    self.problems.append(f"request of {size} failed: {exc!r}")
                    continue
                latency = time.monotonic() - t0
                if response.status_code != 200:
                    self.problems.append(f"HTTP {response.status_code}: {response.text[:200]}")
                    continue
                results = response.json()["results"]
                local_problems = self._check(ids, srcs, results)
                with self._lock:
                    self.problems.extend(local_problems)
                    self.stats["requests"] += 1
                    self.stats["sizes"].append(size)
                    self.stats["tasks"] += len(ids)
                    self.stats["errors_expected"] += srcs.count(bad)
                    self.stats["regions"] += sum(len(r.get("result", [])) for r in results)
                    self.stats["latency"].append(latency)

    def _check(self, ids: list[int], srcs: list[str], results: list[dict]) -> list[str]:
        """What is wrong with one answer: one item per task, in order, each its own task's and image's."""
        problems = []
        if len(results) != len(ids):
            problems.append(f"{len(results)} items for {len(ids)} tasks")
        for tid, src, item in zip(ids, srcs, results):
            if item.get("model_version") != self.version:
                problems.append(f"task {tid}: version {item.get('model_version')}")
            if src == self.target.bad_source:
                if "result" in item or "404" not in item.get("error", ""):
                    problems.append(f"task {tid}: expected a 404 error, got {item}")
                continue
            if "error" in item:
                problems.append(f"task {tid}: {item['error']}")
                continue
            got_ids = {r["id"] for r in item["result"]}
            if got_ids != region_ids(tid, len(item["result"])):
                problems.append(f"task {tid}: regions of another task (dropped/duplicated/out of order)")
            if not same_result(item, self.reference[self.target.image_of(src)]):
                problems.append(f"task {tid}: boxes differ from its image's reference")
        return problems

    def _probe(self, kind: str) -> None:
        base = self.target.base
        with httpx.Client(timeout=10) as http:
            while not self._stop.is_set():
                t0 = time.monotonic()
                try:
                    if kind == "health":
                        r = http.get(f"{base}/health")
                    else:
                        r = http.post(f"{base}/setup", json={"project": "1.1", "schema": CONFIG,
                                                               "hostname": "http://localhost:8080",
                                                               "access_token": "x"})
                    ok = r.status_code == 200 and (kind == "health" or r.json()["model_version"] == self.version)
                    if not ok:
                        self.probe_failures.append(f"{kind}: {r.status_code} {r.text[:100]}")
                except httpx.HTTPError as exc:
                    self.probe_failures.append(f"{kind}: {exc!r}")
                self.samples[kind].append(time.monotonic() - t0)
                self._stop.wait(max(0.0, 0.2 - (time.monotonic() - t0)))

    def _watch(self) -> None:
        while not self._stop.is_set():
            status = proc_status(self.target.server.pid)
            self.samples["rss"].append((time.monotonic(), status["VmRSS"] * 1024))
            self.samples["threads"].append(status["Threads"])
            self._stop.wait(0.2)


def burst(target: Target, n: int) -> tuple[list[tuple[int, dict]], list[int]]:
    """`n` single-task /predict calls released at once: their (status, body) answers, and the server's
    thread counts sampled every 50 ms meanwhile."""
    stop, threads, answers = threading.Event(), [], []
    gate = threading.Barrier(n)

    def watch():
        while not stop.is_set():
            threads.append(proc_status(target.server.pid)["Threads"])
            stop.wait(0.05)

    def send(i):
        body = {"tasks": [{"id": 5_000_000 + i, "data": {"image": target.sources[i % len(target.sources)]}}],
                "label_config": CONFIG}
        gate.wait(30)
        r = httpx.post(f"{target.base}/predict", json=body, timeout=100)
        answers.append((r.status_code, r.json()))

    watcher = threading.Thread(target=watch)
    watcher.start()
    senders = [threading.Thread(target=send, args=(i,)) for i in range(n)]
    for t in senders:
        t.start()
    for t in senders:
        t.join(120)
    stop.set()
    watcher.join(5)
    return answers, threads
