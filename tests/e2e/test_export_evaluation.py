"""Export from the real Label Studio 1.23.2 as a user does (the Export button's endpoint) and score the
file with `python -m evaluation.labelstudio`: its prediction ids are fetched through Label Studio's API,
and the figures equal those of a snapshot export with full predictions (and the hand-computed ones)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.export_project import BASE, EXPECTED, build_project, button_export, snapshot_export
from tests.e2e.ls_user import evaluate, one_line_error

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def figures(out: Path) -> dict:
    m = json.loads((out / "metrics.json").read_text())
    return {"AP": m["AP"], "AP50": m["AP50"], "tp": m["tp"], "fp": m["fp"], "fn": m["fn"],
            "num_images": m["config"]["num_images"], "prelabels": m["prelabels"], "model": m["config"]["model"]}


def test_the_export_buttons_json_is_scored_as_a_snapshot_with_full_predictions(label_studio, ls_api, tmp_path):
    ids = build_project(ls_api, "E2E export evaluation")
    project, tasks = ids["project"], ids["tasks"]
    button, snapshot, json_min = tmp_path / "button.json", tmp_path / "snapshot.json", tmp_path / "min.json"
    button.write_bytes(button_export(ls_api, project))
    snapshot.write_bytes(snapshot_export(ls_api, project))
    json_min.write_bytes(button_export(ls_api, project, "JSON_MIN"))
    assert all(isinstance(p, int) for t in json.loads(button.read_bytes()) for p in t["predictions"])
    access = ["--label-studio-url", label_studio.url, "--api-key", label_studio.token]

    proc = evaluate(snapshot, tmp_path / "snapshot")
    assert proc.returncode == 0, proc.stderr
    reference = figures(tmp_path / "snapshot")
    want = EXPECTED[BASE]
    assert reference["AP"] == pytest.approx(want["AP"], abs=1e-12) and reference["model"] == BASE
    assert (reference["tp"], reference["fp"], reference["fn"]) == (want["tp"], want["fp"], want["fn"])
    assert reference["prelabels"] == want["prelabels"] and reference["num_images"] == want["num_images"]

    err = one_line_error(evaluate(button, tmp_path / "no-access"))
    assert "by id only" in err and "--label-studio-url URL and --api-key KEY" in err

    proc = evaluate(button, tmp_path / "options", *access)
    assert proc.returncode == 0, proc.stderr
    assert figures(tmp_path / "options") == reference
    assert f"fetched from Label Studio at {label_studio.url} for 2 annotated tasks" in proc.stdout
    proc = evaluate(button, tmp_path / "env", env={"LABEL_STUDIO_URL": label_studio.url,
                                                    "LABEL_STUDIO_API_KEY": label_studio.token})
    assert proc.returncode == 0, proc.stderr
    assert figures(tmp_path / "env") == reference
    proc = evaluate(json_min, tmp_path / "json-min", *access)
    assert proc.returncode == 0, proc.stderr
    assert figures(tmp_path / "json-min") == reference

    # What the real Label Studio answers when the fetch cannot succeed.
    err = one_line_error(evaluate(button, tmp_path / "o", "--label-studio-url", label_studio.url,
                                  "--api-key", "not-a-valid-key-0123456789"))
    assert f"Label Studio at {label_studio.url} refused the API key (--api-key, HTTP 401)" in err
    first_prediction = json.loads(button.read_bytes())[0]["predictions"][0]
    assert ls_api.delete(f"/api/predictions/{first_prediction}/").status_code == 204
    err = one_line_error(evaluate(button, tmp_path / "o", *access))
    assert f"no longer has: {first_prediction} (task {tasks[0]})" in err
    assert ls_api.delete(f"/api/tasks/{tasks[1]}/").status_code == 204
    err = one_line_error(evaluate(button, tmp_path / "o", *access))
    assert f"has no task {tasks[1]}" in err
