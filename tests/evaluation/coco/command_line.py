"""`python -m evaluation.coco` (or another entry point, `module`) run as a user runs it, in a child process
with this checkout first on PYTHONPATH, and its JSON files read back."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def cli_args(ann: Path, images: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return ["--ann", str(ann), "--images", str(images), "--model", str(model), "--out", str(out),
            "--device", "cpu", *extra]


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e["OMP_NUM_THREADS"] = "1"  # two processes share the test machine's cores
    return e


def run_cli(args: list[str], timeout: float = 300, module: str = "evaluation.coco") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env(), capture_output=True,
                          text=True, timeout=timeout)


def load_json(path: Path):
    return json.loads(Path(path).read_text())
