"""Status documents for the status page tests: the shape `GET /status` serves, with realistic values.

`status_document()` is a full document (a running job, finished ones, failures, a project whose key
check failed); the `*_entry` builders make one item with overridable fields, for documents built per test.
"""
from __future__ import annotations

# Fixed clock: every time in the documents is relative to NOW, so "12 s ago" is exact in assertions.
NOW = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC


def model_section(**fields) -> dict:
    base = {"name": "grounding-dino-tiny", "path": "/models/IDEA-Research/grounding-dino-tiny",
            "device": "cuda:0", "dtype": "float16",
            "levers": {"BATCH_SIZE": "8", "TEXT_CACHE": "on", "ATTENTION": "sdpa"}, "warnings": []}
    return {**base, **fields}


def server_section(**fields) -> dict:
    base = {"started_at": NOW - 3 * 3600 - 25 * 60, "predict_deadline_s": 85.0, "ml_timeout_predict_s": 100.0,
            "pending_predicts": 1, "version": "0.1.0"}
    return {**base, **fields}


def project_entry(project: str = "12", **fields) -> dict:
    base = {"project": project, "model_versions": ["grounding-dino-tiny-3f9a21c0"],
            "label_studio": {"url": "http://label-studio:8080", "key_source": "LABEL_STUDIO_API_KEY",
                             "check": {"ok": True, "message": "Label Studio answered as user admin@example.com",
                                       "checked_at": NOW - 40}},
            "skipped_labels": [], "last_setup_at": NOW - 42}
    return {**base, **fields}


def job_entry(job_id: str = "job-1", **fields) -> dict:
    base = {"id": job_id, "project": "12", "model_version": "grounding-dino-tiny-3f9a21c0", "state": "running",
            "total": 5000, "done": 1240, "failed": 3, "imported": 1230, "answered": 7, "rate_per_s": 18.8, "eta_s": 200.0,
            "started_at": NOW - 66, "finished_at": None, "message": None}
    return {**base, **fields}


def failure_entry(task=4711, **fields) -> dict:
    base = {"at": NOW - 12, "project": "12", "task": task,
            "image": "http://label-studio:8080/data/upload/12/8c1e2f0a-very-long-file-name-of-a-camera-roll-"
                     "image-0042.jpg",
            "reason": "image is 96000000 pixels, more than MAX_IMAGE_PIXELS=89478485"}
    return {**base, **fields}


def device_entry(name: str = "cuda:0", **fields) -> dict:
    return {**{"name": name, "busy": True, "done": 1240}, **fields}


def status_document(**sections) -> dict:
    """A lively document (what a team sees mid-job); pass `jobs=[]` etc. to replace a section."""
    base = {
        "model": model_section(),
        "server": server_section(),
        "projects": [
            project_entry("12", skipped_labels=["   ", "Ünïcödé?"]),
            project_entry("31", model_versions=["grounding-dino-tiny-3f9a21c0", "grounding-dino-tiny-77b0d2e4"],
                          label_studio={"url": "https://ls.example.org", "key_source": "/setup",
                                        "check": {"ok": False, "checked_at": NOW - 300,
                                                  "message": "Label Studio answered 401 Unauthorized: "
                                                             "set LABEL_STUDIO_API_KEY to a valid access token"}},
                          last_setup_at=NOW - 301),
        ],
        "jobs": [
            job_entry("job-3"),
            job_entry("job-2", project="31", state="waiting", total=800, done=400, failed=0, imported=0,
                      rate_per_s=None, eta_s=None, started_at=NOW - 320,
                      message="cannot import into Label Studio (401): set LABEL_STUDIO_API_KEY"),
            job_entry("job-1", state="done", total=120, done=120, failed=2, imported=118, rate_per_s=0.4,
                      eta_s=None, started_at=NOW - 3600, finished_at=NOW - 3300),
        ],
        "failures": [
            failure_entry(4711),
            failure_entry(4702, at=NOW - 95, image="data:image/png;base64," + "iVBORw0KGgo" * 200,
                          reason="cannot decode the image: not a PNG, JPEG, WebP, GIF, BMP or TIFF file"),
            failure_entry(88, at=NOW - 3400, project="31", image="/data/local-files/?d=images/missing.jpg",
                          reason="HTTP 404 from Label Studio for /data/local-files/?d=images/missing.jpg"),
        ],
        "devices": [device_entry("cuda:0"), device_entry("cuda:1", busy=False, done=980)],
    }
    base.update(sections)
    return base
