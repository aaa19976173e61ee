"""Each model's thresholds are kept with it and applied to it only (ProjectStore.served: the one rule the
server, backend.prelabel and backend.train share); a finished run commits its changes together."""
from __future__ import annotations

import json

from backend.training.store import ProjectStore, TrainedModel
from backend.training.thresholds import EARLIER, LEARNED, LabelThreshold, LearnedThresholds

EVIDENCE = dict(configured=0.35, reviewed_boxes=30, precision=None, recall=0.0, tp=0, fp=0, fn=30, work_saved=0.0)


def thresholds(model, value, source=LEARNED, version="tiny-abc"):
    return LearnedThresholds(project="8", model_version=version, reviewed_tasks=30, min_reviewed_boxes=20, model=model,
                             labels={"Cat": LabelThreshold(threshold=value, source=source, **EVIDENCE)})


def tuned(store, name="ft-1"):
    model_dir = store.models_dir("8") / name
    model_dir.mkdir(parents=True)
    return TrainedModel(model_dir=str(model_dir), base_model="tiny", ap_before=0.0, ap_after=0.1, ap50_before=0.0,
                        ap50_after=0.2, not_worse=True, train_tasks=24, heldout_tasks=6)


def test_the_base_models_thresholds_are_never_applied_to_a_fine_tuned_model_and_vice_versa(tmp_path):
    store = ProjectStore(tmp_path)
    model = tuned(store)
    store.commit("8", [thresholds("tiny", 1.0), thresholds(model.model_dir, 0.2)], None)
    assert (tmp_path / "projects/8/thresholds.json").is_file()
    assert (tmp_path / "projects/8/models/ft-1/thresholds.json").is_file()
    # not adopted: the base model serves, with its own thresholds only
    served = store.served("8", "tiny")
    assert (served.model, served.tuned, served.applied()) == ("tiny", None, {"Cat": 1.0})
    # another base model (GROUNDING_DINO_MODEL changed): the file is not its own
    assert store.served("8", "other-base").applied() == {}
    store.save_model("8", model)
    served = store.served("8", "tiny")
    assert (served.model, served.tuned, served.applied()) == (model.model_dir, model, {"Cat": 0.2})


def test_a_fine_tuned_model_without_thresholds_of_its_own_gets_none(tmp_path):
    store = ProjectStore(tmp_path)
    model = tuned(store)
    store.commit("8", [thresholds("tiny", 1.0)], model)
    assert store.served("8", "tiny").applied() == {}  # not the base model's 1.0


def test_a_thresholds_file_written_before_models_were_recorded_belongs_to_the_base_model(tmp_path):
    store = ProjectStore(tmp_path)
    path = store.save_thresholds(thresholds(None, 0.7, version="tiny-grounding-dino-1a2b"))
    data = json.loads(path.read_text())
    del data["model"], data["evidence"], data["labels"]["Cat"]["shown"], data["labels"]["Cat"]["kept"]
    path.write_text(json.dumps(data))  # the old format
    assert store.served("8", "/models/tiny-grounding-dino").applied() == {"Cat": 0.7}
    assert store.served("8", "/models/other").applied() == {}


def test_thresholds_learned_earlier_keep_applying(tmp_path):
    store = ProjectStore(tmp_path)
    store.save_thresholds(thresholds("tiny", 0.6, source=EARLIER))
    assert store.served("8", "tiny").applied() == {"Cat": 0.6}
