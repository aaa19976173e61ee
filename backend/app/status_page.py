"""The status page for people: one server-rendered HTML page from the status document of `GET /status`.

No JavaScript and no build step: the server answers `GET /` from a browser with
`render_status_page(status)`, and the page reloads itself every few seconds. Every string in the
document may come from a user (labels, URLs, reasons, messages), so each one is HTML-escaped, and only
absolute http(s) URLs become links.

The document is `backend.app.status.StatusDocument` (built by `build_status`); a dict (a document read
back as JSON) is validated into it first.

Times are epoch seconds; they are shown in UTC and relative to `now`.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from html import escape

from backend.progress_text import format_duration, format_rate
from backend.serving.job_status import JobRow, JobState
from labelstudio.urls import shorten_url, split_url

from .status import StatusDocument, StatusDocumentError  # noqa: F401  (the error is part of this API)

REFRESH_SECONDS = 5

# --- formatting: times, URLs (durations and rates: backend.progress_text) -----------------------------------

def format_ago(then: float | None, now: float) -> str:
    if then is None:
        return "—"
    delta = now - then
    if abs(delta) < 1:
        return "just now"
    return f"{format_duration(delta)} ago" if delta > 0 else f"in {format_duration(-delta)}"


def format_utc(then: float | None) -> str:
    if then is None:
        return "—"
    return datetime.fromtimestamp(then, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _link(url: str | None, shown: str | None = None) -> str:
    """An escaped URL, a link only when it is absolute http(s) (never javascript: or the like)."""
    if not url:
        return '<span class="muted">—</span>'
    text = escape(shown if shown is not None else url)
    tooltip = escape(url if not url.startswith("data:") else shorten_url(url))
    parts = split_url(url)
    if parts is not None and parts.scheme in ("http", "https"):
        return f'<a href="{escape(url)}" title="{tooltip}" rel="noreferrer">{text}</a>'
    return f'<span title="{tooltip}">{text}</span>'


def _when(then: float | None, now: float) -> str:
    if then is None:
        return '<span class="muted">—</span>'
    return f'<span class="when" title="{escape(format_utc(then))}">{escape(format_ago(then, now))}</span>'


def _badge(text: str, kind: str) -> str:
    return f'<span class="badge {kind}">{escape(text)}</span>'


def _table(headers: tuple[str, ...], rows: list[str], css: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return (f'<div class="scroll"><table class="{css}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _section(title: str, count: int | None, body: str, anchor: str) -> str:
    counter = f' <span class="count">{count}</span>' if count is not None else ""
    return f'<section id="{anchor}"><h2>{escape(title)}{counter}</h2>{body}</section>'


def _empty(text: str) -> str:
    return f'<p class="empty">{escape(text)}</p>'


# --- sections ------------------------------------------------------------------------------------------------

def _header(status: StatusDocument, now: float) -> str:
    model, server = status.model, status.server
    facts = [
        ("device", model.device), ("dtype", model.dtype),
        ("uptime", format_duration(now - server.started_at)),
        ("predict deadline", format_duration(server.predict_deadline_s)),
        ("ML_TIMEOUT_PREDICT", format_duration(server.ml_timeout_predict_s)),
        ("pending /predict", f'{server.pending_predicts:,}'),
        ("version", server.version),
    ]
    fact_html = "".join(f'<div class="fact"><span>{escape(k)}</span><b>{escape(str(v))}</b></div>'
                        for k, v in facts)
    levers = "".join(f'<span class="chip">{escape(str(k))}: {escape(str(v))}</span>'
                     for k, v in model.levers.items())
    return (f'<header><div class="title"><h1>{escape(model.name)}</h1>'
            f'<span class="muted path" title="model path">{escape(model.path)}</span></div>'
            f'<div class="facts">{fact_html}</div>'
            f'{f"<div class=chips>{levers}</div>" if levers else ""}'
            f'<div class="muted small">started {escape(format_utc(server.started_at))}</div></header>')


def _project_names(status: StatusDocument) -> dict[str, str]:
    """project id -> `"Title" (12)` where Label Studio told the project's title (else the id alone)."""
    return {str(p.project): json.dumps(p.title, ensure_ascii=False) + f' ({p.project})'
            for p in status.projects if p.title}


def _project_name(names: dict[str, str], project) -> str:
    return names.get(str(project), str(project))


def _warnings(status: StatusDocument) -> str:
    items = [escape(str(w)) for w in status.model.warnings]
    names = _project_names(status)
    for project in status.projects:
        check = project.label_studio.check
        if check is not None and not check.ok:
            items.append(f'<b>Project {escape(_project_name(names, project.project))}</b>: Label Studio key check failed: '
                         f'{escape(check.message)}')
        elif check is not None and check.status == "legacy":
            items.append(f'<b>Project {escape(str(project.project))}</b>: Label Studio key: '
                         f'{escape(check.message)}')
    for job in status.jobs:
        if job.state in (JobState.FAILED, JobState.WAITING, JobState.DROPPED) and job.message:
            items.append(f'<b>Job {escape(str(job.id))}</b> (project {escape(_project_name(names, job.project))}) '
                         f'is {escape(str(job.state))}: {escape(job.message)}')
    if not items:
        return ""
    return '<div class="warnings" role="alert"><ul>' + "".join(f"<li>{i}</li>" for i in items) + "</ul></div>"


def _projects(status: StatusDocument, now: float) -> str:
    rows = []
    for p in status.projects:
        ls = p.label_studio
        check = ls.check
        if check is None:
            check_html = '<span class="muted">not checked</span>'
        else:
            state, tone = (("legacy token", "warn") if check.status == "legacy" else
                           ("ok", "ok") if check.ok else ("failed", "bad"))
            check_html = (_badge(state, tone)
                          + f' {escape(check.message)} <span class="muted">{_when(check.checked_at, now)}</span>')
        versions = "<br>".join(f"<code>{escape(v)}</code>" for v in p.model_versions) or '<span class="muted">—</span>'
        # quoted, so a blank or padded label is visible as such
        skipped = (" ".join(f'<code class="label">{escape(json.dumps(s, ensure_ascii=False))}</code>'
                            for s in p.skipped_labels)
                   or '<span class="muted">none</span>')
        source = escape(ls.key_source) if ls.key_source else '<span class="muted">no key</span>'
        # what Start Training taught this project: the model and each label's threshold with its evidence
        learned = "<br>".join(escape(line) for line in p.learned) or '<span class="muted">—</span>'
        name = (f'<b>{escape(p.title)}</b> <span class="muted">id {escape(str(p.project))}</span>'
                if p.title else escape(str(p.project)))
        rows.append(f'<tr><td class="project">{name}</td>'
                    f'<td>{versions}</td>'
                    f'<td class="url">{_link(ls.url)}</td><td>{source}</td><td>{check_html}</td>'
                    f'<td>{skipped}</td><td>{learned}</td><td>{_when(p.last_setup_at, now)}</td></tr>')
    body = (_table(("Project", "Versions served", "Label Studio", "Key source", "Key check",
                    "Skipped labels", "Learned", "Last /setup"), rows)
            if rows else _empty("No projects yet: connect the model in a Label Studio project (Settings → Model)."))
    return _section("Projects", len(rows), body, "projects")


def _progress(job: JobRow) -> str:
    total, done = job.total, job.done
    share = min(1.0, done / total) if total > 0 else 0.0
    failed_share = min(share, job.failed / total) if total > 0 else 0.0
    return (f'<div class="bar {escape(str(job.state))}" role="progressbar" aria-valuemin="0" aria-valuemax="{total}" '
            f'aria-valuenow="{done}"><div class="fill" style="width:{share * 100:.1f}%"></div>'
            f'<div class="fail" style="width:{failed_share * 100:.1f}%"></div></div>'
            f'<div class="progress-text"><b class="done">{done:,} / {total:,}</b> '
            f'<span class="muted">{share * 100:.0f} %</span></div>')


STATE_BADGE = {"running": "run", "queued": "muted", "waiting": "warn", "done": "ok", "failed": "bad",
               "cancelled": "muted", "dropped": "warn"}


def _jobs(status: StatusDocument, now: float) -> str:
    def order(job: JobRow):  # running and waiting work first, then the most recent
        return (not job.state.active, -(job.started_at or job.finished_at or now))

    rows = []
    names = _project_names(status)
    for job in sorted(status.jobs, key=order):
        # answered in the /predict answer itself, and imported later in the background: "imported 0" alone
        # reads as a failure on a job whose tasks were all answered directly
        answered = job.answered
        answered_html = f"{answered:,}" if isinstance(answered, int) else '<span class="muted">—</span>'
        failed = f'<span class="bad-text">{job.failed:,}</span>' if job.failed else "0"
        ended = (_when(job.finished_at, now) if job.finished_at is not None
                 else '<span class="muted">—</span>')
        message = escape(job.message) if job.message else ""
        rows.append(
            f'<tr class="job" data-job="{escape(str(job.id))}"><td><code>{escape(str(job.id))}</code></td>'
            f'<td class="project">{escape(_project_name(names, job.project))}</td>'
            f'<td class="version">{_version(job.model_version)}</td>'
            f'<td>{_badge(str(job.state), STATE_BADGE.get(job.state, "muted"))}</td>'
            f'<td class="progress">{_progress(job)}</td><td class="num answered">{answered_html}</td>'
            f'<td class="num imported">{job.imported:,}</td>'
            f'<td class="num failed">{failed}</td><td class="num">{escape(format_rate(job.rate_per_s, job.unit))}</td>'
            f'<td class="num eta">{escape(format_duration(job.eta_s) if job.state.active else "—")}</td>'
            f'<td>{_when(job.started_at, now)}</td><td>{ended}</td><td class="message">{message}</td></tr>')
    body = (_table(("Job", "Project", "Model version", "State", "Progress", "Answered", "Imported", "Failed",
                    "Rate", "ETA", "Started", "Finished", "Message"), rows)
            if rows else _empty("No jobs yet: Retrieve Predictions on more tasks than fit in one answer starts one."))
    active = sum(job.state.active for job in status.jobs)
    return _section(f"Jobs ({active} active)" if rows else "Jobs", len(rows), body, "jobs")


def _version(version: str) -> str:
    """A job's model version; a training run has none until it has produced one."""
    return f"<code>{escape(version)}</code>" if version else '<span class="muted">—</span>'


def _failures(status: StatusDocument, now: float) -> str:
    rows = []
    names = _project_names(status)
    for f in sorted(status.failures, key=lambda f: -f.at):
        task = escape(str(f.task)) if f.task is not None else '<span class="muted">—</span>'
        image = _link(f.image, shorten_url(f.image) if f.image else None)
        rows.append(f'<tr class="failure"><td class="time">{_when(f.at, now)}'
                    f'<div class="muted small">{escape(format_utc(f.at))}</div></td>'
                    f'<td class="project">{escape(_project_name(names, f.project))}</td><td class="num task">{task}</td>'
                    f'<td class="image">{image}</td><td class="reason">{escape(f.reason)}</td></tr>')
    body = (_table(("When", "Project", "Task", "Image", "Reason"), rows, "failures")
            if rows else _empty("No failed tasks."))
    return _section("Last failed tasks", len(rows), body, "failures")


def _devices(status: StatusDocument) -> str:
    rows = [f'<tr><td><code>{escape(d.name)}</code></td>'
            f'<td>{_badge("busy", "run") if d.busy else _badge("idle", "muted")}</td>'
            f'<td class="num">{d.done:,}</td></tr>' for d in status.devices]
    body = _table(("Device", "State", "Tasks done"), rows, "compact") if rows else _empty("No devices reported.")
    return _section("Devices", len(rows), body, "devices")


# --- the page ------------------------------------------------------------------------------------------------

# Neutral greys that work in both colour schemes; colour only where it means something (state, failure).
CSS = """
:root{color-scheme:light dark;--bg:#f6f7f9;--panel:#fff;--fg:#1d2127;--muted:#6b7280;--line:#e3e6ea;
--accent:#2563eb;--ok:#15803d;--bad:#b91c1c;--warn:#a16207;--bar:#e5e7eb;--warnbg:#fff7e6;--warnline:#f0c36d}
@media (prefers-color-scheme:dark){:root{--bg:#14161a;--panel:#1c1f24;--fg:#e6e8eb;--muted:#9aa2ad;
--line:#2c3038;--accent:#60a5fa;--ok:#4ade80;--bad:#f87171;--warn:#fbbf24;--bar:#2c3038;--warnbg:#2a2212;
--warnline:#7a5a14}}
*{box-sizing:border-box}
body{margin:0;padding:16px 20px;background:var(--bg);color:var(--fg);
font:13px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif}
h1{font-size:18px;margin:0}h2{font-size:14px;margin:0 0 8px;letter-spacing:.02em}
code{font:12px/1.3 ui-monospace,"SFMono-Regular",Menlo,Consolas,monospace;white-space:nowrap}
code.label{white-space:pre;background:var(--bar);border-radius:3px;padding:0 3px}
td.url,.when{white-space:nowrap}table.compact{width:auto;min-width:420px}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
header,section{background:var(--panel);border:1px solid var(--line);border-radius:8px;padding:12px 14px;
margin-bottom:12px}
.title{display:flex;gap:12px;align-items:baseline;flex-wrap:wrap}
.facts{display:flex;flex-wrap:wrap;gap:6px 22px;margin:8px 0 6px}
.fact span{color:var(--muted);margin-right:6px}.chips{display:flex;flex-wrap:wrap;gap:6px;margin:4px 0}
.chip{border:1px solid var(--line);border-radius:10px;padding:0 8px;font-size:12px;color:var(--muted)}
.muted{color:var(--muted)}.small{font-size:11px}.path{font-size:12px;overflow-wrap:anywhere}
.count{color:var(--muted);font-weight:normal;margin-left:4px}
.warnings{background:var(--warnbg);border:1px solid var(--warnline);border-left:4px solid var(--warn);
border-radius:8px;padding:8px 14px;margin-bottom:12px}
.warnings ul{margin:0;padding-left:18px}.warnings li{margin:2px 0;overflow-wrap:anywhere}
table{width:100%;border-collapse:collapse}
th{text-align:left;font-weight:600;color:var(--muted);font-size:12px;border-bottom:1px solid var(--line);
padding:4px 8px;white-space:nowrap}
td{padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top}
tbody tr:last-child td{border-bottom:none}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.project{max-width:220px;overflow-wrap:anywhere}
td.progress{min-width:170px}td.message,td.reason{overflow-wrap:break-word;min-width:180px;max-width:420px}
td.version code{white-space:normal;overflow-wrap:anywhere}
.scroll{overflow-x:auto}
td.image{max-width:320px;overflow-wrap:anywhere}td.time{white-space:nowrap}
.bar{position:relative;height:8px;border-radius:4px;background:var(--bar);overflow:hidden;margin:4px 0 3px}
.bar .fill{position:absolute;inset:0 auto 0 0;background:var(--accent)}
.bar.done .fill{background:var(--ok)}.bar.failed .fill,.bar.cancelled .fill{background:var(--muted)}
.bar.waiting .fill{background:var(--warn)}
.bar .fail{position:absolute;inset:0 auto 0 0;background:var(--bad)}
.progress-text{font-variant-numeric:tabular-nums;white-space:nowrap}
.badge{display:inline-block;border-radius:9px;padding:0 8px;font-size:11px;font-weight:600;
border:1px solid currentColor;white-space:nowrap}
.badge.ok{color:var(--ok)}.badge.bad{color:var(--bad)}.badge.warn{color:var(--warn)}
.badge.run{color:var(--accent)}.badge.muted{color:var(--muted)}
.bad-text{color:var(--bad);font-weight:600}
.empty{color:var(--muted);margin:2px 0;font-style:italic}
footer{color:var(--muted);font-size:11px;margin-top:4px}
"""


def render_status_page(status: StatusDocument | dict, *, now: float | None = None) -> str:
    """The whole HTML page for a status document (a dict is validated first: StatusDocumentError names
    what is wrong); `now` (epoch seconds) is for the relative times."""
    if not isinstance(status, StatusDocument):
        status = StatusDocument.from_json(status)
    now = time.time() if now is None else now
    title = f"{status.model.name} · status"
    body = "".join((
        _header(status, now), _warnings(status), _projects(status, now), _jobs(status, now),
        _failures(status, now), _devices(status),
    ))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>{body}"
        f'<footer>Generated {escape(format_utc(now))} · reloads every {REFRESH_SECONDS} s · '
        'the same data as JSON: <a href="/status">/status</a></footer></body></html>\n'
    )
