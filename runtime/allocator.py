"""Process-start memory levers: which malloc the process runs on, and transparent huge pages for torch.

On the CPU a forward allocates and frees activations of 50-150 MB per layer. glibc's malloc serves
those with fresh mmap()s and gives them back on free, so every layer page-faults its outputs in again
(~0.5 s of kernel time per image on the benchmark machine). tcmalloc keeps freed memory for reuse: one
forward of the full model went 3.7 s -> 3.2 s, outputs bit-identical (same kernels, other addresses).
The allocator is chosen when the process starts, so it is set by `LD_PRELOAD` in the Docker image and
by `make serve`; Debian/Ubuntu ship it as `libtcmalloc-minimal4`.
"""
from __future__ import annotations

import glob
import os
import sys
from pathlib import Path
from typing import MutableMapping

# Speed lever (CPU, exact: memory placement only): PyTorch backs large CPU tensors with transparent huge
# pages when THP_MEM_ALLOC_ENABLE=1, which cuts the page faults of the model's 100+ MB activations
# (~1.2x per forward on the benchmark machine). PyTorch reads the variable once, at its first CPU
# allocation, so it is set where a process starts, before torch is imported: `python -m backend`, the
# evaluation CLI and the benchmark's workers call `enable_thp_allocation()` first thing.
THP_VARIABLE = "THP_MEM_ALLOC_ENABLE"

TCMALLOC_PATTERNS = (
    "/usr/local/lib/libtcmalloc_minimal.so.4",  # the Docker image's fixed link
    "/usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4",  # Debian, Ubuntu
    "/usr/lib64/libtcmalloc_minimal.so.4",  # Fedora, RHEL
    "/usr/lib/libtcmalloc_minimal.so.4",
)


def find_tcmalloc() -> str | None:
    """Path of an installed tcmalloc (minimal) shared library, or None."""
    for pattern in TCMALLOC_PATTERNS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def active_allocator(maps: Path = Path("/proc/self/maps")) -> str:
    """'tcmalloc' or 'jemalloc' when preloaded into this process, else 'glibc malloc'."""
    try:
        text = maps.read_text()
    except OSError:
        return "unknown"
    for name in ("tcmalloc", "jemalloc"):
        if f"lib{name}" in text:
            return name
    return "glibc malloc"


def cpu_allocator_hint(device_type: str) -> str | None:
    """One line for the start-up log when a CPU run would be faster on tcmalloc, else None."""
    if device_type != "cpu" or active_allocator() != "glibc malloc":
        return None
    path = find_tcmalloc()
    how = f"LD_PRELOAD={path}" if path else "apt-get install libtcmalloc-minimal4, then LD_PRELOAD it"
    return f"running on glibc malloc: on a CPU, tcmalloc is ~12% faster per image with identical outputs ({how})"


def enable_thp_allocation(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Turn the THP lever on for this process unless the user set THP_MEM_ALLOC_ENABLE; True when it is on.

    Call it before anything imports torch (too late otherwise: then it changes nothing and says so by
    returning whether the variable was already on). THP_MEM_ALLOC_ENABLE=0 in the environment turns it off.
    """
    if "torch" not in sys.modules:
        environ.setdefault(THP_VARIABLE, "1")
    return environ.get(THP_VARIABLE) == "1"


def thp_allocation_status(environ: MutableMapping[str, str] = os.environ) -> str:
    """The THP lever's entry in the Detector's lever report: "active", "off" or "not installed: <why>"."""
    value = environ.get(THP_VARIABLE)
    if value == "1":
        return "active"
    if value is not None:
        return "off"
    return (
        f"not installed: {THP_VARIABLE} was not set when the process started (the entry points set it "
        "through runtime.allocator.enable_thp_allocation)"
    )
