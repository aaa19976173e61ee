"""The LVIS rules on COCOeval (evaluation.lvis.scoring) on hand-built cases with known answers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.coco.scoring import coco_gt, score
from evaluation.lvis.scoring import DetectionArrays, LvisEvaluator, top_per_image
from tests.evaluation.lvis.ground_truth import lvis_gt

BALL, LIGHT, DRIER = 1, 2, 3
A_BOX, B_BOX, C_BOX = [10, 10, 40, 40], [100, 100, 60, 30], [20, 120, 20, 20]


def det(image_id, category_id, box, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": list(map(float, box)), "score": score}


def evaluate(gt, dets, max_dets=None, image_ids=None):
    metrics, _ = LvisEvaluator(gt, image_ids).evaluate(DetectionArrays.from_results(dets), max_dets)
    return metrics


BOXES = [(1, BALL, A_BOX), (1, LIGHT, B_BOX), (2, DRIER, C_BOX), (3, BALL, B_BOX)]


def test_ground_truth_as_detections_scores_1_in_every_group():
    gt = lvis_gt(BOXES, {1: {}, 2: {}, 3: {}})
    m = evaluate(gt, [det(i, c, b, 1.0) for i, c, b in BOXES])
    for name in ("AP", "AP50", "AP75", "APr", "APc", "APf", "AR", "APs", "APm"):
        assert m[name] == pytest.approx(1.0, abs=1e-12), name
    assert m["APl"] == -1.0  # 20² small; 40², 60x30 medium; no large


def _ball_ap(images, extra):
    """AP of `ball` with its two boxes found exactly (scores .9, .8) and `extra` detections ranked above."""
    gt = lvis_gt([(1, BALL, A_BOX), (3, BALL, B_BOX), (1, LIGHT, B_BOX)], images)
    dets = [det(1, BALL, A_BOX, 0.9), det(3, BALL, B_BOX, 0.8), det(1, LIGHT, B_BOX, 1.0)] + extra
    return evaluate(gt, dets)["APf"]


def test_an_unmatched_detection_of_a_not_exhaustive_category_is_ignored():
    far = [det(1, BALL, [150, 10, 20, 20], 0.95)]  # nothing there, ranked first
    assert _ball_ap({1: {"not_exhaustive": [BALL]}, 2: {}, 3: {}}, far) == pytest.approx(1.0)
    # the same image exhaustively annotated: a false positive ranked first -> precision 1/2 and 2/3 up to
    # recall 1/2 and 1: the envelope is 2/3 at every recall point
    assert _ball_ap({1: {}, 2: {}, 3: {}}, far) == pytest.approx(2 / 3)


def test_a_detection_on_a_negative_image_is_a_false_positive_elsewhere_it_is_dropped():
    on_2 = [det(2, BALL, [10, 10, 40, 40], 0.95)]  # image 2 has no ball
    assert _ball_ap({1: {}, 2: {"neg": [BALL]}, 3: {}}, on_2) == pytest.approx(2 / 3)
    assert _ball_ap({1: {}, 2: {}, 3: {}}, on_2) == pytest.approx(1.0)  # neither annotated nor negative: not evaluated
    zero_area = [det(2, BALL, [10, 10, 0, 40], 0.95)]  # the lvis API keeps areas > 0 only
    assert _ball_ap({1: {}, 2: {"neg": [BALL]}, 3: {}}, zero_area) == pytest.approx(1.0)


def test_a_not_exhaustive_category_still_counts_its_matches_and_misses():
    gt = lvis_gt([(1, BALL, A_BOX), (1, BALL, B_BOX)], {1: {"not_exhaustive": [BALL]}})
    m = evaluate(gt, [det(1, BALL, A_BOX, 0.9)])
    assert m["APf"] == pytest.approx(51 / 101)  # recall 1/2 at precision 1: 51 of 101 recall points
    assert m["AR"] == 0.5


def test_frequency_groups_average_their_own_categories():
    gt = lvis_gt(BOXES, {1: {}, 2: {"neg": [BALL]}, 3: {}})
    dets = [det(i, c, b, 0.9) for i, c, b in BOXES] + [det(2, BALL, A_BOX, 0.95)]  # ball: FP first
    m = evaluate(gt, dets)
    assert m["APf"] == pytest.approx(2 / 3) and m["APc"] == pytest.approx(1.0) and m["APr"] == pytest.approx(1.0)
    assert m["AP"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    per_class = pd.DataFrame(LvisEvaluator(gt).per_class(LvisEvaluator(gt).evaluate(
        DetectionArrays.from_results(dets), None)[1])).set_index("name")
    assert per_class.loc["ball_(sports)", "AP"] == pytest.approx(2 / 3) and per_class.loc["ball_(sports)", "num_gt"] == 2
    assert per_class["frequency"].tolist() == ["f", "c", "r"]


def test_the_per_image_cap_applies_across_categories_before_evaluation():
    gt = lvis_gt([(1, BALL, A_BOX)], {1: {"neg": [LIGHT, DRIER]}})
    dets = [det(1, LIGHT, [0, 150, 10, 10], 0.9), det(1, DRIER, [150, 0, 10, 10], 0.8), det(1, BALL, A_BOX, 0.7)]
    assert evaluate(gt, dets, max_dets=2)["APf"] == 0.0  # the ball detection is the third: cut
    assert evaluate(gt, dets, max_dets=3)["APf"] == pytest.approx(1.0)
    assert evaluate(gt, dets, max_dets=None)["APf"] == pytest.approx(1.0)
    kept = top_per_image(DetectionArrays.from_results(dets + [det(2, BALL, A_BOX, 0.1)]), 2)
    assert kept.score.tolist() == [0.9, 0.8, 0.1]


def test_equals_cocoeval_when_every_absent_category_is_a_negative():
    """With exhaustive labels everywhere, the LVIS rules reduce to COCO's: same AP as pycocotools."""
    rng = np.random.default_rng(1)
    boxes, dets = [], []
    for im in range(1, 13):
        for _ in range(rng.integers(0, 5)):
            boxes.append((im, int(rng.integers(1, 4)), [*rng.uniform(0, 150, 2), *rng.uniform(5, 60, 2)]))
        for _, c, b in [x for x in boxes if x[0] == im]:
            for _ in range(rng.integers(0, 3)):
                j = np.abs(np.array(b) + rng.normal(0, 5, 4))
                dets.append(det(im, c if rng.random() < 0.8 else int(rng.integers(1, 4)), j, float(rng.random())))
        dets.append(det(im, int(rng.integers(1, 4)), [*rng.uniform(0, 150, 2), 15, 15], float(rng.random())))
    images = {im: {"neg": [c for c in (1, 2, 3) if not any(b[0] == im and b[1] == c for b in boxes)]}
              for im in range(1, 13)}
    gt = lvis_gt(boxes, images)
    lvis = evaluate(gt, dets)
    coco_data = {**gt, "annotations": [dict(a, iscrowd=0) for a in gt["annotations"]]}
    coco, _, _ = score(coco_gt(coco_data), dets, range(1, 13))
    for name in ("AP", "AP50", "AP75", "APs", "APm"):
        assert lvis[name] == pytest.approx(coco[name], abs=1e-12), name
    assert 0.1 < lvis["AP"] < 0.9  # neither trivial nor perfect
