"""The loop a labelling team runs every week, as one flow against the real Label Studio 1.23.2:
pre-label -> review -> export (the Export button) and evaluate -> Start Training (one cancelled run that
changes nothing, one that finishes) -> pre-label the unreviewed tasks with what is served now; twice.

Every step goes through Label Studio's API as its UI does; the backend is watched only through its
/status, /versions and STATE_DIR. The expected figures come from what the test itself did in review.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.export_project import button_export
from tests.e2e.ls_harness import start_backend, stop
from tests.e2e.ls_user import (
    create_project, evaluate, import_tasks, make_image, one_line_error, predictions_of, retrieve_predictions,
    start_training, task_ids, training_run, upload_images, wait_for_training,
    wait_until_jobs_finish,
)
from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="Square"/>
    <Label value="Disc"/>
  </RectangleLabels>
</View>"""
LABELS = {"Square", "Disc"}
SIZE = (160, 120)
TASKS, REVIEWED, REVIEWED_LATER = 30, 24, 3
# Boxes a reviewer draws (percent x, y, w, h), the first that overlaps no deleted pre-label is used, so the
# evaluation cannot pair a deleted pre-label with a drawn box: the counts stay those of the review.
DRAWN = [(20, 25, 30, 40), (60, 50, 30, 35), (5, 55, 25, 30), (55, 5, 30, 30), (35, 35, 20, 20), (2, 2, 15, 15)]
# Phases of a run while its fine-tuning subprocess works (the row's message starts with its phase).
FINE_TUNING = ("fine-tuning", "evaluating base model", "training")


def iou(a, b) -> float:
    ax0, ay0, aw, ah = a
    bx0, by0, bw, bh = b
    w = max(0.0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    h = max(0.0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    return w * h / (aw * ah + bw * bh - w * h)


def xywh(region: dict) -> tuple:
    v = region["value"]
    return v["x"], v["y"], v["width"], v["height"]


def review(ls_api, task_id: int, prediction: dict, n: int) -> Counter:
    """What a reviewer saves starting from the pre-labels (the n-th reviewed task): keeps one or two, moves
    one on two tasks of three, deletes the rest, draws one box (two on every fourth task). Returns what was
    done, as the evaluation counts it. The boxes kept are the highest-scored ones, so Start Training learns
    thresholds that keep pre-labelling on (the served version changes)."""
    shown = sorted(prediction["result"], key=lambda r: -r["score"])
    keep = min(1 + n % 2, len(shown))
    move = min(1 if n % 3 else 0, len(shown) - keep)
    kept = [{k: v for k, v in r.items() if k != "score"} for r in shown[:keep]]
    moved = []
    for r in shown[keep:keep + move]:
        value = dict(r["value"])
        value["x"] += 2 if value["x"] + value["width"] + 2 <= 100 else -2
        moved.append({**{k: v for k, v in r.items() if k != "score"}, "value": value})
    deleted = shown[keep + move:]
    free = [box for box in DRAWN if all(iou(box, xywh(r)) < 0.4 for r in deleted)]
    assert len(free) >= 2, f"task {task_id}: every box a reviewer could draw overlaps a deleted pre-label"
    drawn = [{"id": f"drawn-{task_id}-{k}", "from_name": "label", "to_name": "image", "type": "rectanglelabels",
              "original_width": SIZE[0], "original_height": SIZE[1], "image_rotation": 0,
              "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]}}
             for k, ((x, y, w, h), label) in enumerate(zip(free, ["Square", "Disc"][:1 + (n % 4 == 0)]))]
    r = ls_api.post(f"/api/tasks/{task_id}/annotations/", json={
        "result": kept + moved + drawn, "was_cancelled": False, "parent_prediction": prediction["id"]})
    assert r.status_code == 201, r.text
    return Counter(prelabels=len(shown), kept=len(kept), moved_resized=len(moved), deleted=len(deleted),
                   added=len(drawn), final=len(kept) + len(moved) + len(drawn))


@dataclass
class Team:
    """One project, its Label Studio and its backend, seen as the team sees them."""

    ls_client: object
    ls_api: httpx.Client
    url: str  # the backend
    project: int
    ml: int
    state_dir: Path
    log: Path

    def served_version(self) -> str:
        """The project's model_version as Label Studio sees it: reading the ML backend calls /setup anew."""
        return self.ls_client.ml.get(self.ml).model_version

    def versions(self) -> list[str]:
        return httpx.get(f"{self.url}/versions", params={"project": self.project}, timeout=5).json()["versions"]

    def versions_in_label_studio(self) -> list[str]:
        """The model settings' version dropdown (Label Studio asks the backend's /versions)."""
        r = self.ls_api.get(f"/api/ml/{self.ml}/versions")
        assert r.status_code == 200, r.text
        return r.json()["versions"]

    def learned(self) -> list[str]:
        (record,) = [p for p in httpx.get(f"{self.url}/status", timeout=5).json()["projects"]
                     if p["project"] == str(self.project)]
        return record["learned"]

    def state_files(self) -> dict[str, bytes]:
        """Every file under STATE_DIR but the training set a run writes for its subprocess (data/: the
        annotations and images, kept only to spare the next run the downloads; nothing serves from it)."""
        data = self.state_dir / "projects" / str(self.project) / "data"
        return {str(p.relative_to(self.state_dir)): p.read_bytes() for p in sorted(self.state_dir.rglob("*"))
                if p.is_file() and data not in p.parents}

    def everything(self) -> dict:
        return {"model_version": self.served_version(), "versions": self.versions(), "learned": self.learned(),
                "state_dir": self.state_files()}

    def prelabel(self, ids: list[int]) -> dict[int, list[dict]]:
        """Retrieve Predictions on `ids`, then the predictions each holds once the backend's jobs finished."""
        retrieve_predictions(self.ls_api, self.project, ids)
        wait_until_jobs_finish(self.url)
        return {t: predictions_of(self.ls_api, t) for t in ids}

    def train_and_cancel(self) -> None:
        """Start Training, cancel it while it fine-tunes: everything is as before."""
        before = self.everything()
        previous = (training_run(self.url, self.project) or {}).get("id")
        start_training(self.ls_api, self.ml)
        def fine_tuning(run) -> bool:
            if run is None or run["id"] == previous:
                return False
            assert run["state"] in ("queued", "running"), f"the run ended before it could be cancelled: {run}"
            return run["message"].startswith(FINE_TUNING)

        # polled often: the subprocess of 8 steps lives for seconds
        wait_until(lambda: training_run(self.url, self.project), "the new run fine-tuning", 300, 0.1, holds=fine_tuning)
        r = httpx.post(f"{self.url}/training/cancel", params={"project": self.project}, timeout=10)
        assert r.status_code == 200, r.text
        run = wait_for_training(self.url, self.project, timeout=120, log=self.log)
        assert run["state"] == "cancelled", run
        assert run["message"] == f"cancelled: nothing changed (still served as {before['model_version']})", run
        assert self.everything() == before

    def train(self) -> tuple[dict, bool]:
        """Start Training to its end: the row, and whether it reports adopting the model it fine-tuned."""
        start_training(self.ls_api, self.ml)
        run = wait_for_training(self.url, self.project, timeout=420, log=self.log)
        assert run["state"] == "done", (run, self.log.read_text()[-3000:])
        assert "fine-tuned model ft-" in run["message"], run
        adopted = "now serving the project" in run["message"]
        assert adopted != ("not adopted (" in run["message"]), run
        return run, adopted


def check_training_row(team: Team, run: dict, adopted: bool, before: str) -> str:
    """The row names the version the run produced, which Label Studio is served with from now on."""
    version = team.served_version()
    assert run["model_version"] == version, (run, version)
    if adopted:
        assert version.startswith("ft-") and version != before, (before, version)
    changed = f"; the project is served as {version}" in run["message"]
    assert changed == (version != before), (run, before)
    return version


def check_new_predictions(stored: dict[int, list[dict]], old: list[str], version: str, adopted: bool) -> None:
    """Each task got one prediction of the version served now (none when it is one it already held),
    with boxes when that model was reported adopted, of the project's labels only."""
    want = list(dict.fromkeys([*old, version]))
    assert {t: [p["model_version"] for p in ps] for t, ps in stored.items()} == {t: want for t in stored}
    for task, predictions in stored.items():
        (new,) = [p for p in predictions if p["model_version"] == version]
        if adopted:
            assert new["result"], f"task {task}: empty pre-label from {version}, reported adopted"
        assert {label for r in new["result"] for label in r["value"]["rectanglelabels"]} <= LABELS
    # Learned thresholds never end pre-labelling for the project: the tasks show the reviewed images again.
    assert any(p["result"] for ps in stored.values() for p in ps if p["model_version"] == version)


def connect_project(ls_client, ls_api, url: str, state_dir: Path, log: Path) -> tuple[Team, list[int]]:
    """A project of a few images behind TASKS tasks, with the backend at `url` connected: the team, task ids."""
    project = create_project(ls_client, "E2E team loop", CONFIG)
    uploaded = upload_images(ls_api, project, {f"loop_{i}.png": make_image(40 + i, SIZE) for i in range(3)})
    images = [ls_api.get(f"/api/tasks/{t}").json()["data"]["image"] for t in uploaded]
    import_tasks(ls_api, project, [{"image": images[k % 3]} for k in range(TASKS - len(uploaded))])
    ids = task_ids(ls_api, project)
    assert len(ids) == TASKS
    ml = ls_client.ml.create(project=project, url=url, title="Grounding DINO", is_interactive=False)
    return Team(ls_client, ls_api, url, project, ml.id, state_dir, log), ids


def check_export_scores(ls_api, label_studio, project: int, tmp_path: Path, base: str, reviewed: list[int],
                        did: Counter) -> None:
    """The Export button's file, scored by evaluation.labelstudio (its prediction ids fetched): the counts
    are those of the review."""
    export = tmp_path / "export.json"
    export.write_bytes(button_export(ls_api, project))
    err = one_line_error(evaluate(export, tmp_path / "no-access"))
    assert "--label-studio-url URL and --api-key KEY" in err, err
    proc_eval = evaluate(export, tmp_path / "eval", "--label-studio-url", label_studio.url,
                         "--api-key", label_studio.token)
    assert proc_eval.returncode == 0, proc_eval.stderr
    assert f"fetched from Label Studio at {label_studio.url} for {REVIEWED} annotated tasks" in proc_eval.stdout
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["config"]["model"] == base and metrics["config"]["num_images"] == REVIEWED
    exported = json.loads(export.read_bytes())  # the button exports the annotated tasks only (its default)
    assert sorted(t["id"] for t in exported) == reviewed
    assert metrics["config"]["num_tasks"] == metrics["config"]["num_annotated_tasks"] == REVIEWED
    assert metrics["prelabels"] == {"prelabels": did["prelabels"], "kept": did["kept"],
                                    "moved_resized": did["moved_resized"], "relabelled": 0,
                                    "deleted": did["deleted"], "added": did["added"]}
    # every stored pre-label counted (the threshold is the lowest stored score), every final box once
    assert metrics["tp"] + metrics["fp"] == did["prelabels"] and metrics["tp"] + metrics["fn"] == did["final"]


def test_the_team_loop_holds_at_every_joint(ls_client, ls_api, label_studio, tiny_model_dir, tmp_path):
    started = time.monotonic()
    state_dir = tmp_path / "state"
    url, proc, log = start_backend(tiny_model_dir, label_studio, "backend-team-loop.log", {
        # Low: the tiny random model returns boxes, and so does its briefly fine-tuned copy.
        "BOX_THRESHOLD": "0.05", "STATE_DIR": str(state_dir), "TRAIN_STEPS": "8", "TRAIN_IMAGE_SIZE": "128"})
    try:
        # 1. A project of a few images behind 30 tasks, the model connected, everything pre-labelled.
        team, ids = connect_project(ls_client, ls_api, url, state_dir, log)
        base = team.served_version()
        stored = team.prelabel(ids)
        check_new_predictions(stored, [], base, adopted=False)
        assert all(ps[0]["result"] for ps in stored.values()), "the base model pre-labels every task"

        # 2. Review 24 tasks as a reviewer does: keep, move, delete, draw.
        reviewed, rest = ids[:REVIEWED], ids[REVIEWED:]
        did = sum((review(ls_api, t, stored[t][0], n) for n, t in enumerate(reviewed)), Counter())
        assert all(did[k] for k in ("kept", "moved_resized", "deleted", "added")), did

        # 3. The Export button's file, scored by evaluation.labelstudio (its prediction ids fetched).
        check_export_scores(ls_api, label_studio, team.project, tmp_path, base, reviewed, did)

        # 4. Start Training, cancelled while it fine-tunes: nothing changes.
        team.train_and_cancel()

        # 5. Start Training to its end.
        run, adopted = team.train()
        first = check_training_row(team, run, adopted, base)

        # 6. The unreviewed tasks pre-labelled by what is served now.
        check_new_predictions(team.prelabel(rest), [base], first, adopted)

        # 7. The version list holds every version served for the project.
        assert team.versions() == team.versions_in_label_studio() == list(dict.fromkeys([base, first]))
        loop_one = time.monotonic() - started

        # 8. Again: review three of them (their newest pre-labels), cancel once, train, pre-label the rest.
        later, rest = rest[:REVIEWED_LATER], rest[REVIEWED_LATER:]
        for n, task in enumerate(later):
            (newest,) = [p for p in predictions_of(ls_api, task) if p["model_version"] == first]
            review(ls_api, task, newest, n)
        team.train_and_cancel()
        run, adopted_again = team.train()
        second = check_training_row(team, run, adopted_again, first)
        check_new_predictions(team.prelabel(rest), [base, first], second, adopted_again)
        assert team.versions() == team.versions_in_label_studio() == list(dict.fromkeys([base, first, second]))
        print(f"team loop: first round {loop_one:.0f} s, both {time.monotonic() - started:.0f} s; adopted: "
              f"{adopted}, {adopted_again}")
    finally:
        stop(proc)
