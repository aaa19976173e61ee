"""The threshold learner on hand-built Label Studio tasks whose best thresholds are known."""
from __future__ import annotations

import json

import numpy as np
import pytest

from backend.training.store import ProjectStore, StateError
from backend.training.thresholds import (
    ALL_OFF, EARLIER, HELDOUT, LEARNED, NO_PRELABELS, TOO_FEW, LearnedThresholds, learn_heldout_thresholds,
    learn_thresholds,
)

VERSION = "tiny-abc12345"


def region(rid, label, x, y, score=None, size=8):
    r = {"id": rid, "type": "rectanglelabels", "from_name": "label", "to_name": "image",
         "original_width": 400, "original_height": 300,
         "value": {"x": x, "y": y, "width": size, "height": size, "rotation": 0, "rectanglelabels": [label]}}
    return r if score is None else {**r, "score": score}


def task(tid, prelabels, finals, version=VERSION, cancelled=False):
    """prelabels: (label, score, kept) at distinct places; a kept one is in the final annotation as is."""
    preds = [region(f"p{tid}-{k}", label, 10 * k, 10, score) for k, (label, score, _) in enumerate(prelabels)]
    final = [region(f"p{tid}-{k}", label, 10 * k, 10) for k, (label, _, kept) in enumerate(prelabels) if kept]
    final += [region(f"f{tid}-{k}", label, 10 * k, 60) for k, label in enumerate(finals)]  # drawn by hand
    out = {"id": tid, "data": {"image": f"/data/upload/1/{tid}.jpg"},
           "predictions": [{"id": 1000 + tid, "model_version": version, "score": 0.5, "result": preds}]}
    out["annotations"] = [{"id": 2000 + tid, "was_cancelled": cancelled, "result": final,
                           "updated_at": "2026-01-01T00:00:00Z"}]
    return out


# Car pre-labels: right ones (kept) at .9 .85 .8 .75 .7 .52, wrong ones (deleted) at .65 .6 .5 .45 .4
CAR = [("Car", s, True) for s in (.9, .85, .8, .75, .7, .52)] + [("Car", s, False) for s in (.65, .6, .5, .45, .4)]


def project_tasks():
    return [
        task(1, CAR[:4] + CAR[6:8], ["Car", "Bike"]),     # a Car drawn by hand: one the model missed
        task(2, CAR[4:6] + CAR[8:], ["Bike"]),
        task(3, [("Person", .8, True), ("Person", .6, False)], ["Person"]),
        # Relabelled: a Person pre-label the annotator turned into a Car counts as a wrong Person pre-label.
        {**task(4, [], []), "predictions": [{"model_version": VERSION, "result": [region("q", "Person", 5, 5, .9)]}],
         "annotations": [{"id": 9, "result": [region("q", "Car", 5, 5)]}]},
        # None of these count: another model version, a cancelled annotation, no annotation at all.
        task(5, [("Car", .99, False)] * 3, [], version="tiny-old"),
        task(6, [("Car", .98, False)] * 3, [], cancelled=True),
        {**task(7, [("Car", .97, False)], []), "annotations": []},
    ]


def work_saved_by_hand(prelabels, thresholds):
    """+1 per right pre-label shown, -1 per wrong one: written out without any matching."""
    return {t: sum(1 if kept else -1 for _, s, kept in prelabels if s >= t) for t in thresholds}


def test_car_threshold_is_the_one_that_saves_most_work():
    grid = np.round(np.arange(0.3, 1.0001, 0.01), 2)
    saved = work_saved_by_hand(CAR, grid)
    best = max(saved.values())
    expected = max(t for t, v in saved.items() if v == best)  # the highest threshold among the best
    assert expected == 0.70 and best == 5  # the hand-built case has one best plateau, .66-.70

    learned = learn_thresholds(project_tasks(), "3", VERSION, {"Car": 0.3, "Person": 0.3, "Bike": 0.3},
                               min_reviewed_boxes=10)
    car = learned.labels["Car"]
    assert car.source == LEARNED
    assert car.threshold == pytest.approx(expected)
    assert (car.tp, car.fp) == (5, 0)
    assert car.work_saved == best
    # final Car boxes: 6 kept + 1 drawn in task 1 + 1 relabelled from a Person in task 4
    assert car.fn == 3 and car.recall == pytest.approx(5 / 8) and car.precision == 1.0
    # reviewed at the configured threshold: 11 pre-labels shown + 2 final boxes no Car pre-label matched
    assert car.reviewed_boxes == 13
    assert learned.reviewed_tasks == 4  # tasks 1-4
    assert learned.thresholds()["Car"] == pytest.approx(0.70)


def test_labels_with_little_evidence_keep_their_configured_threshold():
    learned = learn_thresholds(project_tasks(), "3", VERSION, {"Car": 0.3, "Person": 0.25, "Bike": 0.4},
                               min_reviewed_boxes=10)
    person, bike = learned.labels["Person"], learned.labels["Bike"]
    # Person: 3 pre-labels (one kept, one deleted, one relabelled) + 1 drawn = 4 reviewed boxes < 10
    assert (person.source, person.threshold, person.reviewed_boxes) == (TOO_FEW, 0.25, 4)
    assert (person.tp, person.fp, person.fn) == (1, 2, 1)
    # Bike: drawn twice, never pre-labelled: nothing says how a threshold would do
    assert (bike.source, bike.threshold, bike.reviewed_boxes) == (NO_PRELABELS, 0.4, 2)
    assert bike.precision is None and bike.recall == 0.0
    # With a lower bar Person is learned: its right pre-label scores .8, the wrong ones .9 and .6, so showing
    # the .8 one and the .9 one saves as much as showing none (0): the rule keeps the highest threshold on ties.
    learned = learn_thresholds(project_tasks(), "3", VERSION, {"Person": 0.25, "Car": 0.3}, min_reviewed_boxes=4)
    person = learned.labels["Person"]
    saved = work_saved_by_hand([("Person", .9, False), ("Person", .8, True), ("Person", .6, False)],
                               np.round(np.arange(0.25, 1.0001, 0.01), 2))
    assert max(saved.values()) == 0 and max(t for t, v in saved.items() if v == 0) == 1.0
    assert person.source == LEARNED and person.threshold == 1.0 and person.work_saved == 0
    assert (person.tp, person.fp, person.precision) == (0, 0, None)
    # Switched off, and said so in words: 3 shown at .25, 1 kept (the .8 one), 2 deleted.
    assert person.off and (person.shown, person.kept) == (3, 1)
    assert learned.warnings() == ["Person: pre-labels off — reviewers deleted 2 of 3 boxes, which costs more than "
                                  "the 1 kept ones save"]
    assert "Person: 1.00 (configured 0.25;" in learned.describe() and "— reviewers deleted 2 of 3" in learned.describe()
    assert learned.applied() == {"Person": 1.0, "Car": pytest.approx(0.70)}


def test_no_reviewed_task_keeps_everything_configured():
    learned = learn_thresholds(project_tasks(), "3", "another-version", {"Car": 0.35})
    assert learned.reviewed_tasks == 0
    assert learned.labels["Car"].source == NO_PRELABELS and learned.thresholds() == {"Car": 0.35}


def test_sdk_task_objects_are_read_like_dicts():
    class SdkTask:  # label-studio-sdk returns pydantic models
        def __init__(self, data):
            self.data = data

        def model_dump(self):
            return self.data

    learned = learn_thresholds([SdkTask(t) for t in project_tasks()], "3", VERSION, {"Car": 0.3},
                               min_reviewed_boxes=10)
    assert learned.labels["Car"].threshold == pytest.approx(0.70)


def test_saved_and_loaded_back_atomically(tmp_path):
    learned = learn_thresholds(project_tasks(), "3.1700000000", VERSION, {"Car": 0.3, "Bike": 0.4},
                               min_reviewed_boxes=10)
    store = ProjectStore(tmp_path / "state")
    path = store.save_thresholds(learned)
    assert path == tmp_path / "state" / "projects" / "3" / "thresholds.json"
    assert sorted(p.name for p in path.parent.iterdir()) == ["thresholds.json"]  # no temporary file left
    json.loads(path.read_text())  # plain JSON: no NaN
    assert "NaN" not in path.read_text()
    loaded = store.load_thresholds("3")
    assert loaded == learned and isinstance(loaded, LearnedThresholds)
    assert store.load_thresholds("4") is None


def test_unreadable_state_is_a_clear_error(tmp_path):
    store = ProjectStore(tmp_path)
    (tmp_path / "projects" / "5").mkdir(parents=True)
    (tmp_path / "projects" / "5" / "thresholds.json").write_text("{not json")
    with pytest.raises(StateError, match="thresholds.json .*delete it"):
        store.load_thresholds("5")
    with pytest.raises(StateError, match="not usable as a directory"):
        store.project_dir("../etc")


def all_deleted_tasks(n_boxes=1000, per_task=50):
    """Every Square pre-label deleted in review, nothing drawn: ``n_boxes`` over tasks of ``per_task``."""
    return [task(t, [("Square", 0.5 + 0.4 * k / per_task, False) for k in range(per_task)], [])
            for t in range(1, n_boxes // per_task + 1)]


def test_a_label_whose_boxes_were_all_deleted_is_switched_off_in_words():
    tasks = all_deleted_tasks() + [task(100 + t, CAR, []) for t in range(2)]  # Car: 12 right, 10 wrong
    learned = learn_thresholds(tasks, "3", VERSION, {"Square": 0.35, "Car": 0.3}, min_reviewed_boxes=10)
    square = learned.labels["Square"]
    assert (square.source, square.threshold, square.shown, square.kept, square.reviewed_boxes) == (
        LEARNED, 1.0, 1000, 0, 1000)
    assert square.off and not learned.labels["Car"].off
    assert learned.warnings() == ["Square: pre-labels off — reviewers deleted all 1,000 boxes"]
    assert learned.applied() == {"Square": 1.0, "Car": pytest.approx(0.70)}


def test_the_rule_never_switches_off_every_label_of_a_project():
    learned = learn_thresholds(all_deleted_tasks(), "3", VERSION, {"Square": 0.35}, min_reviewed_boxes=10)
    square = learned.labels["Square"]
    # kept at the configured threshold, with the evidence at it: 1,000 shown, none right
    assert (square.source, square.threshold, square.tp, square.fp) == (ALL_OFF, 0.35, 0, 1000)
    assert not square.off and learned.applied() == {}
    assert learned.warnings() == [
        "pre-labels kept on for every label at its configured threshold: the rule would switch off all of them "
        "(Square: reviewers deleted all 1,000 boxes), which would end pre-labelling for the project"]


def test_a_threshold_learned_earlier_is_kept_until_new_evidence_moves_it():
    """The predictions of a served model were made with its learned thresholds: they are the floor, and a
    label with too little new evidence keeps its earlier threshold (it does not fall back to configured)."""
    learned = learn_thresholds(project_tasks(), "3", VERSION, {"Car": 0.3, "Person": 0.25}, min_reviewed_boxes=10,
                               earlier={"Car": 0.6, "Person": 0.55})
    car, person = learned.labels["Car"], learned.labels["Person"]
    # Car at >= .6: right .9 .85 .8 .75 .7 (and .52 never shown), wrong .65 .6 -> best .66-.70: .70
    assert (car.source, car.threshold, car.configured, car.shown, car.kept) == (LEARNED, pytest.approx(0.70), 0.3, 7, 5)
    # Person at >= .55: 3 shown + 1 drawn = 4 reviewed boxes < 10: its earlier threshold stays, and applies
    assert (person.source, person.threshold, person.configured) == (EARLIER, 0.55, 0.25)
    assert learned.applied() == {"Car": pytest.approx(0.70), "Person": 0.55}


def test_heldout_thresholds_come_from_the_models_own_scores_and_may_go_below_the_configured_one():
    """A fine-tuned model whose right boxes all score .2-.3 (below the configured .35) gets a threshold that
    shows them; computed here by hand: +1 per right box, -1 per wrong one, highest threshold of the best."""
    gt = {"images": [{"id": i, "width": 100, "height": 100} for i in range(1, 11)],
          "categories": [{"id": 1, "name": "Car"}, {"id": 2, "name": "Bike"}],
          "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [10, 10, 20, 20], "iscrowd": 0,
                           "area": 400} for i in range(1, 11)]
          + [{"id": 100 + i, "image_id": i, "category_id": 1, "bbox": [60, 60, 20, 20], "iscrowd": 0, "area": 400}
             for i in range(1, 11)]}
    right = [{"image_id": i, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.2 + 0.01 * i} for i in range(1, 11)]
    wrong = [{"image_id": i, "category_id": 1, "bbox": [40, 10, 10, 10], "score": 0.05 + 0.01 * i} for i in range(1, 11)]
    learned = learn_heldout_thresholds(gt, right + wrong, "3", "/state/projects/3/models/ft-1",
                                       {"Car": 0.35, "Bike": 0.35}, min_boxes=20)
    grid = [t / 100 for t in range(1, 101)]
    scores = [(d["score"], d in right) for d in right + wrong]
    saved = {t: sum(1 if ok else -1 for s, ok in scores if s >= t - 1e-9) for t in grid}
    expected = max(t for t in grid if saved[t] == max(saved.values()))
    car = learned.labels["Car"]
    assert expected == 0.21 and car.threshold == pytest.approx(expected) and car.source == LEARNED
    assert (car.tp, car.fp, car.fn, car.reviewed_boxes) == (10, 0, 10, 20)  # evidence: the 20 true boxes
    assert learned.labels["Bike"].source == NO_PRELABELS and learned.labels["Bike"].threshold == 0.35
    assert (learned.evidence, learned.model, learned.reviewed_tasks) == (HELDOUT, "/state/projects/3/models/ft-1", 10)
    assert learned.applied() == {"Car": pytest.approx(0.21)}
