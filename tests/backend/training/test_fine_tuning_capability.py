"""Start Training on a model whose family cannot be fine-tuned (SAM 3): per-label thresholds only, said in the
job's result and on the status page, not a failure."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from backend.training.errors import NotEnoughAnnotations
from backend.training.job import TrainingJob
from backend.training.service import TrainingService, make_job_factory
from backend.training.store import ProjectStore
from detection import SAM3
from labelstudio.target import LabelStudioTarget
from tests.backend.training.job_factory import make_job
from tests.waiting import wait_until

STATEMENT = "SAM 3 cannot be fine-tuned by this backend (model /models/sam3): thresholds only"


def test_the_job_factory_of_a_sam3_model_asks_for_thresholds_only(make_settings):
    settings = make_settings(MODEL="/models/sam3", LABEL_STUDIO_URL="http://ls.test:8080", LABEL_STUDIO_API_KEY="k")
    predictor = SimpleNamespace(detector=SimpleNamespace(family=SAM3), box_threshold=0.5, fetcher=None,
                                model_version=lambda config, thresholds: "sam3-abc",
                                mapping=lambda config: SimpleNamespace(active=()))
    engine = SimpleNamespace(predictor=predictor, model=settings.model, thresholds={})
    target = LabelStudioTarget(url="http://ls.test:8080", key="k")
    factory = make_job_factory(settings, lambda project: engine, lambda s, access: target)
    job, version = factory(1, "<View/>", LabelStudioTarget())
    assert version == "sam3-abc" and job.config.not_tunable == STATEMENT


def test_thresholds_only_run_says_so_and_never_fine_tunes(shapes24, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(TrainingJob, "_fine_tune", lambda *a, **k: pytest.fail("fine-tuning started"))
    job = make_job(shapes24, tiny_model_dir, tmp_path / "state", not_tunable=STATEMENT)
    service = TrainingService(job.config, lambda project_id, label_config, access: (job, "tiny-1234abcd"))
    run = service.start({"id": 7, "label_config": "<View/>"}, SimpleNamespace(hostname=None, access_token=None))
    wait_until(lambda: run.state, "the thresholds-only run to end", 120,
               holds=lambda state: state not in ("queued", "running"))
    assert run.state == "done"
    learned = ProjectStore(tmp_path / "state").load_thresholds(7)
    assert len(learned.learned_labels) == 3  # the labels with enough reviewed boxes
    (status,) = service.status()  # what the status page shows for the run
    assert status.state == "done"
    assert status.message == f"{STATEMENT}; thresholds learned for 3 of 3 labels (red_square, GreenDisk, blue triangle)"


def test_thresholds_only_with_too_few_reviewed_boxes_says_what_is_missing(shapes24, tiny_model_dir, tmp_path):
    job = make_job(shapes24, tiny_model_dir, tmp_path / "state", not_tunable=STATEMENT, min_reviewed_boxes=10_000)
    with pytest.raises(NotEnoughAnnotations) as caught:
        job.run()
    assert str(caught.value).startswith(f"{STATEMENT}; no label has enough reviewed boxes yet: thresholds need "
                                        "10000 reviewed boxes per label on tasks predicted by tiny-1234abcd (now: ")
