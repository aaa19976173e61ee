"""`backend.prelabel` against a stand-in Label Studio client: paging, skipping what holds the version,
chunked imports through the importer's check, the failure summary, and the torchrun rank sharding (ranks
simulated in one process). The real Label Studio and real torchrun processes are in tests/e2e."""
from __future__ import annotations

import pytest

from backend.prelabel import ConfigError, ProjectRun, Shard, Summary, main, prelabel, rank_device
from backend.settings import Settings
from runtime.distributed import Dist
from tests.backend.standin_label_studio import StandInLabelStudio

CONFIG = '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">' \
         '<Label value="Cat"/></RectangleLabels></View>'
VERSION = "stand-in-1"
URL = "http://label-studio.test:8080"


class StandInPredictor:
    """One box per task named after its image; no box for `blank*` images; `missing*` images fail."""

    batch_size = 1

    def __init__(self):
        self.seen: list[int] = []
        self.calls: list[int] = []  # tasks per predict_tasks call

    def model_version(self, label_config: str, thresholds=None) -> str:
        assert label_config == CONFIG
        return VERSION

    def predict_tasks(self, tasks, label_config, context=None, hostname=None, access_token=None, thresholds=None):
        self.seen.extend(t["id"] for t in tasks)
        self.calls.append(len(tasks))
        return [self._item(t["data"]["image"]) for t in tasks]

    @staticmethod
    def _item(image: str) -> dict:
        if image.startswith("missing"):
            return {"model_version": VERSION, "error": f"no such file: {image}"}
        result = [] if image.startswith("blank") else [{"value": {"x": 1.0}, "from_name": image}]
        return {"result": result, "score": 0.5, "model_version": VERSION}


class RecordedProgress:
    def __init__(self):
        self.total, self.advanced, self.closed = None, 0, False

    def start(self, total, desc):
        self.total = total

    def advance(self, tasks):
        self.advanced += tasks

    def close(self):
        self.closed = True


def project(n: int, images=None, predictions=None) -> StandInLabelStudio:
    images = images or {}
    predictions = predictions or {}
    tasks = [{"id": i, "data": {"image": images.get(i, f"img{i}.jpg")}, "predictions": predictions.get(i, [])}
             for i in range(1, n + 1)]
    return StandInLabelStudio(tasks, CONFIG)


def run(client, predictor=None, **kwargs) -> Summary:
    options = {"batch_size": 2, "page_size": 3, "import_chunk": 3, "progress": False, "hostname": URL, **kwargs}
    return prelabel(client, predictor or StandInPredictor(), client.project_id, **options)


def assert_one_prediction_each(client, ids):
    for task_id in ids:
        versions = [p["model_version"] for p in client.predictions(task_id)]
        assert versions.count(VERSION) == 1, (task_id, client.predictions(task_id))


def test_pages_through_the_project_and_imports_each_task_once_in_checked_chunks():
    client, predictor = project(7), StandInPredictor()
    summary = run(client, predictor)
    assert client.pages == [[1, 2, 3], [4, 5, 6], [7]], "every page, page_size tasks each"
    assert predictor.calls == [2, 2, 2, 1], "batch_size tasks per predict call"
    assert client.imports == [[1, 2, 3], [4, 5, 6], [7]], "import_chunk predictions per request, the rest at the end"
    assert client.checks == client.imports, "each chunk is checked against Label Studio before it is imported"
    assert_one_prediction_each(client, range(1, 8))
    assert client.predictions(5)[0] == {"task": 5, "result": [{"value": {"x": 1.0}, "from_name": "img5.jpg"}],
                                        "score": 0.5, "model_version": VERSION}
    assert (summary.predicted, summary.skipped, summary.failed, summary.ok) == (7, 0, {}, True)


def test_skips_tasks_that_hold_this_version_and_predicts_those_with_another():
    held = {2: [{"model_version": VERSION, "result": []}], 3: [{"model_version": "older-0", "result": []}]}
    client, predictor = project(4, predictions=held), StandInPredictor()
    progress = RecordedProgress()
    summary = run(client, predictor, tracker=progress)
    assert sorted(predictor.seen) == [1, 3, 4]
    assert (summary.predicted, summary.skipped) == (3, 1)
    assert_one_prediction_each(client, range(1, 5))
    assert [p["model_version"] for p in client.predictions(3)] == ["older-0", VERSION]
    assert (progress.total, progress.advanced, progress.closed) == (4, 4, True)


def test_a_task_stored_by_another_process_meanwhile_is_not_stored_again():
    client = project(5)

    def backend_stores_task_4(asked):  # the HTTP backend's job imported task 4 while this run predicted it
        client.stored[4]["predictions"].append({"task": 4, "model_version": VERSION, "result": []})

    client.before_check = backend_stores_task_4
    summary = run(client, import_chunk=5)
    assert client.imports == [[1, 2, 3, 5]]
    assert_one_prediction_each(client, range(1, 6))
    assert (summary.predicted, summary.skipped, summary.stored_meanwhile) == (4, 1, 1)
    assert "stored by another process during this run: 1" in summary.report()


def test_failed_tasks_are_summarised_with_their_reasons():
    client = project(6, images={2: "missing-a.jpg", 5: "missing-b.jpg", 6: "blank.jpg"})
    summary = run(client)
    assert summary.failed == {2: "no such file: missing-a.jpg", 5: "no such file: missing-b.jpg"}
    assert (summary.predicted, summary.empty, summary.ok) == (4, 1, False)
    assert client.predictions(2) == [] and client.predictions(5) == []
    report = summary.report().splitlines()
    assert report[:3] == ["predicted: 4 (of which without boxes: 1)",
                          "skipped (already predicted by this model version): 0", "failed: 2"]
    assert report[3:] == ["  task 2: no such file: missing-a.jpg", "  task 5: no such file: missing-b.jpg"]


def test_a_refused_import_stops_with_the_reason_and_a_rerun_goes_on():
    client = project(7)
    client.refuse_imports_after = 1  # the key is revoked after the first chunk
    first = run(client)
    assert first.predicted == 3 and len(first.stopped) == 1
    assert "refused the API key (HTTP 401)" in first.stopped[0] and "LABEL_STUDIO_API_KEY" in first.stopped[0]
    assert "stopped early:" in first.report() and not first.ok
    client.refuse_imports_after = None
    second = run(client)
    assert (second.predicted, second.skipped, second.ok) == (4, 3, True)
    assert_one_prediction_each(client, range(1, 8))


def test_an_unknown_project_is_a_configuration_error_naming_it():
    with pytest.raises(ConfigError, match=r"cannot read project 99: .*no such project"):
        ProjectRun.open(project(1), StandInPredictor(), 99, URL)


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_take_disjoint_shares_whose_union_is_every_task(world):
    client = project(11, predictions={4: [{"model_version": VERSION, "result": []}]})
    predictors = [StandInPredictor() for _ in range(world)]
    trackers = [RecordedProgress() for _ in range(world)]
    parts = [run(client, predictors[rank], shard=Shard(rank, world), tracker=trackers[rank]) for rank in range(world)]
    shares = [set(p.seen) for p in predictors]
    for rank, share in enumerate(shares):
        assert share == {i for i in range(1, 12) if i % world == rank and i != 4}
    assert set().union(*shares) == set(range(1, 12)) - {4}
    assert sum(len(s) for s in shares) == 10, "no task in two shares"
    assert_one_prediction_each(client, range(1, 12))
    total = Summary.merge(parts)
    assert (total.predicted, total.skipped, total.ok) == (10, 1, True)
    assert sum(t.advanced for t in trackers) == 11 and {t.total for t in trackers} == {11}


def test_a_rank_that_stopped_is_completed_by_the_rerun_without_duplicates():
    client = project(10)
    client.refuse_imports_after = 1
    crashed = run(client, shard=Shard(1, 2), import_chunk=2)  # rank 1 dies after its first import
    client.refuse_imports_after = None
    rank0 = run(client, shard=Shard(0, 2), import_chunk=2)
    assert crashed.predicted == 2 and rank0.predicted == 5
    rerun = Summary.merge([run(client, shard=Shard(rank, 2)) for rank in range(2)])
    assert (rerun.predicted, rerun.skipped, rerun.ok) == (3, 7, True)
    assert_one_prediction_each(client, range(1, 11))


def test_summaries_of_the_ranks_merge_into_one():
    a = Summary(predicted=3, skipped=1, empty=1, failed={9: "bad"}, stopped=["Label Studio down"])
    b = Summary(predicted=2, skipped=4, stored_meanwhile=2, failed={2: "worse"}, stopped=["Label Studio down"])
    total = Summary.merge([a, b])
    assert (total.predicted, total.skipped, total.stored_meanwhile, total.empty) == (5, 5, 2, 1)
    assert total.failed == {9: "bad", 2: "worse"}
    report = total.report()
    assert report.index("task 2: worse") < report.index("task 9: bad")
    assert report.count("stopped early: Label Studio down") == 1


def test_each_rank_takes_its_own_device():
    rank1 = Dist(rank=1, world_size=2, local_rank=1)
    assert rank_device(Settings.from_env({"DEVICES": "cuda:2,cuda:3"}), rank1) == "cuda:3"
    assert rank_device(Settings.from_env({"DEVICE": "cpu"}), rank1) == "cpu"
    assert rank_device(Settings.from_env({"DEVICES": "cpu,cpu"}), Dist()) == "cpu"
    with pytest.raises(ConfigError, match=r"DEVICES=cuda:0 lists 1 devices .*--nproc-per-node"):
        rank_device(Settings.from_env({"DEVICES": "cuda:0"}), rank1)


def test_without_label_studio_settings_the_command_exits_2(monkeypatch, capsys):
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_HOST", raising=False)
    assert main(["--project", "1"]) == 2
    assert "set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY" in capsys.readouterr().err


def test_prelabel_uses_the_fine_tuned_model_the_backend_serves_the_project_with(tmp_path):
    """Same model, same model_version as the backend: no second prediction of another version."""
    from backend.prelabel import served_settings
    from backend.settings import Settings
    from backend.training.store import ProjectStore, TrainedModel

    settings = Settings(state_dir=str(tmp_path))
    assert served_settings(settings, 12) is settings
    ProjectStore(tmp_path).save_model("12", TrainedModel(
        model_dir="/models/ft-2026-12-01", base_model=settings.model, ap_before=0.1, ap_after=0.2,
        ap50_before=0.2, ap50_after=0.3, not_worse=True, train_tasks=40, heldout_tasks=10))
    assert served_settings(settings, 12).model == "/models/ft-2026-12-01"
    assert served_settings(settings, 13).model == settings.model
