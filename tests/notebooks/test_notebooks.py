"""The analysis notebooks: committed without outputs, and executed headless on small runs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = [REPO / "notebooks" / n for n in ("coco_zero_shot.ipynb", "labelstudio_prelabels.ipynb")]

sys.path.insert(0, str(REPO / "tests" / "evaluation"))
from test_analysis import HAND_DETS, HAND_GT, write_run  # noqa: E402


def test_notebooks_exist():
    assert all(p.is_file() for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_have_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_only_call_evaluation_analysis(path):
    code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    imports = {line.split()[1] for line in code.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= {"os", "pandas", "IPython.display", "evaluation"}, imports
    assert "A.load_run(RUN_DIR)" in code and "os.environ.get(\"RUN_DIR\"" in code


def execute(path: Path, env: dict, tmp_path: Path):
    """Run the notebook in a fresh `python3` kernel; the kernel is this interpreter (the venv's):
    jupyter_client starts kernel specs whose argv[0] is `python` with sys.executable."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") + json.dumps(out.get("data", {})))
    return "\n".join(parts)


def n_images(nb) -> int:
    return sum("image/png" in out.get("data", {}) for c in nb.cells for out in c.get("outputs", []))


@pytest.mark.slow
def test_notebooks_execute_on_hand_built_runs(tmp_path):
    a = write_run(tmp_path / "fp32", HAND_GT, HAND_DETS)
    b = write_run(tmp_path / "bf16", HAND_GT, [dict(d, bbox=[v + 3 for v in d["bbox"]]) for d in HAND_DETS],
                  dtype="bf16")
    nb = execute(REPO / "notebooks" / "coco_zero_shot.ipynb",
                 {"RUN_DIR": str(a), "COMPARE_DIR": str(b), "PRECISION": "0.6"}, tmp_path)
    text = outputs_text(nb)
    assert n_images(nb) == 7  # per-class, size, PR, histograms, sweep, comparison scatter + PR overlay
    assert "48.4" in text and "bf16" in text
    ls = write_run(tmp_path / "ls", HAND_GT, HAND_DETS, threshold=0.25, export="export.json")
    nb = execute(REPO / "notebooks" / "labelstudio_prelabels.ipynb", {"RUN_DIR": str(ls)}, tmp_path)
    assert n_images(nb) == 5 and "deleted or changed" in outputs_text(nb)


@pytest.mark.slow
def test_python3_kernel_is_this_interpreter():
    """The `python3` kernel the notebooks run in is the test's Python (the venv's), not another one."""
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys; print(sys.executable)")])
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    assert nb.cells[0].outputs[0]["text"].strip() == sys.executable


@pytest.mark.slow
def test_a_failing_notebook_fails(tmp_path):
    """A notebook whose run dir is not a run dir raises (so CI catches broken notebooks)."""
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError, match="NotARunDir"):
        execute(REPO / "notebooks" / "coco_zero_shot.ipynb", {"RUN_DIR": str(tmp_path)}, tmp_path)
