"""What a Label Studio user does, through Label Studio's API/SDK (helpers of the e2e tests)."""
from __future__ import annotations

import io
import os
import random
import subprocess
import sys
from pathlib import Path

import httpx

from tests.backend.background_jobs import all_ended, wait_for_jobs
from tests.e2e.ls_harness import ROOT
from tests.waiting import wait_until

# Aliases, predicted_values, a camel-case label and a TextArea prompt, as in the protocol doc's fixtures.
LABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="Cat" predicted_values="cat, kitten" background="#e6194b"/>
    <Label value="Remote" alias="RC" predicted_values="remote control" background="#3cb44b"/>
    <Label value="TrafficLight" background="#4363d8"/>
  </RectangleLabels>
  <TextArea name="prompt" toName="image" editable="true" maxSubmissions="1"/>
</View>"""
# What Label Studio may store as a region's label: the alias when one is set, else the value.
EMITTED_LABELS = {"Cat", "RC", "TrafficLight"}
# The random model's scores are high; this keeps a handful of boxes per image (readable screenshot).
E2E_BOX_THRESHOLD = "0.85"
BASIC_USER, BASIC_PASS = "ls-e2e", "s3cret-e2e-pass"


def make_image(seed: int, size=(320, 240), fmt="PNG") -> bytes:
    """A PIL drawing: a few coloured rectangles and ellipses on a textured background."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    img = Image.new("RGB", size, tuple(rng.randrange(180, 255) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    w, h = size
    for _ in range(4):
        x0, y0 = rng.randrange(0, w - 60), rng.randrange(0, h - 60)
        box = [x0, y0, x0 + rng.randrange(30, 120), y0 + rng.randrange(30, 100)]
        colour = tuple(rng.randrange(0, 200) for _ in range(3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)(box, fill=colour, outline=(0, 0, 0))
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


# ----- what a user does, through Label Studio's API/SDK -----------------------------------------------

def create_project(ls_client, title: str, config: str = LABEL_CONFIG) -> int:
    return ls_client.projects.create(title=title, label_config=config).id


def upload_images(ls_api, project_id: int, images: dict[str, bytes]) -> list[int]:
    """The "Import" dialog: files uploaded to Label Studio become tasks with /data/upload/... URLs."""
    files = [(f"file{i}", (name, data, "image/png" if name.endswith(".png") else "image/jpeg"))
             for i, (name, data) in enumerate(images.items())]
    r = ls_api.post(f"/api/projects/{project_id}/import", files=files, params={"return_task_ids": "true"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["task_count"] == len(images), body
    return sorted(body["task_ids"]) if body.get("task_ids") else task_ids(ls_api, project_id)


def import_tasks(ls_api, project_id: int, tasks: list[dict]) -> None:
    r = ls_api.post(f"/api/projects/{project_id}/import", json=tasks)
    assert r.status_code == 201, r.text


def task_ids(ls_api, project_id: int) -> list[int]:
    r = ls_api.get("/api/tasks", params={"project": project_id, "page_size": 1000, "fields": "all"})
    r.raise_for_status()
    return sorted(t["id"] for t in r.json()["tasks"])


def retrieve_predictions(ls_api, project_id: int, ids: list[int] | None = None) -> dict:
    """Data Manager -> select all (or the tasks `ids`) -> Actions -> Retrieve Predictions."""
    selected = {"all": True, "excluded": []} if ids is None else {"all": False, "included": list(ids)}
    r = ls_api.post("/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project_id},
                    json={"selectedItems": selected})
    assert r.status_code == 200, r.text
    return r.json()


def predictions_of(ls_api, task_id: int) -> list[dict]:
    r = ls_api.get("/api/predictions", params={"task": task_id})
    r.raise_for_status()
    return r.json()


def versions_stored(ls_api, ids) -> dict[int, list[str]]:
    """Task id -> the model_version of each prediction Label Studio holds for it."""
    return {t: [p["model_version"] for p in predictions_of(ls_api, t)] for t in ids}


def start_training(ls_api, ml_id: int) -> None:
    """The model settings' Start Training button: Label Studio posts START_TRAINING to the backend."""
    r = ls_api.post(f"/api/ml/{ml_id}/train", json={})
    assert r.status_code == 200, r.text


# ----- watching the backend (its /status document) ------------------------------------------------

def wait_until_jobs_finish(backend_url: str, timeout: float = 240) -> list[dict]:
    with httpx.Client(base_url=backend_url, timeout=5) as backend:
        return wait_for_jobs(backend, timeout, interval=0.5)


def training_run(backend_url: str, project_id: int) -> dict | None:
    """The project's newest training row on the status document, None before the first."""
    runs = [j for j in httpx.get(f"{backend_url}/status", timeout=5).json()["jobs"]
            if j.get("kind") == "training" and j["project"] == str(project_id)]
    return runs[0] if runs else None


def wait_for_training(backend_url: str, project_id: int, timeout: float = 600, log: Path | None = None) -> dict:
    """The newest training row of the project once it has ended (done, failed or cancelled)."""
    try:
        return wait_until(lambda: training_run(backend_url, project_id), f"training of project {project_id} to end",
                          timeout, 0.5, holds=lambda run: all_ended([run] if run else []))
    except AssertionError as exc:  # the backend's log says why
        tail = log.read_text(errors="replace")[-3000:] if log else ""
        raise AssertionError(f"{exc}\n{tail}") from None


# ----- the evaluation a team runs on its export ------------------------------------------------------

ACCESS_VARS = ("LABEL_STUDIO_URL", "LABEL_STUDIO_HOST", "LABEL_STUDIO_API_KEY", "LABEL_STUDIO_ACCESS_TOKEN")


def evaluate(export: Path, out: Path, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m evaluation.labelstudio EXPORT --out OUT ...` with no Label Studio access but what is given."""
    base = {k: v for k, v in os.environ.items() if k not in ACCESS_VARS}
    return subprocess.run([sys.executable, "-m", "evaluation.labelstudio", str(export), "--out", str(out), *args],
                          env={**base, **(env or {})}, cwd=ROOT, capture_output=True, text=True, timeout=300)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The refusal of a bad input: exit status 2 and one line on stderr, no traceback."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return proc.stderr.strip()


def backend_setup_version(backend_url: str, config: str = LABEL_CONFIG, auth=None) -> str:
    r = httpx.post(f"{backend_url}/setup", json={"project": "1.1", "schema": config}, auth=auth, timeout=30)
    r.raise_for_status()
    return r.json()["model_version"]
