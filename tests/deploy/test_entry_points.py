"""The process-start lever: every entry point turns transparent huge pages on for torch before torch is
imported (PyTorch reads THP_MEM_ALLOC_ENABLE once, at its first CPU allocation), and importing the
detection core sets nothing."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.allocator import THP_VARIABLE, enable_thp_allocation, thp_allocation_status

ROOT = Path(__file__).resolve().parents[2]

# Each entry point, stopped by a bad argument right after its start (argparse exits): what did it set,
# and had anything imported torch when the lever was set (None: the lever was never called)?
PROBE = """
import os, sys
import runtime.allocator as allocator
real, seen = allocator.enable_thp_allocation, []
def spy(*args, **kwargs):
    seen.append("torch" in sys.modules)
    return real(*args, **kwargs)
allocator.enable_thp_allocation = spy
{call}
print(os.environ.get("{var}"), seen[0] if seen else None)
"""
ENTRY_POINTS = {
    "python -m backend": "from backend.__main__ import main\ntry: main(['--port', 'not-a-port'])\nexcept SystemExit: pass",
    "python -m evaluation.coco": "from evaluation.coco.cli import main\ntry: main(['--batch-size', '0'])\nexcept SystemExit: pass",
    "python -m evaluation.lvis": "from evaluation.lvis.cli import main\ntry: main(['--batch-size', '0'])\nexcept SystemExit: pass",
    "python -m evaluation.labelstudio": "import runpy\nsys.argv = ['evaluation.labelstudio', '--bad']\n"
                                        "try: runpy.run_module('evaluation.labelstudio', run_name='__main__')\n"
                                        "except SystemExit: pass",
    "import detection": "import detection",
}


def _probe(call: str, **env) -> tuple[str, str]:
    environ = {k: v for k, v in os.environ.items() if k != THP_VARIABLE}
    environ.update(env, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", PROBE.format(call=call, var=THP_VARIABLE)], env=environ,
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    value, torch_when_set = done.stdout.split()
    return value, torch_when_set


@pytest.mark.slow  # a Python process each, importing torch
@pytest.mark.parametrize("entry", ["python -m backend", "python -m evaluation.coco", "python -m evaluation.lvis",
                                   "python -m evaluation.labelstudio"])
def test_entry_points_set_the_thp_lever_before_torch(entry):
    assert _probe(ENTRY_POINTS[entry]) == ("1", "False")
    assert _probe(ENTRY_POINTS[entry], **{THP_VARIABLE: "0"})[0] == "0"  # the user's choice stands


@pytest.mark.slow
def test_importing_the_core_sets_nothing():
    assert _probe(ENTRY_POINTS["import detection"]) == ("None", "None")


def test_enable_is_a_no_op_once_torch_is_imported_and_the_status_says_what_holds():
    import torch  # noqa: F401  (as in this test process)

    environ: dict[str, str] = {}
    assert enable_thp_allocation(environ) is False and environ == {}
    assert thp_allocation_status(environ).startswith("not installed: THP_MEM_ALLOC_ENABLE was not set")
    assert thp_allocation_status({THP_VARIABLE: "1"}) == "active"
    assert thp_allocation_status({THP_VARIABLE: "0"}) == "off"
    assert enable_thp_allocation({THP_VARIABLE: "1"}) is True
