"""The analysis notebooks: committed without outputs, and executed headless on small runs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from evaluation.report import main as report_main

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = [REPO / "notebooks" / n for n in ("coco_zero_shot.ipynb", "labelstudio_prelabels.ipynb")]

from tests.evaluation.analysis_data import HAND_DETS, HAND_GT, labelstudio_run, write_mask_run, write_run  # noqa: E402


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
    # The kernel imports `evaluation` from this checkout, not from wherever the package is installed.
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])), **env}
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
    assert n_images(nb) == 5 and "moved/resized" in outputs_text(nb)


@pytest.mark.slow
def test_coco_notebook_shows_mask_ap_beside_box_ap(tmp_path):
    """A mask run (box AP 100, mask AP 70 by construction) compared with a box run."""
    masks = write_mask_run(tmp_path / "segm")
    boxes = write_run(tmp_path / "bbox", HAND_GT, HAND_DETS)
    nb = execute(REPO / "notebooks" / "coco_zero_shot.ipynb",
                 {"RUN_DIR": str(masks), "COMPARE_DIR": str(boxes)}, tmp_path)
    text = outputs_text(nb)
    assert "mask recomputed" in text and "segm_AP" in text and "mask AP" in text and "70.0" in text


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


def _small_coco(root: Path) -> tuple[Path, Path]:
    """Three random images with boxes of three classes, as a COCO annotation file + image folder."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for i, (w, h) in enumerate([(96, 64), (64, 80), (80, 80)], start=1):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"{i}.jpg")
        images.append({"id": i, "file_name": f"{i}.jpg", "width": w, "height": h})
        for _ in range(3):
            bw, bh = rng.uniform(8, 40, 2)
            box = [float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh)), float(bw), float(bh)]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(rng.integers(1, 4)),
                         "bbox": box, "area": float(bw * bh), "iscrowd": 0})
    cats = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "traffic light"}]
    ann = root / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return ann, root / "images"


@pytest.mark.slow
def test_coco_notebook_and_report_on_real_runs(tmp_path, tiny_model_dir):
    """`python -m evaluation.coco` with the small random model (batch 1 and batch 2), then the notebook
    and `python -m evaluation.report --compare` on those run directories."""
    ann, images = _small_coco(tmp_path / "data")
    runs = []
    for bs in (1, 2):
        out = tmp_path / f"tiny-bs{bs}"
        proc = subprocess.run([sys.executable, "-m", "evaluation.coco", "--ann", str(ann), "--images", str(images),
                               "--model", str(tiny_model_dir), "--device", "cpu", "--batch-size", str(bs),
                               "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(out)
    nb = execute(REPO / "notebooks" / "coco_zero_shot.ipynb",
                 {"RUN_DIR": str(runs[0]), "COMPARE_DIR": str(runs[1])}, tmp_path)
    assert n_images(nb) == 7 and "batch_size" in outputs_text(nb)
    proc = subprocess.run([sys.executable, "-m", "evaluation.report", str(runs[0]), "--compare", str(runs[1])],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (runs[0] / "report" / "report.md").read_text()
    assert "| batch_size | 1 | 2 |" in md and "900 detections" in md  # 3 images x top-300


@pytest.mark.slow
def test_labelstudio_notebook_and_report_on_a_real_run(tmp_path):
    """`python -m evaluation.labelstudio` on a hand-written export, then the notebook and the report."""
    run = labelstudio_run(tmp_path)
    nb = execute(REPO / "notebooks" / "labelstudio_prelabels.ipynb", {"RUN_DIR": str(run)}, tmp_path)
    assert n_images(nb) == 5 and "moved/resized" in outputs_text(nb)
    assert report_main([str(run)]) == 0
    md = (run / "report" / "report.md").read_text()
    assert "| Person | 0 | 1 | 1 | 0 | 1 | 2 | 0.500 |" in md and "Best threshold: **0.90**" in md
    # evaluation.labelstudio's own counts at its threshold agree with the sweep here (3 tp, 3 fp of 6)
    assert "precision 0.500, recall 0.500, F1 0.500 (tp 3, fp 3, fn 3)" in md


@pytest.mark.slow
def test_labelstudio_notebook_shows_the_model_comparison(tmp_path):
    """A `--model A --model B` run directory (hand-built table): the notebook shows its figure and tables."""
    import pandas as pd

    from evaluation.labelstudio.compare import COLUMNS, recommend, write_comparison

    rows = [("cat", "gdino", 4, 0.5, 0.7, float("nan"), "box", 0.3, 3.0, 3, 0, 1.0, 0.75),
            ("cat", "sam3", 4, 0.6, 0.8, 0.55, "mask", 0.5, 1.0, 2, 1, 0.667, 0.5),
            ("dog", "gdino", 2, 0.1, 0.2, float("nan"), "box", 1.0, 0.0, 0, 0, float("nan"), 0.0),
            ("dog", "sam3", 2, 0.9, 1.0, 0.8, "mask", 0.4, 2.0, 2, 0, 1.0, 1.0)]
    table = pd.DataFrame(rows, columns=COLUMNS)
    best = recommend(table, ["gdino", "sam3"])
    assert best["model"].tolist() == ["gdino", "sam3"]
    models = tmp_path / "models"
    models.mkdir()
    write_comparison(models, {"images": [], "annotations": [], "categories": []}, [], table, best,
                     {"export": "export.json", "num_images": 2, "iou": 0.5, "delete_cost": 1.0})
    assert "| cat | gdino | 0.30 | 3 | 0.500 | n/a |" in (models / "comparison.md").read_text()
    ls = write_run(tmp_path / "ls", HAND_GT, HAND_DETS, threshold=0.25, export="export.json")
    nb = execute(REPO / "notebooks" / "labelstudio_prelabels.ipynb", {"RUN_DIR": str(ls), "MODELS_DIR": str(models)},
                 tmp_path)
    assert n_images(nb) == 6 and "sam3" in outputs_text(nb) and "mask_AP" in outputs_text(nb)
