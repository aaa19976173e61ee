"""The browser tests' shared steps: headless Chromium logs in to the real Label Studio and opens a task."""
from __future__ import annotations

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def log_in(page, label_studio) -> None:
    """Label Studio's login form, as a user fills it; returns once Label Studio has left the login page."""
    page.goto(f"{label_studio.url}/user/login/")
    page.fill('input[name="email"]', label_studio.username)
    page.fill('input[name="password"]', label_studio.password)
    page.click('button[type="submit"]')
    page.wait_for_url(lambda url: "/user/login" not in url, timeout=60_000)


def open_task(page, label_studio, project, task, shot) -> list[str]:
    """The task's labelling view, screenshotted to `shot`; the region list's titles."""
    page.goto(f"{label_studio.url}/projects/{project}/data?task={task}")
    page.wait_for_selector(".lsf-outliner-item__title", timeout=90_000)
    page.wait_for_load_state("networkidle", timeout=30_000)
    page.wait_for_timeout(2000)  # the canvas draws the image and the regions after the list (no event to wait on)
    page.screenshot(path=str(shot))
    return [t.strip() for t in page.locator(".lsf-outliner-item__title").all_inner_texts()]
