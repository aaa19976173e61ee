"""One set of tested versions: constraints.txt pins torch and transformers, the suite runs on them, and
the Makefile and the Docker image install with that file (the image: the same torch, CUDA build).
Static checks of the files (no Docker engine, no network) plus the running interpreter's versions."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / "constraints.txt"
MAKEFILE = ROOT / "Makefile"
DOCKERFILE = ROOT / "backend" / "Dockerfile"


def pins() -> dict[str, str]:
    out = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt pins exact versions: {line!r}"
            out[name.strip().lower()] = version.strip()
    return out


def test_constraints_pin_torch_and_transformers_and_the_suite_runs_on_them():
    import torch
    import transformers

    pinned = pins()
    assert set(pinned) == {"torch", "transformers", "torchvision"}
    assert Version(torch.__version__).public == pinned["torch"]  # 2.13.0+cpu and 2.13.0+cu126 are 2.13.0
    assert transformers.__version__ == pinned["transformers"]


def test_the_pinned_torchvision_is_the_build_for_the_pinned_torch():
    """torchvision X.Y.0 is built for one torch: 0.(N+15) for 2.N (0.28 requires torch==2.13.0)."""
    pinned = pins()
    torch_minor = Version(pinned["torch"]).minor
    assert Version(pinned["torchvision"]).release[:2] == (0, torch_minor + 15), pinned


def test_pyproject_ranges_admit_the_pins_and_bound_the_next_majors():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+ (the tested Python)

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = {Requirement(r).name.lower(): Requirement(r) for r in project["dependencies"]}
    image_only = {"torchvision"}  # installed by the Docker image beside its torch, not a dependency of the package
    assert set(pins()) - image_only <= set(requirements)
    for name, version in pins().items():
        if name in image_only:
            continue
        specifier = requirements[name].specifier
        assert Version(version) in specifier, (name, version, specifier)
        next_major = Version(f"{Version(version).major + 1}.0")
        assert next_major not in specifier, f"{name}: {specifier} admits the untested {next_major}"


def test_makefile_installs_under_the_constraints():
    text = MAKEFILE.read_text()
    assert re.search(r"^CONSTRAINTS := constraints\.txt$", text, re.M)
    assert re.search(r"^TORCH_VERSION := \$\(shell sed -n 's/\^torch==//p' \$\(CONSTRAINTS\)\)$", text, re.M)
    ours = [l.strip() for l in text.splitlines() if l.strip().startswith("$(BIN)/pip install") and "--upgrade pip" not in l]
    assert len(ours) == 3, ours  # torch, the package, its test extras
    assert all("-c $(CONSTRAINTS)" in l for l in ours), ours
    assert '"torch==$(TORCH_VERSION)"' in ours[0]
    assert not re.search(r"torch==\d", text), "a torch version written in the Makefile instead of constraints.txt"


def test_makefile_quick_target_skips_label_studio_the_browser_and_slow_tests():
    text = MAKEFILE.read_text()
    rule = re.search(r"^test-quick: (.*)\n((?:\t.*\n)+)", text, re.M)
    assert rule, "no test-quick target"
    assert rule.group(1).split() == ["install-test"]  # not install-e2e: no Label Studio, no Chromium
    assert '-m pytest -m "not e2e and not slow"' in rule.group(2)
    assert re.search(r"^test: install-e2e$", text, re.M)  # the full suite still installs them


def _docker_lines() -> list[str]:
    """Instructions with their continuation lines joined, comments dropped."""
    joined, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        current += (" " if current else "") + line.rstrip("\\").strip()
        if not line.endswith("\\"):
            joined.append(current)
            current = ""
    return joined


def test_docker_image_installs_the_pinned_torch_cuda_build_and_transformers():
    lines = _docker_lines()
    copies = [i for i, l in enumerate(lines) if l.startswith("COPY ") and "constraints.txt" in l.split()]
    pip = [(i, l) for i, l in enumerate(lines) if l.startswith("RUN ") and "pip install" in l]
    assert copies and pip and copies[0] < pip[0][0], "constraints.txt must be in the image before pip runs"
    assert all("-c constraints.txt" in l for _, l in pip), pip
    torch_line = pip[0][1]
    assert re.search(r"\storch(\s|$)", torch_line) and '--index-url "$TORCH_INDEX"' in torch_line
    assert re.search(r"\storchvision(\s|$)", torch_line), "torchvision from the same index as its torch"
    index = re.search(r"^ARG TORCH_INDEX=(\S+)$", "\n".join(lines), re.M)
    assert index, "no TORCH_INDEX build argument"
    # the PyTorch index of a CUDA 12 build: https://download.pytorch.org/whl/cu12X
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu12\d", index.group(1)), index.group(1)
    assert re.search(r"pip install .*-c constraints\.txt \.( |$)", pip[-1][1])  # then our package
    assert not re.search(r"torch==\d|transformers==\d", DOCKERFILE.read_text()), "versions belong in constraints.txt"


def test_docker_python_is_the_tested_python():
    base = next(l for l in _docker_lines() if l.startswith("FROM "))
    version = re.search(r"python:(\d+)\.(\d+)", base)
    assert version, base
    assert (int(version[1]), int(version[2])) == sys.version_info[:2], (base, sys.version)
