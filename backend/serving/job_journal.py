"""Background prediction jobs survive a restart: each job's unfinished tasks are kept in STATE_DIR.

    STATE_DIR/jobs/<project>-<hash of model_version>.json   one job: its project, model_version, label
                                                             config and the tasks not stored yet

The job manager rewrites a job's file (atomically, at most twice a second, and once more when it stops)
while the job has tasks queued, running or awaiting import, and deletes it when the job is finished.
At the next start every kept job is queued again (`resume_kept_jobs`); the importer asks Label Studio
which tasks hold a prediction of the version already, so a task stored just before the stop is not
stored twice.

Credentials: the key itself is never written. A file records which key stored the job's predictions
("LABEL_STUDIO_API_KEY" or "/setup"); at start the job uses LABEL_STUDIO_API_KEY when it is set, else it
waits (state "waiting", said on the status page) for the project's next /setup, which carries the
project's token again (Label Studio sends /setup whenever the project's model list loads and before every
Retrieve Predictions). A job that cannot be resumed (its project is now predicted with another
model_version, or its label config can no longer be used) is shown as dropped, with the reason and the
one click that finishes it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from labelstudio.target import LabelStudioTarget
from labelstudio.label_sets import LabelConfigError
from runtime.files import atomic_write
from runtime.json_encoding import encode_json_list

from .job_status import JobRow, JobState

log = logging.getLogger(__name__)
SHOWN_IDS = 8  # task ids named in a message (the rest counted)


@dataclass
class KeptJob:
    """What a job needs to be resumed, never a secret."""

    project: str
    model_version: str
    label_config: str
    hostname: str | None  # Label Studio's address from the project's /setup (media, and imports without LABEL_STUDIO_URL)
    key_source: str  # "LABEL_STUDIO_API_KEY" or "/setup": which key stored the job's predictions
    tasks: list  # {"id", "data"} of each task not stored yet
    started_at: float | None = None
    saved_at: float = field(default_factory=time.time)

    @classmethod
    def from_json(cls, text: str) -> "KeptJob":
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        job = cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        if not isinstance(job.tasks, list) or not all(isinstance(t, dict) for t in job.tasks):
            raise ValueError("'tasks' is not a list of tasks")
        if not job.project or not job.model_version or not job.label_config:
            raise ValueError("no project, model_version or label_config")
        return job


class JobJournal:
    """The files of the kept jobs; one writer per job (its manager's journal thread)."""

    def __init__(self, state_dir: str | Path):
        self.root = Path(state_dir) / "jobs"

    def path(self, project: str, version: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_-]", "_", str(project))[:40]
        return self.root / f"{safe}-{hashlib.sha256(version.encode()).hexdigest()[:16]}.json"

    def write(self, job: KeptJob) -> None:
        """A failure is logged (the job goes on in memory), never raised."""
        path = self.path(job.project, job.model_version)
        head = {k: v for k, v in asdict(job).items() if k != "tasks"}
        # tasks one by one: a large job is encoded without holding the interpreter for long
        text = json.dumps(head)[:-1] + ', "tasks": ' + encode_json_list(job.tasks).decode() + "}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write(path, text)
        except OSError as exc:
            log.error("project %s: could not keep the job's %d unfinished tasks in %s (%s); a restart would "
                      "lose them", job.project, len(job.tasks), path, exc)

    def remove(self, project: str, version: str) -> None:
        try:
            self.path(project, version).unlink(missing_ok=True)
        except OSError as exc:
            log.error("could not delete %s (%s)", self.path(project, version), exc)

    def load(self) -> tuple[list[KeptJob], list[str]]:
        """The kept jobs, and one line per file that could not be read (left in place, named)."""
        jobs, problems = [], []
        for path in sorted(self.root.glob("*.json")) if self.root.is_dir() else []:
            try:
                jobs.append(KeptJob.from_json(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError, UnicodeDecodeError) as exc:
                problems.append(f"the kept background job {path} could not be read ({exc}); its tasks were not "
                                "resumed: Retrieve Predictions on the tasks without a prediction finishes them, "
                                "then delete the file")
        return jobs, problems


def name_tasks(tasks: list) -> str:
    """`tasks 12, 13 and 14` / `tasks 12, 13, 14, … (22 in all)`: which tasks a message is about."""
    ids = [str(t.get("id")) for t in tasks if isinstance(t, dict)]
    if len(ids) == 1:
        return f"task {ids[0]}"
    if len(ids) <= SHOWN_IDS:
        return f"tasks {', '.join(ids[:-1])} and {ids[-1]}"
    return f"tasks {', '.join(ids[:SHOWN_IDS])}, … ({len(ids):,} in all)"


def dropped_row(job_id: str, kept: KeptJob, reason: str) -> JobRow:
    """The status row of a kept job that was not resumed."""
    n = len(kept.tasks)
    message = (f"Retrieve Predictions on {name_tasks(kept.tasks)} to pre-label them: {n:,} tasks queued before "
               f"the backend restarted were not resumed because {reason}")
    return JobRow(id=job_id, project=kept.project, model_version=kept.model_version, state=JobState.DROPPED,
                  total=n, done=0, failed=0, imported=0, answered=0, already_stored=0, dropped=n,
                  rate_per_s=None, eta_s=None, started_at=kept.started_at, finished_at=time.time(),
                  message=message, stores_in_background=False)


def resume_kept_jobs(journal: JobJournal, engines, state, target_for) -> list[str]:
    """Queue every kept job again on the model that serves its project now; blocking (may load a model).

    `target_for(access)` -> the complete LabelStudioTarget to store in, or None. Returns the problems to show (unreadable files)."""
    kept_jobs, problems = journal.load()
    for kept in kept_jobs:
        try:
            engine = engines.for_project(kept.project)
            plan = engine.predictor.plan(kept.label_config, None, engine.thresholds)
            reason = plan.error
            if reason is None and plan.version != kept.model_version:
                reason = (f"the project is now pre-labelled as {plan.version} (its label config, learned "
                          f"thresholds or model changed since)")
        except LabelConfigError as exc:
            engine, reason = engines.base, f"their label config can no longer be used ({exc})"
        except Exception as exc:  # a model that cannot be loaded, a bug: say so, keep the others going
            log.exception("project %s: the kept job could not be resumed", kept.project)
            engine, reason = engines.base, f"resuming failed ({type(exc).__name__}; see the backend's log)"
        if reason is not None:
            engine.jobs.report_dropped(kept, reason)
            log.warning("project %s: %d tasks kept from before the restart were not resumed: %s",
                        kept.project, len(kept.tasks), reason)
            journal.remove(kept.project, kept.model_version)
            continue
        record = state.project(kept.project)
        access = record.access if record is not None and record.access.key else LabelStudioTarget.from_setup(
            kept.hostname, None)
        engine.jobs.restore(kept, plan, access, target_for(access))
    return problems
