"""Retrieve Predictions throughput with slow media: downloads overlapped with the model vs one after the other.

    python -m benchmarks.pipeline [--latency-ms 100] [--images 8] [--rounds 3] [--device auto] [--model DIR]

Each image costs `--latency-ms` to "download" (a sleep in a stand-in fetcher: the network, not the CPU).
Two paths on the same predictor, model and images, interleaved A B A B so machine load cancels out:

- serial: `Predictor.predict_tasks`, the order bulk pre-labelling used before background jobs (download
  a batch, then run the model, then download the next);
- overlapped: the server's background job (`backend.serving.jobs.JobManager`), whose worker loads the next batch
  while the model runs the current one.

The predictions of both paths must be equal. The last line is `overlap_vs_serial=<x>`: the ratio of the
serial time to the overlapped time, which approaches (download + model) / max(download, model).
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from labelstudio.target import LabelStudioTarget

from .common import LS_CONFIG, make_images, model_dir

# The detection core and the backend's serving modules are imported inside the functions: they import
# torch, and --help answers without loading it.


class SlowFetcher:
    """The MediaFetcher interface over in-memory images, each taking `latency` seconds to arrive."""

    def __init__(self, images: dict, latency: float):
        self.images, self.latency = images, latency

    def fetch(self, url, task_id=None, hostname=None, access_token=None) -> bytes:
        time.sleep(self.latency)
        return self.images[url]

    def fetch_image(self, url, task_id=None, hostname=None, access_token=None):
        from detection import open_image

        return open_image(self.fetch(url))


def overlapped(jobs, predictor, tasks) -> tuple[float, list]:
    from backend.serving.jobs import RequestWaiter

    loop = asyncio.new_event_loop()
    try:
        plan = predictor.plan(LS_CONFIG)
        started = time.perf_counter()
        entries = jobs.submit("1", plan, LabelStudioTarget(), None, tasks, RequestWaiter(loop))
        while not all(e.done for e in entries):
            time.sleep(0.002)
        seconds = time.perf_counter() - started
        items = jobs.detach(entries, plan.version, disconnected=False)
    finally:
        loop.close()
    return seconds, items


def serial(predictor, tasks) -> tuple[float, list]:
    started = time.perf_counter()
    items = predictor.predict_tasks(tasks, LS_CONFIG)
    return time.perf_counter() - started, items


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--latency-ms", type=float, default=100.0, help="simulated download time per image")
    parser.add_argument("--images", type=int, default=8, help="tasks per round and path")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=None, help="BATCH_SIZE (default: the backend's)")
    parser.add_argument("--model", default=None, help="model directory (default: a random full-size model)")
    args = parser.parse_args(argv)

    from detection import Detector, DetectorConfig
    from backend.serving.jobs import JobManager
    from backend.serving.predictor import Predictor
    from backend.settings import Settings

    model = str(model_dir(args.model))
    detector = Detector.load(DetectorConfig(model=model, device=args.device))
    settings = Settings(model=model, device=args.device, batch_size=args.batch_size)
    pictures = make_images()
    images = {f"mem://{i}": pictures[i % len(pictures)] for i in range(args.images)}
    predictor = Predictor(detector, settings, fetcher=SlowFetcher(images, args.latency_ms / 1000))
    tasks = [{"id": i + 1, "data": {"image": url}} for i, url in enumerate(images)]
    jobs = JobManager(predictor)
    jobs.start()
    serial(predictor, tasks[:1])  # warm-up
    times: dict[str, list[float]] = {"serial": [], "overlapped": []}
    try:
        for _ in range(args.rounds):
            t_serial, items_serial = serial(predictor, tasks)
            t_overlap, items_overlap = overlapped(jobs, predictor, tasks)
            failed = [i.get("error") for i in items_serial + items_overlap if "result" not in i]
            if failed:
                raise SystemExit(f"{len(failed)} predictions failed ({failed[0]}): nothing was measured")
            if items_serial != items_overlap:
                raise SystemExit("the two paths disagree: the benchmark's premise (same predictions) is broken")
            times["serial"].append(t_serial)
            times["overlapped"].append(t_overlap)
    finally:
        jobs.stop()
    per_image = {k: statistics.median(v) / args.images for k, v in times.items()}
    ratio = statistics.median(s / o for s, o in zip(times["serial"], times["overlapped"]))
    print(f"device {detector.device}, batch size {predictor.batch_size}, {args.images} images x {args.rounds} rounds, "
          f"download {args.latency_ms:.0f} ms per image")
    for name, seconds in per_image.items():
        print(f"  {name:<11} {seconds * 1000:8.1f} ms per image")
    print(f"overlap_vs_serial={ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
