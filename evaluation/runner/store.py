"""Durable, resumable per-image results in RUN_DIR/partial/*.jsonl, guarded by a run fingerprint.

One JSON line per processed image: {"image_id": ..., "detections": PAYLOAD}, where the payload is what
the dataset's result codec writes (COCO: a list of result dicts; LVIS: packed arrays). Each rank
appends to its own file and flushes + fsyncs after every batch, so a run killed at any moment loses at
most the batch in flight; a torn last line (killed mid-write) is detected, cut off and redone.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from runtime.errors import InputError
from runtime.files import atomic_write

FINGERPRINT = "fingerprint.json"
PARTIAL = "partial"


RUN_OUTPUTS = ("detections.json", "detections.npz", "metrics.json", "per_class.csv")  # a restart removes them


def check_fingerprint(run_dir: Path, fingerprint: dict, resume: bool) -> str:
    """Create or compare RUN_DIR/fingerprint.json. Returns 'new', 'resumed' or 'restarted'.

    Raises InputError when RUN_DIR holds results of a run with different settings (never mixed).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / FINGERPRINT
    partial = run_dir / PARTIAL
    state = "new"
    if path.is_file() and resume:
        try:
            old = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = None
        if old != fingerprint:
            diff = describe_diff(old, fingerprint)
            raise InputError(
                f"{run_dir} holds a run with different settings ({diff}); refusing to mix results: "
                "use another --out, or --no-resume to discard the old results"
            )
        state = "resumed"
    elif resume and any(partial.glob("*.jsonl")):
        raise InputError(
            f"{run_dir}/{PARTIAL} holds results but no {FINGERPRINT}, so their settings are unknown; "
            "use another --out, or --no-resume to discard them"
        )
    elif path.is_file() or partial.exists():
        state = "restarted"
    if not resume or state != "resumed":
        shutil.rmtree(partial, ignore_errors=True)
        for name in RUN_OUTPUTS:
            (run_dir / name).unlink(missing_ok=True)
    partial.mkdir(exist_ok=True)
    atomic_write(path, json.dumps(fingerprint, indent=2, sort_keys=True))
    return state


def describe_diff(old, new: dict) -> str:
    if not isinstance(old, dict):
        return "its fingerprint.json is unreadable"
    keys = sorted(set(old) | set(new))
    parts = [f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in keys if old.get(k) != new.get(k)]
    return "; ".join(parts)


def iter_lines(path: Path):
    """(record, end offset) of each complete, valid record of one partial file, in file order.

    Stops at a torn last line (written partially when the process was killed) or a damaged line:
    everything from there on is redone."""
    with open(path, "rb") as f:
        pos = 0
        for line in f:
            if not line.endswith(b"\n"):
                return
            try:
                record = json.loads(line)
                int(record["image_id"])
                if not isinstance(record["detections"], (list, dict)):
                    raise ValueError
            except (ValueError, KeyError, TypeError):
                return
            pos += len(line)
            yield record, pos


def read_lines(path: Path) -> tuple[list[dict], int]:
    """Complete, valid records of one partial file and the byte length of that valid prefix."""
    records, good = [], 0
    for record, good in iter_lines(path):
        records.append(record)
    return records, good


class PartialStore:
    """The partial results of one run directory, seen from one rank."""

    def __init__(self, run_dir: Path, rank: int = 0, world_size: int = 1):
        self.dir = Path(run_dir) / PARTIAL
        self.path = self.dir / (f"rank{rank:03d}-of-{world_size:03d}.jsonl" if world_size > 1 else "results.jsonl")
        self._file = None

    def files(self) -> list[Path]:
        return sorted(self.dir.glob("*.jsonl"))

    def records(self):
        """Every complete record of all ranks (of this and earlier runs), the first per image id, one
        at a time (an LVIS run's records do not all fit in memory at once)."""
        seen: set[int] = set()
        for path in self.files():
            for record, _ in iter_lines(path):
                image_id = int(record["image_id"])
                if image_id not in seen:
                    seen.add(image_id)
                    yield image_id, record["detections"]

    def load(self) -> dict[int, list]:
        """All complete records: image id -> detections payload."""
        return dict(self.records())

    def done_ids(self) -> set[int]:
        return {image_id for image_id, _ in self.records()}

    def open(self) -> None:
        """Open this rank's file for appending, first cutting off a torn or damaged tail."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            good = 0
            for _, good in iter_lines(self.path):
                pass
            if good != self.path.stat().st_size:
                with open(self.path, "r+b") as f:
                    f.truncate(good)
                    f.flush()
                    os.fsync(f.fileno())
        self._file = open(self.path, "ab")

    def append(self, records: list[dict]) -> None:
        """Durably append one batch: written, flushed and fsynced before the next batch starts."""
        payload = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)
        self._file.write(payload)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
