"""Sharing the model between callers: one forward pass at a time (`ModelGate`), and telling an
out-of-memory failure from any other (`is_oom`), so that a batch too big for the device is retried smaller."""
from __future__ import annotations

import threading
from contextlib import contextmanager

import torch


def is_oom(exc: BaseException) -> bool:
    oom_type = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    if isinstance(exc, MemoryError):
        return True
    # CUDA says "out of memory"; the CPU allocator says "can't allocate memory" (DefaultCPUAllocator).
    message = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        sign in message for sign in ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory")
    )


class ModelGate:
    """One forward pass at a time, urgent callers (interactive pre-annotation) first.

    Background jobs take the gate once per batch with `urgent=False`, so an interactive request waits
    for at most the batch in flight, never for the job's queue.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._busy = False
        self._urgent_waiting = 0

    @contextmanager
    def hold(self, urgent: bool = True):
        with self._cond:
            if urgent:
                self._urgent_waiting += 1
            try:
                while self._busy or (not urgent and self._urgent_waiting):
                    self._cond.wait()
            finally:
                if urgent:
                    self._urgent_waiting -= 1
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
