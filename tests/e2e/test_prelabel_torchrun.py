"""`torchrun --nproc-per-node 2 -m backend.prelabel` (CPU, gloo) against the real Label Studio: every task
gets exactly one prediction, with the regions one process gives on an identical project; a rank that dies
mid-run and the command run again leave no task without a prediction and none with two.

Run as a module (`python -m tests.e2e.test_prelabel_torchrun`) this file is the crash test's torchrun
entry: the prelabel command, except that rank 1 dies right after its first import, as a killed process.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.e2e.ls_harness import ARTIFACTS, ROOT
from tests.e2e.ls_user import E2E_BOX_THRESHOLD, create_project, make_image, predictions_of, upload_images

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TASKS = 24
PRELABEL = ["-m", "backend.prelabel"]
CRASHING_PRELABEL = ["-m", "tests.e2e.test_prelabel_torchrun"]


def run(label_studio, model_dir, project: int, log_name: str, processes: int = 1, entry=PRELABEL):
    env = {k: v for k, v in os.environ.items() if k not in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS", "DEVICES")}
    env.update(
        LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.token,
        GROUNDING_DINO_MODEL=str(model_dir), DEVICE="cpu", DTYPE="fp32", BATCH_SIZE="1",
        BOX_THRESHOLD=E2E_BOX_THRESHOLD, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
    )
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"] if processes > 1 else []
    command = [sys.executable, *launcher, *entry, "--project", str(project),
               "--batch-size", "2", "--page-size", "5", "--import-chunk", "2"]
    proc = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    (ARTIFACTS / log_name).write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    return proc


def counts(stdout: str) -> dict[str, int]:
    return {key: int(re.search(rf"^{key}\D*(\d+)", stdout, re.M).group(1)) for key in ("predicted", "skipped", "failed")}


def new_project(ls_client, ls_api, title: str) -> int:
    """The same TASKS small images, uploaded in the same order, in a project of their own."""
    project = create_project(ls_client, title)
    upload_images(ls_api, project, {f"shard_{i:02d}.png": make_image(200 + i, size=(96, 72)) for i in range(TASKS)})
    return project


def predictions_by_image(ls_api, project: int) -> dict[str, list[dict]]:
    """Each task's predictions, keyed by its image's uploaded file name (Label Studio prefixes a hash)."""
    r = ls_api.get("/api/tasks", params={"project": project, "page_size": 1000, "fields": "all"})
    r.raise_for_status()
    tasks = r.json()["tasks"]
    assert len(tasks) == TASKS
    return {t["data"]["image"].rsplit("/", 1)[-1].split("-", 1)[1]: predictions_of(ls_api, t["id"]) for t in tasks}


def regions(prediction: dict) -> list[dict]:
    """A prediction's regions without their ids (made from the task id, which differs between projects)."""
    return [{k: v for k, v in region.items() if k != "id"} for region in prediction["result"]]


@pytest.fixture(scope="module")
def one_process(ls_client, ls_api, label_studio, tiny_model_dir) -> dict[str, dict]:
    """The single-process command's prediction per image: the reference."""
    project = new_project(ls_client, ls_api, "E2E prelabel, one process")
    proc = run(label_studio, tiny_model_dir, project, "prelabel-one-process.log")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert counts(proc.stdout) == {"predicted": TASKS, "skipped": 0, "failed": 0}, proc.stdout
    found = predictions_by_image(ls_api, project)
    assert all(len(p) == 1 for p in found.values())
    assert sum(len(p[0]["result"]) for p in found.values()) > 0, "the reference has boxes to compare"
    return {image: p[0] for image, p in found.items()}


def assert_as_one_process(found: dict[str, list[dict]], reference: dict[str, dict]) -> None:
    assert found.keys() == reference.keys()
    for image, predictions in found.items():
        assert len(predictions) == 1, (image, predictions)
        assert predictions[0]["model_version"] == reference[image]["model_version"]
        assert regions(predictions[0]) == regions(reference[image]), image


def test_two_processes_predict_each_task_once_as_one_process_does(
        ls_client, ls_api, label_studio, tiny_model_dir, one_process):
    project = new_project(ls_client, ls_api, "E2E prelabel, torchrun")
    proc = run(label_studio, tiny_model_dir, project, "prelabel-torchrun.log", processes=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert counts(proc.stdout) == {"predicted": TASKS, "skipped": 0, "failed": 0}, proc.stdout
    assert proc.stdout.count("predicted:") == 1, "one summary, from rank 0, for the whole run"
    assert f"{TASKS}/{TASKS}" in proc.stderr, "rank 0's bar counts every rank's tasks"
    assert_as_one_process(predictions_by_image(ls_api, project), one_process)


def test_a_rank_killed_mid_run_and_a_rerun_leave_each_task_with_one_prediction(
        ls_client, ls_api, label_studio, tiny_model_dir, one_process):
    project = new_project(ls_client, ls_api, "E2E prelabel, torchrun killed")
    crashed = run(label_studio, tiny_model_dir, project, "prelabel-torchrun-killed.log", processes=2,
                  entry=CRASHING_PRELABEL)
    assert crashed.returncode != 0, crashed.stdout
    stored = {image: p for image, p in predictions_by_image(ls_api, project).items() if p}
    assert 2 <= len(stored) < TASKS, f"rank 1 died after its first import of 2; {len(stored)} stored"
    assert all(len(p) == 1 for p in stored.values())

    rerun = run(label_studio, tiny_model_dir, project, "prelabel-torchrun-rerun.log", processes=2)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert counts(rerun.stdout) == {"predicted": TASKS - len(stored), "skipped": len(stored), "failed": 0}
    assert_as_one_process(predictions_by_image(ls_api, project), one_process)


def crash_after_first_import() -> int:
    """The prelabel command, but rank 1 exits at once (no cleanup, as when killed) after its first import."""
    from backend import prelabel
    from labelstudio.importer import PredictionImporter

    if os.environ.get("RANK") == "1":
        import_items = PredictionImporter.import_items

        def import_then_die(self, items, version):
            import_items(self, items, version)
            os._exit(17)

        PredictionImporter.import_items = import_then_die
    return prelabel.main()


if __name__ == "__main__":
    sys.exit(crash_after_first_import())
