"""Dependencies point one way (README, "Architecture"): the import-linter contracts of pyproject.toml hold,
and they catch an upward import when someone adds one."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("runtime", "detection", "labelstudio", "evaluation", "backend", "benchmarks")
CONTRACTS = (ROOT / "pyproject.toml").read_text().count("[[tool.importlinter.contracts]]")  # (no tomllib on 3.10)
CHECK = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the packages under `root`, with its pyproject.toml, importing nothing else of ours."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-c", CHECK], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_packages_keep_the_contracts():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{CONTRACTS} kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module, upward, contract", [
    ("detection/boxes.py", "import backend.settings", "One way"),
    ("labelstudio/regions/box.py", "import evaluation.matching", "One way"),
    ("evaluation/matching.py", "from backend.serving import jobs", "One way"),
    ("backend/serving/jobs.py", "import evaluation.report", "only training"),
    ("backend/training/service.py", "from backend.app import status_page", "Inside the backend"),
    ("backend/serving/engines.py", "from backend.app.state import ServerState", "Inside the backend"),
    ("backend/settings.py", "import backend.serving.items", "Inside the backend"),
    ("backend/app/context.py", "from backend import prelabel", "Inside the backend"),
])
def test_an_upward_import_breaks_a_contract(tmp_path, module, upward, contract):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    assert lint_imports(tmp_path).returncode == 0  # the copy alone keeps them

    path = tmp_path / module
    path.write_text(path.read_text() + f"\n{upward}  # the upward import\n")
    result = lint_imports(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{CONTRACTS - 1} kept, 1 broken" in result.stdout
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert len(broken) == 1 and contract in broken[0], result.stdout
    importer = module.removesuffix(".py").replace("/", ".")
    assert f"{importer} -> " in result.stdout, result.stdout
