"""Seen in a real browser: headless Chromium (Debian's package) logs in to the real Label Studio, opens a
task that holds our predictions and checks what the labelling view shows. The screenshot is kept in
tests/artifacts/labelstudio-predictions.png (README: docs/screenshots/labelstudio-predictions.png)."""
from __future__ import annotations

from collections import Counter

import pytest

from tests.e2e.browser import labelling_view, shown_titles
from tests.e2e.ls_harness import ARTIFACTS
from tests.e2e.ls_user import LABEL_CONFIG, predictions_of

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_labelling_view_shows_the_predicted_boxes(prelabelled_project, ls_api, label_studio):
    assert 'alias="RC"' in LABEL_CONFIG
    # the task with the fewest boxes (but some): its whole region list fits on screen
    candidates = []
    for task in prelabelled_project["tasks"]:
        pred = predictions_of(ls_api, task)[0]
        if pred["result"]:
            candidates.append((len(pred["result"]), task, pred))
    assert candidates, "no task has predicted boxes"
    _, task, pred = min(candidates, key=lambda c: c[:2])
    expected = shown_titles(pred["result"], "rectanglelabels")
    expected_scores = sorted(f"{r['score']:.2f}" for r in pred["result"])

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "labelstudio-predictions.png"
    titles, body, scores = labelling_view(label_studio, prelabelled_project["project"], task, shot)

    assert shot.stat().st_size > 10_000
    # the region list is exactly the stored prediction: same labels, same count, same scores
    assert Counter(titles) == expected, (titles, expected)
    assert sorted(scores) == expected_scores
    # the predictions tab names our model version (Label Studio shortens it to its last characters)
    assert pred["model_version"][-6:] in body
