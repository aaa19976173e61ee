"""The training job the server runs on Start Training: thresholds, fine-tuning in a subprocess, cancel, too few."""
from __future__ import annotations

import json
import threading

import pytest

from backend.training.errors import NotEnoughAnnotations, TrainingCancelled
from backend.training.job import CPU_DEFAULTS, GPU_DEFAULTS, TrainingJob, TrainingJobConfig
from backend.training.store import ProjectStore
from tests.backend.training.job_factory import VERSION, make_job

@pytest.mark.slow
def test_start_training_learns_thresholds_then_fine_tunes(shapes24, tiny_model_dir, tmp_path):
    from detection import Detector, DetectorConfig

    events = []
    result = make_job(shapes24, tiny_model_dir, tmp_path / "state").run(threading.Event(), events.append)

    store = ProjectStore(tmp_path / "state")
    thresholds = store.load_thresholds(7)
    assert thresholds == result.thresholds and thresholds.model_version == VERSION
    # every right pre-label scores .9 and every wrong one .5: the most work is saved showing only the .9s
    assert all(t.source == "learned" and 0.5 < t.threshold <= 0.9 for t in thresholds.labels.values())

    assert result.model_dir.parent == tmp_path / "state" / "projects" / "7" / "models"
    if result.adopted:
        Detector.load(DetectorConfig(model=str(result.model_dir), device="cpu"))  # served like any checkpoint
    else:  # not adopted: its weights are deleted, its report and log stay as the evidence of the verdict
        assert not list(result.model_dir.glob("*.safetensors")) and (result.model_dir / "train.log").exists()
        assert f"its weights were deleted (not adopted); its report stays in {result.model_dir}" in result.summary()
    report = json.loads((result.model_dir / "training.json").read_text())
    assert result.model.ap_before == report["heldout"]["before"]["metrics"]["AP"]
    assert result.model.ap_after == report["heldout"]["after"]["metrics"]["AP"]
    assert (result.model.train_tasks, result.model.heldout_tasks) == (18, 6)
    assert result.model.not_worse == report["heldout"]["not_worse"]
    shows = any(t.tp + t.fp > 0 for t in result.model_thresholds.labels.values())
    assert result.adopted == (result.model.not_worse and shows)
    assert store.load_model(7) == (result.model if result.adopted else None)

    phases = [e.phase for e in events]
    assert phases[:3] == ["reading project", "learning thresholds", "fetching images"] and phases[-1] == "done"
    assert [(e.step, e.total) for e in events if e.phase == "training"] == [(1, 2), (2, 2)]
    assert all(e.loss > 0 for e in events if e.phase == "training")
    assert "thresholds learned for 3 of 3 labels" in result.summary()
    # The fine-tuned model's thresholds are its own (learned on its held-out boxes), kept in its directory,
    # and the project applies them only when that model serves it.
    own = result.model_thresholds
    assert (own.model, own.evidence, own.reviewed_tasks) == (str(result.model_dir), "held-out images", 6)
    assert store.load_thresholds(7, str(result.model_dir)) == own
    served = store.served(7, str(tiny_model_dir))
    if result.adopted:
        assert served.model == str(result.model_dir) and served.applied() == own.applied()
    else:
        assert served.model == str(tiny_model_dir) and served.applied() == thresholds.applied()



@pytest.mark.slow
def test_a_model_not_adopted_leaves_its_report_not_its_weights(shapes24, tiny_model_dir, tmp_path, monkeypatch):
    """Each Start Training writes a model copy; one that does not serve would only fill STATE_DIR."""
    monkeypatch.setattr(TrainingJob, "_adopt", lambda self, model, own: (False, "held out for this test"))
    result = make_job(shapes24, tiny_model_dir, tmp_path / "state").run(threading.Event(), lambda e: None)
    assert not result.adopted and ProjectStore(tmp_path / "state").load_model(7) is None
    kept = sorted(p.name for p in result.model_dir.iterdir())
    assert not [name for name in kept if name.endswith((".safetensors", ".bin", ".pt", ".pth"))], kept
    assert {"config.json", "training.json", "train.log"} <= set(kept), kept
    assert result.summary().endswith(f"its weights were deleted (not adopted); its report stays in {result.model_dir}")

def seed_state(state_dir):
    """A project already served by an earlier fine-tuned model with its own thresholds: what cancel must keep."""
    from backend.training.store import TrainedModel
    from backend.training.thresholds import HELDOUT, LEARNED, LabelThreshold, LearnedThresholds

    store = ProjectStore(state_dir)
    earlier = store.models_dir(7) / "ft-earlier"
    earlier.mkdir(parents=True)
    evidence = dict(configured=0.3, reviewed_boxes=30, precision=1.0, recall=0.5, tp=15, fp=0, fn=15, work_saved=15.0)
    own = LearnedThresholds(project="7", model_version="", reviewed_tasks=6, min_reviewed_boxes=10, model=str(earlier),
                            evidence=HELDOUT, labels={"red_square": LabelThreshold(threshold=0.4, source=LEARNED,
                                                                                   **evidence)})
    store.commit("7", [own], TrainedModel(model_dir=str(earlier), base_model="tiny", ap_before=0.1, ap_after=0.2,
                                          ap50_before=0.2, ap50_after=0.3, not_worse=True, train_tasks=18,
                                          heldout_tasks=6))
    return {p.relative_to(state_dir).as_posix(): p.read_bytes() for p in state_dir.rglob("*") if p.is_file()}


def state_files(state_dir):
    return {p.relative_to(state_dir).as_posix(): p.read_bytes() for p in state_dir.rglob("*")
            if p.is_file() and "/data/" not in p.relative_to(state_dir).as_posix()}


@pytest.mark.parametrize("phase", [
    "learning thresholds",
    pytest.param("training", marks=pytest.mark.slow),
    pytest.param("learning thresholds for the fine-tuned model", marks=pytest.mark.slow),
])
def test_a_cancelled_run_changes_nothing(shapes24, tiny_model_dir, tmp_path, phase):
    """Cancelled at any phase: thresholds, served model (and so model_version) exactly as before; the
    unfinished model directory is gone (the subprocess is stopped when cancelled while training)."""
    state = tmp_path / "state"
    before = seed_state(state)
    cancel = threading.Event()
    seen = []

    def progress(event):
        seen.append(event.phase)
        if event.phase == phase:
            cancel.set()

    job = make_job(shapes24, tiny_model_dir, state, steps=500 if phase == "training" else 2)
    with pytest.raises(TrainingCancelled, match="cancelled"):
        job.run(cancel, progress)
    assert phase in seen and "done" not in seen[seen.index(phase):]  # (the subprocess says "done" too)
    assert state_files(state) == before


def test_too_few_annotations_is_a_clear_message(shapes24, tiny_model_dir, tmp_path):
    job = make_job(shapes24, tiny_model_dir, tmp_path / "state", annotated=4)
    with pytest.raises(NotEnoughAnnotations) as caught:
        job.run()
    message = str(caught.value)
    assert message.startswith("project 7 has 4 annotated tasks; at least 20 are needed to fine-tune; "
                              "thresholds need 10 reviewed boxes per label")
    assert "red_square" in message


def test_thresholds_are_learned_even_when_there_is_too_little_to_fine_tune(shapes24, tiny_model_dir, tmp_path):
    job = make_job(shapes24, tiny_model_dir, tmp_path / "state", min_annotated_tasks=100)
    result = job.run()
    assert result.model is None and not result.adopted
    assert len(result.thresholds.learned_labels) == 3
    assert "at least 100 are needed to fine-tune" in result.summary()
    assert ProjectStore(tmp_path / "state").load_thresholds(7) == result.thresholds


def test_training_defaults_fit_the_device_and_the_plan_says_what_shortens_it(tmp_path):
    cpu = TrainingJobConfig.for_device(tmp_path, "tiny", "cpu")
    assert (cpu.steps, cpu.image_size) == CPU_DEFAULTS == (200, 512)
    assert cpu.plan() == ("fine-tuning 200 steps at 512 px on the CPU (the defaults for the CPU: set TRAIN_STEPS and "
                          "TRAIN_IMAGE_SIZE to choose); fewer TRAIN_STEPS or a smaller TRAIN_IMAGE_SIZE make it shorter")
    chosen = TrainingJobConfig.for_device(tmp_path, "tiny", "cpu", steps=50)
    assert (chosen.steps, chosen.image_size, chosen.device_defaults) == (50, 512, ("image_size",))
    assert chosen.plan().startswith("fine-tuning 50 steps at 512 px on the CPU (the defaults for the CPU: set "
                                    "TRAIN_IMAGE_SIZE to choose)")
    both = TrainingJobConfig.for_device(tmp_path, "tiny", "cpu", steps=1000, image_size=800)
    assert both.plan().startswith("fine-tuning 1,000 steps at 800 px on the CPU; fewer TRAIN_STEPS")
    assert GPU_DEFAULTS == (1000, None)


def test_the_summary_says_which_labels_are_off_and_why_a_model_was_not_adopted():
    from backend.training.job import TrainingResult
    from backend.training.store import TrainedModel
    from backend.training.thresholds import LEARNED, LabelThreshold, LearnedThresholds

    off = LabelThreshold(threshold=1.0, configured=0.35, reviewed_boxes=1000, precision=None, recall=0.0, tp=0, fp=0,
                         fn=0, work_saved=0.0, source=LEARNED, shown=1000, kept=0)
    on = LabelThreshold(threshold=0.5, configured=0.35, reviewed_boxes=40, precision=1.0, recall=1.0, tp=40, fp=0,
                        fn=0, work_saved=40.0, source=LEARNED, shown=50, kept=40)
    learned = LearnedThresholds(project="7", model_version=VERSION, labels={"Square": off, "Disk": on},
                                reviewed_tasks=30, min_reviewed_boxes=20)
    model = TrainedModel(model_dir="/s/projects/7/models/ft-1", base_model="tiny", ap_before=0.00014, ap_after=0.0,
                         ap50_before=0.0005, ap50_after=0.0, not_worse=False, train_tasks=24, heldout_tasks=6)
    result = TrainingResult("7", learned, model=model, why_not="its held-out AP is lower than the base model's")
    assert result.summary() == (
        "thresholds learned for 2 of 2 labels (Square, Disk); Square: pre-labels off — reviewers deleted all 1,000 "
        "boxes; fine-tuned model ft-1: held-out AP 0.01 -> 0.00, AP50 0.1 -> 0.0; not adopted (its held-out AP "
        "is lower than the base model's)")


def test_the_summary_names_thresholds_kept_from_an_earlier_training():
    """A second Start Training with too little new review keeps the thresholds learned before: the message
    says they still apply, not only that none was learned this time."""
    from backend.training.job import TrainingResult
    from backend.training.thresholds import EARLIER, LEARNED, LabelThreshold, LearnedThresholds

    def label(threshold, source):
        return LabelThreshold(threshold=threshold, configured=0.05, reviewed_boxes=6, precision=None, recall=None,
                              tp=3, fp=3, fn=0, work_saved=0.0, source=source, shown=6, kept=3)

    kept = LearnedThresholds(project="7", model_version=VERSION, reviewed_tasks=3, min_reviewed_boxes=20,
                             labels={"Square": label(0.905, EARLIER), "Disc": label(0.874, EARLIER)})
    assert TrainingResult("7", kept).summary() == (
        "thresholds learned for 0 of 2 labels; kept from an earlier training (too little new evidence to move "
        "them): Disc 0.87, Square 0.91")
    one = LearnedThresholds(project="7", model_version=VERSION, reviewed_tasks=30, min_reviewed_boxes=20,
                            labels={"Square": label(0.5, LEARNED), "Disc": label(0.874, EARLIER)})
    assert TrainingResult("7", one).summary() == (
        "thresholds learned for 1 of 2 labels (Square); kept from an earlier training (too little new evidence "
        "to move them): Disc 0.87")
