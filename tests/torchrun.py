"""`torchrun --standalone --nproc-per-node N -m MODULE ARGS` as a test runs it: in its own process group, so
that a timeout kills the workers too, not only the launcher."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_torchrun(module: str, args: list, env: dict, timeout: float, processes: int = 2) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc-per-node", str(processes),
               "-m", module, *map(str, args)]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)
