"""The browser tests' shared steps: headless Chromium (Debian's package) started once per use, logging in to
the real Label Studio, opening a task once its canvas shows the image and every region."""
from __future__ import annotations

from collections import Counter
from contextlib import contextmanager

import pytest

from tests.e2e.ls_harness import chromium_path

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

# The labelling UI names a region by the Label's value; the stored prediction carries the alias.
SHOWN_AS = {"RC": "Remote"}

# Label Studio's editor (window.Htx) knows when the task is drawn: each image tag has its <img> loaded and
# is ready (brush masks decoded), its Konva stage holds the picture (a Konva Image right under a layer; a
# brush mask's sits in a group), and every region of the shown annotation has its shape on a stage.
CANVAS_DRAWN = """() => {
  const annotation = window.Htx && window.Htx.annotationStore && window.Htx.annotationStore.selected;
  if (!annotation) return false;
  const images = annotation.objects.filter((tag) => tag.type === "image");
  const pictured = (tag) => !!tag.stageRef && tag.stageRef.getLayers().some(
    (layer) => layer.getChildren().some((node) => node.getClassName() === "Image" && !!node.image()));
  return images.length > 0 && images.every((tag) => tag.imageIsLoaded && tag.isReady && pictured(tag))
    && annotation.regions.length > 0
    && annotation.regions.every((region) => !!region.shapeRef && !!region.shapeRef.getStage());
}"""
# Konva paints on the animation frame after a change: two frames later the pixels are on screen.
NEXT_PAINT = "() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))"


@contextmanager
def chromium():
    """A headless Chromium browser (Playwright on Debian's binary), closed on leaving."""
    path = chromium_path()
    if path is None:
        pytest.fail("Debian's chromium is missing: `make install-chromium` (as root) installs /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def log_in(page, label_studio) -> None:
    """Label Studio's login form, as a user fills it; returns once Label Studio has left the login page."""
    page.goto(f"{label_studio.url}/user/login/")
    page.fill('input[name="email"]', label_studio.username)
    page.fill('input[name="password"]', label_studio.password)
    page.click('button[type="submit"]')
    page.wait_for_url(lambda url: "/user/login" not in url, timeout=60_000)


def open_task(page, label_studio, project, task, shot) -> list[str]:
    """The task's labelling view, screenshotted to `shot` once the canvas shows it; the region list's titles."""
    page.goto(f"{label_studio.url}/projects/{project}/data?task={task}")
    page.wait_for_selector(".lsf-outliner-item__title", timeout=90_000)
    page.wait_for_load_state("networkidle", timeout=30_000)
    page.wait_for_function(CANVAS_DRAWN, timeout=60_000)
    page.evaluate(NEXT_PAINT)
    page.screenshot(path=str(shot))
    return [t.strip() for t in page.locator(".lsf-outliner-item__title").all_inner_texts()]


def labelling_view(label_studio, project, task, shot, height: int = 1400) -> tuple[list[str], str, list[str]]:
    """Log in with headless Chromium, open the task, screenshot it. The region list's titles, the page's
    text and the region list's scores (the window is `height` pixels tall: the list shows what fits)."""
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": height})
        log_in(page, label_studio)
        titles = open_task(page, label_studio, project, task, shot)
        scores = page.locator(".lsf-outliner-item__control_type_score").all_inner_texts()
        return titles, page.inner_text("body"), [s.strip() for s in scores]


def shown_titles(result: list[dict], kind: str) -> Counter:
    """The region list's titles that a prediction's `result` of `kind` (rectanglelabels, ...) shows."""
    return Counter(SHOWN_AS.get(r["value"][kind][0], r["value"][kind][0]) for r in result)
