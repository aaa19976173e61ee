"""How many torch threads a training process uses on the CPU.

On a small CPU shared with another busy process (the backend serving predictions, another training
rank), two torch threads fighting for two cores ran 15-30x slower per step than one thread, so a
process that sees competition uses one thread.
"""
from __future__ import annotations

import os


def choose_threads(requested: int | None, device_type: str, world_size: int = 1,
                   environ=os.environ, cpu_count: int | None = None, load: float | None = None) -> int | None:
    """Threads to set with ``torch.set_num_threads``, or None to leave torch's choice alone."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads must be at least 1, got {requested}")
        return requested
    if device_type != "cpu" or environ.get("OMP_NUM_THREADS"):
        return None  # the GPU does the work; or the user already chose
    cores = cpu_count or os.cpu_count() or 1
    if load is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load >= 1.0:  # something else already keeps a core busy
        return 1
    return max(1, cores // world_size)
