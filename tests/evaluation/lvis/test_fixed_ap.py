"""Fixed AP's per-category budget and the packed per-image record."""
from __future__ import annotations

import numpy as np
import torch

from detection import Detections
from evaluation.lvis import fixed_ap


def test_record_round_trip_is_exact():
    dets = Detections(torch.tensor([0.9, 0.25, 1 / 3]), torch.tensor([1202, 0, 7]),
                      torch.tensor([[0.5, 1.25, 10.0, 20.0], [0, 0, 1, 1], [3.3, 4.4, 5.5, 6.6]]))
    labels, scores, boxes = fixed_ap.decode(fixed_ap.encode(dets))
    assert labels.tolist() == [1202, 0, 7]
    np.testing.assert_array_equal(scores, dets.scores.numpy())
    np.testing.assert_array_equal(boxes, dets.boxes.numpy())
    empty = fixed_ap.decode(fixed_ap.encode(Detections.empty()))
    assert [len(a) for a in empty] == [0, 0, 0]


def test_top_k_per_category_equals_a_stable_sort_of_everything():
    rng = np.random.default_rng(0)
    budget = fixed_ap.TopKPerCategory(k=7, prune_at=25)  # prunes many times on the way
    rows = []
    for order in range(30):
        n = int(rng.integers(0, 6))
        cats = rng.integers(1, 4, n)
        scores = np.round(rng.random(n), 1)  # many ties
        boxes = rng.random((n, 4))
        budget.add(order, cats, scores, np.full(n, 1000 + order), boxes)
        rows += [(c, s, order, k, b) for k, (c, s, b) in enumerate(zip(cats, scores, boxes))]
    # reference: per category, a stable sort by score of the detections in the order they were added
    expected = []
    for cat in (1, 2, 3):
        mine = [r for r in rows if r[0] == cat]
        expected += sorted(mine, key=lambda r: -r[1])[:7]
    got = budget.result()
    assert got.category_id.tolist() == [r[0] for r in expected]
    assert got.score.tolist() == [r[1] for r in expected]
    assert got.image_id.tolist() == [1000 + r[2] for r in expected]
    np.testing.assert_array_equal(got.bbox, np.array([r[4] for r in expected]))
