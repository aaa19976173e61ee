"""The status page's HTML, parsed (lxml): the numbers a person reads, escaping of user strings, empty states."""
from __future__ import annotations

import json

import lxml.html
import pytest

from backend.app.status_page import StatusDocumentError, format_ago, render_status_page
from backend.progress_text import format_duration, format_rate
from labelstudio.urls import shorten_url
from tests.backend.status_data import NOW, failure_entry, job_entry, model_section, project_entry, status_document

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>&amp;\"'"


def parse(status: dict):
    return lxml.html.fromstring(render_status_page(status, now=NOW))


def text(element) -> str:
    """The visible words of an element, one space between any two (as a browser lays out cells)."""
    return " ".join(" ".join(element.itertext()).split())


def cells(row) -> list[str]:
    return [text(td) for td in row.xpath("./td")]


def test_running_job_shows_its_progress_rate_and_eta():
    page = parse(status_document())
    row = page.xpath('//tr[@data-job="job-3"]')[0]
    (job, project, version, state, progress, answered, imported, failed, rate, eta, started, finished,
     message) = cells(row)
    assert (job, project, version, state) == ("job-3", "12", "grounding-dino-tiny-3f9a21c0", "running")
    assert progress == "1,240 / 5,000 25 %"
    assert (answered, imported, failed, rate, eta) == ("7", "1,230", "3", "18.8 tasks/s", "3 min 20 s")
    assert (started, finished, message) == ("1 min 6 s ago", "—", "")
    # the bar: done share and failed share of the total, 1240/5000 and 3/5000
    assert row.xpath('.//div[@class="fill"]/@style') == ["width:24.8%"]
    assert row.xpath('.//div[@class="fail"]/@style') == ["width:0.1%"]
    assert row.xpath('.//div[@role="progressbar"]/@aria-valuenow') == ["1240"]


def test_jobs_list_active_work_first_then_the_most_recent():
    finished_late = job_entry("late", state="done", started_at=NOW - 100, finished_at=NOW - 50)
    finished_early = job_entry("early", state="failed", started_at=NOW - 900, finished_at=NOW - 800,
                               message="Label Studio unreachable at http://ls:8080")
    queued = job_entry("queued", state="queued", started_at=None, done=0)
    page = parse(status_document(jobs=[finished_early, finished_late, queued]))
    assert page.xpath("//tr[@data-job]/@data-job") == ["queued", "late", "early"]
    assert text(page.xpath('//section[@id="jobs"]/h2')[0]) == "Jobs (1 active) 3"
    # a finished job has no ETA; a failed one's message reaches the banner
    assert cells(page.xpath('//tr[@data-job="late"]')[0])[9] == "—"
    assert "Job early (project 12) is failed: Label Studio unreachable at http://ls:8080" in page.xpath(
        '//div[@class="warnings"]')[0].text_content()


def test_job_without_tasks_has_an_empty_bar():
    row = parse(status_document(jobs=[job_entry(total=0, done=0, failed=0)])).xpath("//tr[@data-job]")[0]
    assert cells(row)[4] == "0 / 0 0 %"
    assert row.xpath('.//div[@class="fill"]/@style') == ["width:0.0%"]


def test_failed_tasks_show_newest_first_with_id_image_and_reason():
    page = parse(status_document())
    rows = page.xpath('//tr[@class="failure"]')
    assert [cells(r)[2] for r in rows] == ["4711", "4702", "88"]
    when, project, task, image, reason = cells(rows[0])
    assert rows[0].xpath('./td[@class="time"]/span/text()') == ["12 s ago"]
    assert rows[0].xpath('./td[@class="time"]/div/text()') == ["2025-12-31 23:59:48 UTC"]
    assert (project, task) == ("12", "4711")
    assert reason == "image is 96000000 pixels, more than MAX_IMAGE_PIXELS=89478485"
    link = rows[0].xpath(".//a")[0]
    assert link.get("href") == failure_entry()["image"]
    assert image == "label-studio:8080/…a-camera-roll-image-0042.jpg"
    # a data: URI is summarised, never dumped into the page
    assert cells(rows[1])[3] == "data:image/png;base64,… (2,222 chars)"
    assert "iVBORw0KGgo" * 3 not in render_status_page(status_document(), now=NOW)
    # a task without id (the request failed as a whole) still shows its reason
    page = parse(status_document(failures=[failure_entry(None, image=None, reason="Label Studio timed out")]))
    assert cells(page.xpath('//tr[@class="failure"]')[0])[2:] == ["—", "—", "Label Studio timed out"]


def test_header_and_projects():
    page = parse(status_document())
    header = text(page.xpath("//header")[0])
    for fact in ("grounding-dino-tiny", "device cuda:0", "dtype float16", "uptime 3 h 25 min",
                 "ML_TIMEOUT_PREDICT 1 min 40 s", "BATCH_SIZE: 8", "started 2025-12-31 20:35:00 UTC"):
        assert fact in header
    rows = page.xpath('//section[@id="projects"]//tbody/tr')
    assert cells(rows[0]) == ["12", "grounding-dino-tiny-3f9a21c0", "http://label-studio:8080",
                              "LABEL_STUDIO_API_KEY", "ok Label Studio answered as user admin@example.com 40 s ago",
                              '" " "Ünïcödé?"', "—", "42 s ago"]
    # skipped labels are quoted, so a blank one is visible as such
    assert rows[0].xpath('.//code[@class="label"]/text()') == ['"   "', '"Ünïcödé?"']
    assert rows[1].xpath("./td[2]/code/text()") == ["grounding-dino-tiny-3f9a21c0", "grounding-dino-tiny-77b0d2e4"]
    assert cells(rows[1])[3:6] == ["/setup", "failed Label Studio answered 401 Unauthorized: set LABEL_STUDIO_API_KEY "
                                   "to a valid access token 5 min ago", "none"]
    no_key = project_entry(label_studio={"url": None, "key_source": None, "check": None})
    assert cells(parse(status_document(projects=[no_key])).xpath('//section[@id="projects"]//tbody/tr')[0])[2:5] == [
        "—", "no key", "not checked"]


def test_banner_lists_model_warnings_and_failed_key_checks_only():
    page = parse(status_document(model=model_section(warnings=["float16 on a CPU is slow: set DTYPE=float32"]),
                                 jobs=[]))
    items = [" ".join(li.text_content().split()) for li in page.xpath('//div[@class="warnings"]//li')]
    assert items == ["float16 on a CPU is slow: set DTYPE=float32",
                     "Project 31: Label Studio key check failed: Label Studio answered 401 Unauthorized: "
                     "set LABEL_STUDIO_API_KEY to a valid access token"]
    healthy = status_document(projects=[project_entry()], jobs=[job_entry()])
    assert parse(healthy).xpath('//div[@class="warnings"]') == []


def test_a_legacy_token_is_a_warning_with_the_fix_first():
    message = ("Set LABEL_STUDIO_API_KEY to a personal access token (Label Studio → Account & Settings → Personal "
               "Access Token): Label Studio at http://label-studio:8080 accepts LABEL_STUDIO_API_KEY (user "
               "ann@example.com), but it is a legacy token, refused as soon as Legacy Tokens are off for the "
               "organization (Organization → API Tokens Settings; off in a new Label Studio 1.23 organization)")
    legacy = project_entry("7", label_studio={"url": "http://label-studio:8080", "key_source": "LABEL_STUDIO_API_KEY",
                                              "check": {"ok": True, "status": "legacy", "message": message,
                                                        "checked_at": NOW - 40}})
    page = parse(status_document(projects=[legacy], jobs=[]))
    row = page.xpath('//section[@id="projects"]//tbody/tr')[0]
    assert row.xpath('./td[5]/span[contains(@class, "badge")]/@class') == ["badge warn"]
    assert cells(row)[4] == f"legacy token {message} 40 s ago"
    banner = [" ".join(li.text_content().split()) for li in page.xpath('//div[@class="warnings"]//li')]
    assert banner == [f"Project 7: Label Studio key: {message}"]


def test_empty_document_says_so():
    page = parse(status_document(projects=[], jobs=[], failures=[], devices=[]))
    empties = [text(p) for p in page.xpath('//p[@class="empty"]')]
    assert [e.split(":")[0] for e in empties] == ["No projects yet", "No jobs yet", "No failed tasks.",
                                                  "No devices reported."]
    assert page.xpath("//table") == []


def test_every_user_string_is_text_not_markup():
    status = status_document(
        model=model_section(name=HOSTILE, path=HOSTILE, levers={HOSTILE: HOSTILE}, warnings=[HOSTILE]),
        projects=[project_entry(HOSTILE, model_versions=[HOSTILE], skipped_labels=[HOSTILE],
                                label_studio={"url": "javascript:alert(3)", "key_source": HOSTILE,
                                              "check": {"ok": False, "message": HOSTILE, "checked_at": NOW}})],
        jobs=[job_entry(HOSTILE, project=HOSTILE, model_version=HOSTILE, state="failed", message=HOSTILE)],
        failures=[failure_entry(HOSTILE, project=HOSTILE, image="javascript:alert(4)", reason=HOSTILE),
                  failure_entry(1, image='https://x.test/a.jpg?"><script>alert(5)</script>')],
    )
    html = render_status_page(status, now=NOW)
    assert "<script" not in html.lower() and "<img" not in html.lower()
    page = lxml.html.fromstring(html)
    assert page.xpath("//script | //img | //*[@onerror]") == []
    assert page.xpath('//a[starts-with(@href, "javascript:")]') == []
    assert page.xpath("//title/text()") == [f"{HOSTILE} · status"]
    # each field shows the string exactly as the user typed it
    for xpath in ("//h1", '//tr[@class="failure"]/td[@class="reason"]', '//td[@class="message"]',
                  '//div[@class="warnings"]//li'):
        assert page.xpath(xpath)[0].text_content() == HOSTILE
    assert page.xpath('//code[@class="label"]/text()') == [json.dumps(HOSTILE, ensure_ascii=False)]
    assert page.xpath('//tr[@class="failure"]//a/@href') == ['https://x.test/a.jpg?"><script>alert(5)</script>']


def test_an_unparsable_image_url_is_shown_as_text():
    page = parse(status_document(failures=[failure_entry(image="http://[::1/a.jpg")]))
    image = page.xpath('//tr[@class="failure"]/td[@class="image"]')[0]
    assert (text(image), image.xpath(".//a")) == ("http://[::1/a.jpg", [])


@pytest.mark.parametrize("seconds, shown", [
    (200, "3 min 20 s"), (45, "45 s"), (60, "1 min"), (3600, "1 h"), (3725, "1 h 2 min"),
    (90_061, "1 d 1 h"), (0.3, "< 1 s"), (59.6, "1 min"), (None, "—"),
])
def test_durations_read_like_a_person_writes_them(seconds, shown):
    assert format_duration(seconds) == shown


def test_relative_times_and_rates():
    assert format_ago(NOW - 12, NOW) == "12 s ago"
    assert format_ago(NOW + 5, NOW) == "in 5 s"  # a producer clock slightly ahead
    assert format_ago(NOW - 0.2, NOW) == "just now"
    assert (format_rate(18.84), format_rate(0.25), format_rate(None)) == ("18.8 tasks/s", "15.0 tasks/min", "—")


@pytest.mark.parametrize("url, shown", [
    ("http://ls:8080/data/upload/1/a.jpg", "http://ls:8080/data/upload/1/a.jpg"),
    ("s3://bucket/some/very/long/path/that/goes/on/and/on/image.jpg?X-Amz-Signature=abcdef0123",
     "bucket/…/image.jpg?…"),
    ("/data/local-files/?d=images/some/deeply/nested/folder/of/the/team/missing.jpg",
     "/data/…lder/of/the/team/missing.jpg"),  # the last 28 characters (half the limit)
    ("http://[::1/" + "x" * 80, "http://[::1/" + "x" * 43 + "…"),  # urlsplit refuses it: cut, not parsed
])
def test_long_urls_keep_host_and_file_name(url, shown):
    assert shorten_url(url) == shown


@pytest.mark.parametrize("status, message", [
    ([], "the status document must be a JSON object, got list"),
    ({k: v for k, v in status_document().items() if k != "devices"}, "the status document lacks the section 'devices'"),
    (status_document(jobs=[{k: v for k, v in job_entry().items() if k != "eta_s"}]), "jobs[0] lacks 'eta_s'"),
    (status_document(projects=[project_entry(label_studio={"url": None})]), "projects[0].label_studio lacks 'key_source'"),
    (status_document(failures={}), "'failures' must be a list, got dict"),
])
def test_a_malformed_document_is_named_precisely(status, message):
    with pytest.raises(StatusDocumentError) as caught:
        render_status_page(status, now=NOW)
    assert message in str(caught.value)


def test_page_reloads_itself_and_links_the_json():
    page = parse(status_document())
    assert page.xpath('//meta[@http-equiv="refresh"]/@content') == ["5"]
    assert page.xpath("//footer//a/@href") == ["/status"]


def test_a_job_answered_directly_shows_answered_next_to_imported_0():
    """"Imported 0" alone reads as a failure when every task went back in the /predict answer itself."""
    direct = job_entry("direct", state="done", total=3, done=3, failed=0, imported=0, answered=3,
                       finished_at=NOW - 5)
    header = [text(th) for th in parse(status_document(jobs=[direct])).xpath('//section[@id="jobs"]//th')]
    row = parse(status_document(jobs=[direct])).xpath('//tr[@data-job="direct"]')[0]
    assert header[5:7] == ["Answered", "Imported"]
    assert cells(row)[5:7] == ["3", "0"]
    # a row without the field (e.g. a training run) shows a dash, not a made-up number
    training = {k: v for k, v in job_entry("train").items() if k != "answered"}
    assert cells(parse(status_document(jobs=[training])).xpath('//tr[@data-job="train"]')[0])[5] == "—"


def test_projects_are_named_by_their_title_where_label_studio_told_it():
    titled = project_entry("31", title="Street <signs>")
    page = parse(status_document(projects=[titled, project_entry("12")],
                                 jobs=[job_entry("job-31", project="31", state="waiting", message="wait"),
                                       job_entry("job-12")],
                                 failures=[failure_entry(5, project="31")]))
    projects = page.xpath('//section[@id="projects"]//tbody/tr')
    assert [cells(r)[0] for r in projects] == ["Street <signs> id 31", "12"]
    assert cells(page.xpath('//tr[@data-job="job-31"]')[0])[1] == '"Street <signs>" (31)'
    assert cells(page.xpath('//tr[@data-job="job-12"]')[0])[1] == "12", "no title known: the id"
    assert cells(page.xpath('//tr[@class="failure"]')[0])[1] == '"Street <signs>" (31)'
    assert 'Job job-31 (project "Street <signs>" (31)) is waiting: wait' in text(
        page.xpath('//div[@class="warnings"]')[0])
    assert "<signs>" not in render_status_page(status_document(projects=[titled]), now=NOW), "escaped"


def test_a_dropped_job_is_in_the_banner_with_its_reason():
    dropped = job_entry("job-9", state="dropped", total=22, done=0, failed=0, imported=0, answered=0,
                        rate_per_s=None, eta_s=None, finished_at=NOW - 1,
                        message="Retrieve Predictions on tasks 1, 2 to pre-label them: not resumed because x")
    page = parse(status_document(jobs=[dropped]))
    assert cells(page.xpath('//tr[@data-job="job-9"]')[0])[3] == "dropped"
    assert ("Job job-9 (project 12) is dropped: Retrieve Predictions on tasks 1, 2 to pre-label them: not resumed "
            "because x") in text(page.xpath('//div[@class="warnings"]')[0])
