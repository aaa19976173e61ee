"""What the job manager does about restarts: jobs kept in STATE_DIR are queued again (`restore`), wait for
their project's key, or are reported dropped; each job's unfinished tasks are written to the journal.

A mixin of `jobs.JobManager` (it works under the manager's lock, on its jobs), kept apart so that the
manager's own file reads as the request/worker/import path; `job_journal.py` has the files themselves.
"""
from __future__ import annotations

import logging
import time

from labelstudio.target import LabelStudioTarget

from .job_journal import JobJournal, KeptJob, dropped_row, name_tasks
from .job_status import JobState
from .job_types import PredictionJob
from .work import PredictionPlan

log = logging.getLogger("backend.serving.jobs")
NO_TARGET = ("set LABEL_STUDIO_API_KEY (and LABEL_STUDIO_URL) so that the backend can store in Label Studio "
             "the tasks that do not fit in one answer; the next Retrieve Predictions continues with them")
JOURNAL_INTERVAL_S = 0.5  # a job's file is rewritten at most this often while it changes


class KeptJobs:
    """Restart handling of JobManager: needs its `_cond`, `_jobs`, `_ids`, `_stopped`, `_unsaved`, `_reports`,
    `journal` and `submit`."""

    journal: JobJournal | None

    def restore(self, kept: KeptJob, plan: PredictionPlan, access: LabelStudioTarget,
                target: LabelStudioTarget | None) -> None:
        """Queue a job kept from before a restart; without a key it waits for the project's /setup."""
        with self._cond:  # (re-entrant) no worker takes a task, no journal write happens, before it is set up
            entries = self.submit(kept.project, plan, access, target, kept.tasks, None, kept.label_config)
            queued = sum(e is not None for e in entries)
            job = self._jobs.get((kept.project, plan.version))
            if job is None or not queued:
                return
            job.key_source = job.key_source or kept.key_source
            if job.target is None:  # (a click since the start may have brought a key already)
                job.state = JobState.WAITING
                job.message = (f"open the project in Label Studio (or set LABEL_STUDIO_API_KEY) to finish "
                               f"{name_tasks(kept.tasks)}: kept from before the restart, they wait for the "
                               "project's key, which Label Studio sends with its next /setup")
            else:
                job.message = f"resumed after a restart: {queued:,} tasks queued before it"
            log.info("project %s: %s", kept.project, job.message)
            self._unsaved.add(job)
            self._cond.notify_all()

    def provide_target(self, project: str, access: LabelStudioTarget, target: LabelStudioTarget | None) -> None:
        """The project's /setup brought Label Studio's key: its waiting jobs go on."""
        if target is None:
            return
        with self._cond:
            for job in self._jobs.values():
                if job.project == project and job.state == JobState.WAITING:
                    job.access, job.target, job.key_source = access, target, target.key_source
                    self._release_waiting(job)
            self._cond.notify_all()

    def _release_waiting(self, job: PredictionJob) -> None:
        if job.target is not None:
            job.state = JobState.QUEUED
            job.message = f"resumed after a restart: {len(job.queue):,} tasks queued before it"
            return
        # a click without any key: nothing can be stored in the background, so the kept tasks are given up
        # (said, and counted); the click's own tasks are predicted for its answer as usual
        for entry in list(job.queue):
            job.registry.pop(entry.key, None)
        job.dropped += len(job.queue)
        job.message = (f"{len(job.queue):,} tasks kept from before the restart were given up: {NO_TARGET}")
        job.queue.clear()
        job.state = JobState.QUEUED

    def report_dropped(self, kept: KeptJob, reason: str) -> None:
        with self._cond:
            self._reports.appendleft(dropped_row(f"job-{next(self._ids)}", kept, reason))

    def _journal_loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and not self._unsaved:
                    self._cond.wait()
                if self._stopped:
                    return  # stop() writes the last state itself
            self.save_journal()
            calm = time.monotonic() + JOURNAL_INTERVAL_S  # at most a write per job and interval
            with self._cond:
                while not self._stopped and time.monotonic() < calm:
                    self._cond.wait(max(0.0, calm - time.monotonic()))

    def save_journal(self) -> None:
        """Write (or delete) the file of every job that changed since the last write."""
        if self.journal is None:
            return
        with self._cond:
            changed = [(job, self._kept(job)) for job in self._unsaved]
            self._unsaved.clear()
        for job, kept in changed:
            if kept is None:
                self.journal.remove(job.project, job.version)
            else:
                self.journal.write(kept)

    def _kept(self, job: PredictionJob) -> KeptJob | None:
        """What a restart needs of the job (under the lock): None when nothing of it is left to store.

        Only the tasks left to the import: those a request still waits for go back in its answer (on
        SIGTERM the server lets the request answer before it stops the jobs), so a request answered in
        full never touches the disk."""
        tasks = [{"id": e.work.task_id, "data": e.work.task.get("data")} for e in job.registry.values()
                 if e.waiter is None and isinstance(e.work.task_id, (int, str)) and isinstance(e.work.task, dict)]
        # (key_source: a key stored or will store the job's predictions; without any, nothing resumes)
        if not tasks or not job.label_config or job.key_source is None:
            return None
        return KeptJob(job.project, job.version, job.label_config, job.access.url,
                       job.key_source or "LABEL_STUDIO_API_KEY", tasks, job.started_at)
