"""`python -m evaluation.labelstudio` on the exports a real Label Studio 1.23.2 wrote for one project
(tests/fixtures/label-studio-1.23.2-exports/, recorded by `python -m tests.e2e.record_exports`).

The project is tests/e2e/export_project.py's; its figures are computed by hand there (`EXPECTED`). The
prediction ids of the Export button's JSON are fetched from a stand-in for Label Studio's
`GET /api/predictions/?task=<id>` that answers with the predictions of the snapshot export (full objects
from the same Label Studio), checking the key as Label Studio does.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from evaluation.labelstudio.cli import main
from tests.e2e.export_project import BASE, EXPECTED, FT
from tests.evaluation.coco.command_line import load_json
from tests.http_server import LocalServer
from tests.ports import free_port

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "label-studio-1.23.2-exports"
BUTTON_JSON, SNAPSHOT, JSON_MIN = (FIXTURES / n for n in ("export-json.json", "snapshot-full-predictions.json",
                                                           "export-json-min.json"))
KEY = "e2e0123456789abcdef0123456789abcdef0123"
JSON = {"Content-Type": "application/json"}


class FakeLabelStudio:
    """The predictions API of the Label Studio that wrote the fixtures, as the one route of a local server."""

    def __init__(self, server: LocalServer):
        self.predictions = {t["id"]: t["predictions"] for t in json.loads(SNAPSHOT.read_text())}
        self.deleted: set[int] = set()
        self.html = False
        self.server, self.url = server, server.url
        # any other path is answered as Label Studio would: the key is checked before the path
        server.routes["/api/predictions/"] = server.fallback = self.answer

    @property
    def requests(self) -> list[str]:
        return [r["path"] for r in self.server.requests]

    def answer(self, request: dict) -> tuple[int, dict, bytes]:
        url = urlparse(request["path"])
        task = int(parse_qs(url.query).get("task", ["0"])[0])
        if self.html:
            return 200, {"Content-Type": "text/html"}, b"<html>not Label Studio</html>"
        if request["headers"].get("Authorization") != f"Token {KEY}":
            return 401, JSON, b'{"detail": "Invalid token."}'
        if url.path != "/api/predictions/" or task not in self.predictions:
            return 404, JSON, b'{"detail": "Not found."}'
        preds = [p for p in self.predictions[task] if p["id"] not in self.deleted]
        return 200, JSON, json.dumps(preds).encode()


@pytest.fixture
def fake_ls(monkeypatch, http_server):
    for name in ("LABEL_STUDIO_URL", "LABEL_STUDIO_HOST", "LABEL_STUDIO_API_KEY", "LABEL_STUDIO_ACCESS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return FakeLabelStudio(http_server)


def run(path, out, *args) -> dict:
    assert main([str(path), "--out", str(out), *args]) == 0
    return load_json(out / "metrics.json")


def fails(capsys, path, *args) -> str:
    """The one line a refused input prints (exit code 2)."""
    capsys.readouterr()
    assert main([str(path), *args]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in captured.err, err
    return err


def figures(m: dict) -> dict:
    return {"AP": m["AP"], "AP50": m["AP50"], "tp": m["tp"], "fp": m["fp"], "fn": m["fn"],
            "num_images": m["config"]["num_images"], "prelabels": m["prelabels"], "model": m["config"]["model"]}


def test_snapshot_with_full_predictions_gives_the_hand_computed_figures(tmp_path, fake_ls, capsys):
    m = run(SNAPSHOT, tmp_path / "run")
    want = EXPECTED[BASE]
    assert m["AP"] == pytest.approx(want["AP"], abs=1e-12)
    assert (m["tp"], m["fp"], m["fn"]) == (want["tp"], want["fp"], want["fn"]) and m["prelabels"] == want["prelabels"]
    cfg = m["config"]
    assert cfg["num_images"] == 2 and cfg["num_tasks"] == 4 and cfg["num_annotated_tasks"] == 2
    assert cfg["model"] == BASE and cfg["annotated_tasks_per_version"] == {BASE: 2, FT: 1}
    assert cfg["export_format"] == "JSON" and cfg["predictions_from"] == "the export"
    # Task 1's final annotation is its later one (Cat at x=10, Dog added), not the first (Cat at x=12).
    gt = load_json(tmp_path / "run" / "ground_truth.json")
    assert sorted(a["bbox"] for a in gt["annotations"] if a["image_id"] == 1) == [[16, 12, 48, 36], [96, 12, 32, 24]]
    out = capsys.readouterr().out
    assert f"model version {BASE} (it predicted the most annotated tasks, 2 tasks)" in out
    assert f"also in the export: {FT} (1 task) (score one with --model-version)" in out
    assert not fake_ls.requests


def test_the_export_buttons_json_needs_label_studio_to_fetch_its_prediction_ids(tmp_path, fake_ls, capsys):
    err = fails(capsys, BUTTON_JSON, "--out", str(tmp_path / "o"))
    assert "lists the predictions of 2 annotated tasks by id only" in err
    assert "--label-studio-url URL and --api-key KEY, or LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY" in err
    assert "export a snapshot with full predictions" in err and "Exporting a project for evaluation" in err
    err = fails(capsys, BUTTON_JSON, "--label-studio-url", fake_ls.url, "--out", str(tmp_path / "o"))
    assert "(--api-key KEY, or LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY)" in err


def test_the_export_buttons_json_scores_as_the_snapshot_once_its_ids_are_fetched(tmp_path, fake_ls, monkeypatch):
    snapshot = figures(run(SNAPSHOT, tmp_path / "snapshot"))
    m = run(BUTTON_JSON, tmp_path / "button", "--label-studio-url", fake_ls.url, "--api-key", KEY)
    assert figures(m) == snapshot
    assert sorted(fake_ls.requests) == ["/api/predictions/?task=1", "/api/predictions/?task=2"]  # annotated only
    assert m["config"]["predictions_from"].startswith("the predictions the export lists by id, fetched from "
                                                      f"Label Studio at {fake_ls.url}")
    assert KEY not in json.dumps(m["config"]["command"])
    # The backend's variables work as the options do.
    monkeypatch.setenv("LABEL_STUDIO_URL", fake_ls.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", KEY)
    assert figures(run(BUTTON_JSON, tmp_path / "env")) == snapshot


def test_json_min_scores_as_the_snapshot_with_the_tasks_predictions_fetched(tmp_path, fake_ls, capsys):
    err = fails(capsys, JSON_MIN, "--out", str(tmp_path / "o"))
    assert "JSON_MIN export: it holds the annotations but not the backend's predictions" in err
    snapshot = figures(run(SNAPSHOT, tmp_path / "snapshot"))
    # JSON_MIN has no region ids: pre-labels pair with final regions by overlap, to the same counts here.
    m = run(JSON_MIN, tmp_path / "min", "--label-studio-url", fake_ls.url, "--api-key", KEY)
    assert figures(m) == snapshot and m["config"]["export_format"] == "JSON_MIN"


def test_one_model_version_is_scored_and_the_user_picks_another(tmp_path, fake_ls, capsys):
    m = run(SNAPSHOT, tmp_path / "ft", "--model-version", FT)
    want = EXPECTED[FT]
    assert m["AP"] == pytest.approx(want["AP"], abs=1e-12)
    assert (m["tp"], m["fp"], m["fn"]) == (want["tp"], want["fp"], want["fn"])
    assert m["config"]["num_images"] == 1 and m["config"]["unpredicted_tasks"] == [2]
    assert m["config"]["model_version_choice"] == "--model-version"
    out = capsys.readouterr().out
    assert f"model version {FT} (--model-version); 1 task annotated but without a prediction of it, not scored " \
           "(task ids 2)" in out
    err = fails(capsys, SNAPSHOT, "--model-version", "gdino-nope", "--out", str(tmp_path / "o"))
    assert f"--model-version 'gdino-nope': no annotated task holds a prediction of it; the export's annotated " \
           f"tasks hold {BASE} (2 tasks), {FT} (1 task)" in err


@pytest.mark.parametrize("name, message", [
    ("export.csv", "is Label Studio's CSV export, which has no predictions; export the project as JSON instead"),
    ("export.tsv", "is Label Studio's TSV export, which has no predictions; export the project as JSON instead"),
    ("export-coco.zip", "is a ZIP archive (Label Studio's COCO, YOLO or Pascal VOC export)"),
    ("export-yolo.zip", "is a ZIP archive (Label Studio's COCO, YOLO or Pascal VOC export)"),
])
def test_exports_without_predictions_are_refused_naming_the_export_to_choose(name, message, tmp_path, capsys):
    err = fails(capsys, FIXTURES / name, "--out", str(tmp_path / "o"))
    assert message in err and "Export -> JSON" in err


def test_cocos_result_json_taken_out_of_its_zip_is_refused(tmp_path, capsys):
    result = tmp_path / "result.json"
    result.write_bytes(zipfile.ZipFile(FIXTURES / "export-coco.zip").read("result.json"))
    err = fails(capsys, result, "--out", str(tmp_path / "o"))
    assert "is a COCO file (Label Studio's COCO export)" in err and "export the project as JSON instead" in err


def snapshot_tasks() -> list[dict]:
    return json.loads(SNAPSHOT.read_text())


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"  \n", "is empty"),
    (b"\x89PNG\r\n\x1a\n\x00\xff", "is not a text file"),
    (b"hello", "is not JSON (Expecting value at line 1, column 1)"),
    (b'[{"id": 1,', "is not JSON"),
    (b"42", "holds a JSON int, not a Label Studio JSON export"),
    (b"[]", "holds no tasks: the Export button exports only tasks with annotations"),
    (b"[1, 2]", "item 1 is a JSON int, not a task"),
    (b'[{"foo": 1}]', "item 1 has the keys foo, not those of a task"),
    (b'{"tasks": []}', "is a JSON object with the keys tasks, not a Label Studio JSON export"),
    (b'[{"id": "x", "data": {}}]', "task 1 has the id 'x'"),
    (b'[{"id": 1, "data": {}, "annotations": {}}]', 'task 1: "annotations" is a dict, not a list'),
    (b'[{"id": 1, "data": {}, "annotations": [3]}]', "task 1: an annotation is a int, not an object"),
    (b'[{"id": 1, "data": {}, "annotations": [{"result": 1}]}]', 'has a "result" that is not a list'),
    (b'[{"id": 1, "data": {}, "predictions": ["x"]}]', "a prediction is 'x', neither a prediction nor"),
    (b'[{"id": 1, "data": {}}, {"id": 1, "data": {}}]', "task 1 appears twice"),
])
def test_files_that_are_no_export_get_one_line(content, message, tmp_path, capsys):
    path = tmp_path / "export.json"
    path.write_bytes(content)
    assert message in fails(capsys, path, "--out", str(tmp_path / "o"))


def test_tasks_that_cannot_be_scored_get_one_line(tmp_path, capsys):
    tasks = snapshot_tasks()
    cases = {
        "cancelled": ([tasks[2]], "has no annotated tasks (cancelled (skipped) annotations only, on 1 of its 1 tasks)"),
        "unannotated": ([tasks[3]], "has no annotated tasks: nothing to score"),
        "no predictions": ([{**t, "predictions": []} for t in tasks],
                           "none of the 2 annotated tasks holds a prediction, so there is nothing to score"),
    }
    bad_box = json.loads(json.dumps(tasks))
    bad_box[0]["annotations"][1]["result"][0]["value"]["x"] = "ten"
    cases["bad box"] = (bad_box, "task 1: region 'a' has a size, score or position that is not a number")
    for name, (content, message) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(content))
        assert message in fails(capsys, path, "--out", str(tmp_path / "o")), name
    assert "is a folder, not an export file" in fails(capsys, tmp_path, "--out", str(tmp_path / "o"))


def test_failed_fetches_say_what_to_fix(tmp_path, fake_ls, capsys):
    out = ["--out", str(tmp_path / "o")]
    err = fails(capsys, BUTTON_JSON, "--label-studio-url", fake_ls.url, "--api-key", "wrong-key", *out)
    assert f"Label Studio at {fake_ls.url} refused the API key (--api-key, HTTP 401)" in err
    assert "wrong-key" not in err
    expired = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.c2ln"  # a JWT without exp
    err = fails(capsys, BUTTON_JSON, "--label-studio-url", fake_ls.url, "--api-key", expired, *out)
    assert "refused the API key (--api-key, a personal access token that cannot be refreshed" in err
    fake_ls.deleted = {5}
    err = fails(capsys, BUTTON_JSON, "--label-studio-url", fake_ls.url, "--api-key", KEY, *out)
    assert f"the export lists predictions that Label Studio at {fake_ls.url} no longer has: 5 (task 1)" in err
    assert "export the project again" in err
    fake_ls.predictions.pop(2)
    err = fails(capsys, BUTTON_JSON, "--label-studio-url", fake_ls.url, "--api-key", KEY, *out)
    assert f"Label Studio at {fake_ls.url} has no task 2 (HTTP 404 for its predictions)" in err
    fake_ls.html = True
    err = fails(capsys, BUTTON_JSON, "--label-studio-url", fake_ls.url, "--api-key", KEY, *out)
    assert "not with Label Studio's list of predictions: check --label-studio-url" in err
    closed = f"http://127.0.0.1:{free_port()}"
    err = fails(capsys, BUTTON_JSON, "--label-studio-url", closed, "--api-key", KEY, *out)
    assert f"could not reach Label Studio at {closed}" in err and "check --label-studio-url" in err
    err = fails(capsys, BUTTON_JSON, "--label-studio-url", "localhost:8080", "--api-key", KEY, *out)
    assert "--label-studio-url 'localhost:8080' must be a full URL with http:// or https://" in err


def test_one_task_object_on_its_own_is_read_as_an_export_of_one_task(tmp_path):
    path = tmp_path / "task.json"
    path.write_text(json.dumps(snapshot_tasks()[1]))  # task 2: Cat moved (IoU 0.905), Dog kept
    m = run(path, tmp_path / "run")
    assert m["config"]["num_images"] == 1 and (m["tp"], m["fp"], m["fn"]) == (2, 0, 0)
    assert m["AP"] == pytest.approx((1 + (9 + 0) / 10) / 2, abs=1e-12)  # Cat misses at IoU 0.95 only
