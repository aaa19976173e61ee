"""The status page as a person sees it: headless Chromium (Debian's package) loads the page from a local
HTTP server, and the visible text shows a job's progress and a failed task's reason. No Label Studio is
needed (not `e2e`). The screenshot is kept in tests/artifacts/status-page.png (README:
docs/screenshots/status-page.png)."""
from __future__ import annotations

import pytest
from PIL import Image

from backend.app.status_page import render_status_page
from tests.backend.status_data import NOW, failure_entry, job_entry, project_entry, status_document
from tests.e2e.browser import chromium
from tests.e2e.ls_harness import ARTIFACTS

pytestmark = pytest.mark.slow

HOSTILE = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">"


def html_route(html: str):
    return lambda request: (200, {"Content-Type": "text/html; charset=utf-8"}, html.encode())


@pytest.fixture
def status_server(http_server):
    server = http_server
    server.routes["/"] = html_route(render_status_page(status_document(), now=NOW))
    hostile = status_document(
        projects=[project_entry(HOSTILE, skipped_labels=[HOSTILE],
                                label_studio={"url": "javascript:window.__pwned=3", "key_source": None,
                                              "check": None})],
        jobs=[job_entry(HOSTILE, message=HOSTILE)],
        failures=[failure_entry(HOSTILE, image="javascript:window.__pwned=4", reason=HOSTILE)])
    server.routes["/hostile"] = html_route(render_status_page(hostile, now=NOW))
    return server


@pytest.fixture
def browser():
    with chromium() as browser:
        yield browser


def test_status_page_shows_job_progress_and_failure_reasons(status_server, browser):
    page = browser.new_page(viewport={"width": 1360, "height": 900})
    page.goto(status_server.url + "/")
    running = page.locator('tr.job[data-job="job-3"]')
    assert running.locator(".progress-text").inner_text().split() == ["1,240", "/", "5,000", "25", "%"]
    assert running.locator("td.eta").inner_text() == "3 min 20 s"
    # the bar is drawn at the job's share: 1240/5000 of the track
    track = running.locator(".bar").bounding_box()["width"]
    fill = running.locator(".bar .fill").bounding_box()["width"]
    assert fill == pytest.approx(track * 1240 / 5000, abs=1)

    body = page.inner_text("body")
    assert "image is 96000000 pixels, more than MAX_IMAGE_PIXELS=89478485" in body
    assert "4711" in page.locator("tr.failure").first.inner_text()
    # the failed key check is in the banner, naming the variable to fix
    assert "set LABEL_STUDIO_API_KEY to a valid access token" in page.locator(".warnings").inner_text()
    # at a laptop's width every table fits its panel: no column (the jobs' Message last) hides behind a scroll
    overflowing = page.eval_on_selector_all(
        ".scroll", "els => els.filter(e => e.scrollWidth > e.clientWidth).map(e => e.closest('section').id)")
    assert overflowing == []

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "status-page.png"
    page.screenshot(path=str(shot), full_page=True)
    # a palette PNG: the README copy stays small (flat colours and text lose nothing visible)
    Image.open(shot).convert("RGB").quantize(colors=64, method=Image.Quantize.FASTOCTREE).save(shot, optimize=True)
    assert 10_000 < shot.stat().st_size < 150_000


def test_user_strings_are_text_not_markup(status_server, browser):
    page = browser.new_page()
    page.goto(status_server.url + "/hostile")
    for selector in ("td.message", "td.reason", "tr.job code"):
        assert page.locator(selector).first.inner_text() == HOSTILE
    assert page.evaluate("window.__pwned") is None
    assert page.locator("script").count() == 0 and page.locator("img").count() == 0
    # a javascript: URL is shown, never a link
    assert page.locator('a[href^="javascript:"]').count() == 0
    page.get_by_text("javascript:window.__pwned=3").click()
    assert page.evaluate("window.__pwned") is None
