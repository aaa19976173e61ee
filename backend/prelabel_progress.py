"""How far a pre-labelling run is, on a tqdm bar: one process's own (`BarProgress`), or under torchrun the
whole run's on rank 0 (`SharedProgress`, which sums every rank's count).

Both take `start(total, desc)`, `advance(tasks)` and `close()`, the calls `backend.prelabel.ProjectRun.label`
makes.
"""
from __future__ import annotations

import logging
import threading

from tqdm import tqdm

log = logging.getLogger("backend.prelabel")  # the command's logger: its lines read as the command's


class BarProgress:
    """This process's progress on a tqdm bar."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._bar = None

    def start(self, total: int | None, desc: str) -> None:
        self._bar = tqdm(total=total, unit="task", desc=desc, disable=not self.enabled)

    def advance(self, tasks: int) -> None:
        self._bar.update(tasks)

    def close(self) -> None:
        self._bar.close()


class SharedProgress:
    """Rank 0's bar shows the whole run: a thread on every rank sums the ranks' counts (all_reduce in a
    gloo group of its own) every `interval` seconds, until every rank has finished its share. Every rank
    sees the same sums, so all take the same number of rounds and none waits on a collective alone."""

    def __init__(self, dist, enabled: bool = True, interval: float = 1.0):
        import torch.distributed as torch_dist

        self.dist, self.interval = dist, interval
        self._group = torch_dist.new_group(backend="gloo")  # collective: every rank creates it here
        self._bar = BarProgress(enabled and dist.is_main)
        self._lock = threading.Lock()
        self._done = 0
        self._finished = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, total: int | None, desc: str) -> None:
        self._bar.start(total, desc)
        self._thread = threading.Thread(target=self._sum_loop, name="prelabel-progress", daemon=True)
        self._thread.start()

    def advance(self, tasks: int) -> None:
        with self._lock:
            self._done += tasks

    def close(self) -> None:
        self._finished.set()
        self._thread.join()
        self._bar.close()

    def _sum_loop(self) -> None:
        import torch
        import torch.distributed as torch_dist

        shown = 0
        while True:
            self._finished.wait(self.interval)
            with self._lock:
                counts = torch.tensor([self._done, int(self._finished.is_set())], dtype=torch.int64)
            try:
                torch_dist.all_reduce(counts, group=self._group)
            except Exception as exc:  # a process died: torchrun stops the run; no traceback from this thread
                log.warning("progress: lost contact with the other processes (%s); the bar stops here",
                            str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                return
            done, finished = int(counts[0]), int(counts[1])
            self._bar.advance(done - shown)
            shown = done
            if finished == self.dist.world_size:
                return
