"""Seen in a real browser: headless Chromium (Debian's package) logs in to the real Label Studio, opens a
task that holds our predictions and checks what the labelling view shows. The screenshot is kept in
tests/artifacts/labelstudio-predictions.png (README: docs/screenshots/labelstudio-predictions.png)."""
from __future__ import annotations

from collections import Counter

import pytest

from tests.e2e.browser import CHROMIUM_ARGS, log_in, open_task
from tests.e2e.ls_harness import ARTIFACTS, chromium_path
from tests.e2e.ls_user import LABEL_CONFIG, predictions_of

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# The labelling UI names a region by the Label's value; the stored prediction carries the alias.
SHOWN_AS = {"RC": "Remote"}


def test_labelling_view_shows_the_predicted_boxes(prelabelled_project, ls_api, label_studio):
    chromium = chromium_path()
    if chromium is None:
        pytest.fail("Debian's chromium is missing: `make install-chromium` (as root) installs /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    assert 'alias="RC"' in LABEL_CONFIG
    # the task with the fewest boxes (but some): its whole region list fits on screen
    candidates = []
    for task in prelabelled_project["tasks"]:
        pred = predictions_of(ls_api, task)[0]
        if pred["result"]:
            candidates.append((len(pred["result"]), task, pred))
    assert candidates, "no task has predicted boxes"
    _, task, pred = min(candidates, key=lambda c: c[:2])
    expected = Counter(SHOWN_AS.get(r["value"]["rectanglelabels"][0], r["value"]["rectanglelabels"][0])
                       for r in pred["result"])
    expected_scores = sorted(f"{r['score']:.2f}" for r in pred["result"])

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "labelstudio-predictions.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            log_in(page, label_studio)
            titles = open_task(page, label_studio, prelabelled_project["project"], task, shot)
            scores = sorted(s.strip() for s in page.locator(".lsf-outliner-item__control_type_score").all_inner_texts())
            body = page.inner_text("body")
        finally:
            browser.close()

    assert shot.stat().st_size > 10_000
    # the region list is exactly the stored prediction: same labels, same count, same scores
    assert Counter(titles) == expected, (titles, expected)
    assert scores == expected_scores
    # the predictions tab names our model version (Label Studio shortens it to its last characters)
    assert pred["model_version"][-6:] in body
