"""Background prediction jobs: what does not fit in one `/predict` answer is finished and imported later.

Label Studio sends every selected task in ONE `/predict` and gives up after ML_TIMEOUT_PREDICT seconds.
Each request's tasks join the job of its (project, model_version); one worker thread per device runs
batches through that device's model (downloads of the next batch overlap the model's work on the current
one), tasks whose request is still waiting first. The request answers before Label Studio's deadline with
what is finished; the rest stays in the job and is imported through Label Studio's API when done
(`ls_import`).

No task is predicted or stored twice: a task queued, running or awaiting import for the same project and
version is not queued again (a second click, a retry), and the import skips tasks that got a prediction
of this version meanwhile (another process, an interactive request).

A restart loses nothing silently: with a journal (`job_journal.py`) every job's unfinished tasks are kept
in STATE_DIR and queued again at the next start (`restore`), or reported as dropped with the reason
(`job_restore.py`; the job's objects are in `job_types.py`).
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor, wait

from labelstudio.importer import PredictionImporter, PredictionImportError
from labelstudio.target import LabelStudioTarget

from .devices import DeviceSlot, PredictorPool
from .items import PredictionItem
from .job_journal import JobJournal
from .job_restore import NO_TARGET, KeptJobs
from .job_status import JobRow, JobState
from .job_types import PredictionJob, RequestWaiter, TaskEntry  # noqa: F401  (RequestWaiter: the server's)
from .predictor import DOWNLOAD_WORKERS, Predictor
from .work import PredictionPlan, TaskWork

log = logging.getLogger(__name__)
IMPORT_CHUNK = 100
HISTORY = 20
STORED_MEMORY = 100_000  # stored task ids remembered per project and version
# How long a stored task is not predicted again: covers Label Studio's choosing a click's tasks before our
# import landed (seconds), yet a user who deletes predictions to redo them gets them on a later click.
STORED_TTL_S = 300.0


class JobManager(KeptJobs):
    def __init__(self, predictor: Predictor, on_failure=None, import_timeout: float = 60.0, importer_factory=None,
                 on_success=None, journal: JobJournal | None = None):
        self.predictor = predictor
        self.on_success = on_success or (lambda job, entry: None)
        # (url, api_key, project id, timeout) -> an object with import_items(items, version) -> ImportOutcome
        self.importer_factory = importer_factory or PredictionImporter.connect
        self.on_failure = on_failure or (lambda job, entry, reason: None)
        self.import_timeout = import_timeout
        self._cond = threading.Condition(threading.RLock())
        self._jobs: dict[tuple[str, str], PredictionJob] = {}
        self._history: deque[PredictionJob] = deque(maxlen=HISTORY)
        self._ids = itertools.count(1)
        self._private_keys = itertools.count(1)
        # Tasks this backend stored in Label Studio, per (project, version): Label Studio may still send
        # them (it chose the tasks of a click before our import landed); they must not be predicted again.
        self._stored: dict[tuple[str, str], dict] = {}
        self._importers: dict = {}
        self._stopped = False
        self._threads: list[threading.Thread] = []
        self.journal: JobJournal | None = journal
        self._unsaved: set[PredictionJob] = set()  # jobs whose kept file is out of date
        self._reports: deque[dict] = deque(maxlen=HISTORY)  # kept jobs that could not be resumed

    # ----- life -------------------------------------------------------------------------------

    def start(self) -> None:
        """One worker thread per device (all pulling batches from the same queues), one importer."""
        self.devices = PredictorPool.around(self.predictor)
        workers = [(self._work_loop, (slot,), f"prediction-jobs-{slot.name}") for slot in self.devices.slots]
        workers.append((self._import_loop, (), "prediction-imports"))
        if self.journal is not None:
            workers.append((self._journal_loop, (), "prediction-journal"))
        for target, args, name in workers:
            thread = threading.Thread(target=target, args=args, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, wait_s: float = 5.0) -> None:
        """Queued work stops; the batch in the model may finish (up to `wait_s`). With a journal the
        unfinished tasks are kept for the next start; without, nothing of them was stored, so the next
        click redoes them."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        deadline = time.monotonic() + wait_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            self._unsaved.update(self._jobs.values())
            for job in self._jobs.values():
                kept = self._kept(job)
                job.state, job.finished_at = JobState.CANCELLED, time.time()
                if kept is not None:
                    job.message = (f"the backend stopped; its {len(kept.tasks):,} unfinished tasks are kept in "
                                   "STATE_DIR and resume at the next start")
                else:
                    job.dropped += len(job.queue) + len(job.to_import)
                    job.message = "the backend was stopped; the next Retrieve Predictions redoes the rest"
        self.save_journal()
        with self._cond:
            for job in self._jobs.values():
                job.queue.clear()
                job.to_import.clear()

    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    # ----- requests ---------------------------------------------------------------------------

    def submit(self, project: str, plan: PredictionPlan, access: LabelStudioTarget, target: LabelStudioTarget | None,
               tasks: list[dict], waiter: RequestWaiter | None, label_config: str | None = None) -> list[TaskEntry | None]:
        """Queue a request's tasks (`waiter` None: delivered by import); None for a task already queued,
        running or awaiting import."""
        with self._cond:
            job = self._jobs.get((project, plan.version))
            if job is None:
                job = PredictionJob(f"job-{next(self._ids)}", project, plan, access, target)
                self._jobs[(project, plan.version)] = job
            else:
                # The newest request's credentials win; a click after a failed import tries again.
                job.access, job.target, job.import_error = access, target or job.target, None
                if job.state == JobState.WAITING:
                    self._release_waiting(job)
            job.label_config = label_config or job.label_config
            job.key_source = job.target.key_source if job.target else job.key_source
            self._unsaved.add(job)
            entries: list[TaskEntry | None] = []
            for index, task in enumerate(tasks):
                task_id = task.get("id") if isinstance(task, dict) else None
                key = task_id if isinstance(task_id, (int, str)) and task_id != "" else f"#{next(self._private_keys)}"
                if key in job.registry or self._recently_stored(project, plan.version, key):
                    entries.append(None)
                    continue
                entry = TaskEntry(job, TaskWork(index, task), key, waiter)
                job.registry[key] = entry
                job.queue.append(entry)
                job.total += 1
                entries.append(entry)
            if job.queue and job.state not in (JobState.RUNNING,):
                job.state = JobState.QUEUED
            self._cond.notify_all()
            return entries

    def _recently_stored(self, project: str, version: str, key) -> bool:
        stored_at = self._stored.get((project, version), {}).get(key)
        return stored_at is not None and time.monotonic() - stored_at < STORED_TTL_S

    def detach(self, job_entries: list[TaskEntry | None], version: str, disconnected: bool) -> list:
        """The request answers now: one item per task. Finished tasks go into the answer (or, when the
        client has gone, to the import); the others stay in the job and are imported when done."""
        items: list = []
        with self._cond:
            for entry in job_entries:
                if entry is None:
                    items.append([])  # being predicted for an earlier request: nothing to store now
                    continue
                job = entry.job
                entry.waiter = None
                if entry.done and not disconnected:
                    items.append(entry.item.as_json())
                    job.registry.pop(entry.key, None)
                    job.answered += entry.item.ok
                    continue
                items.append([])
                if entry.done:
                    self._finished_for_import(job, entry)
                elif job.target is None or job.import_error:
                    self._drop(job, entry, job.import_error or NO_TARGET)
            for job in {id(e.job): e.job for e in job_entries if e is not None}.values():
                self._settle(job)
            self._cond.notify_all()
        return items

    def status(self) -> list[JobRow]:
        with self._cond:
            jobs = list(self._jobs.values()) + [j for j in self._history if j not in self._jobs.values()]
            rows = [j.snapshot() for j in sorted(jobs, key=lambda j: -(j.started_at or time.time()))]
            return rows + list(self._reports)

    def busy(self) -> bool:
        with self._cond:
            return any(j.queue or j.to_import for j in self._jobs.values())

    # ----- the worker: batches through the model, the next batch's downloads overlapping ----------

    def _work_loop(self, device: DeviceSlot) -> None:
        downloads = ThreadPoolExecutor(max_workers=DOWNLOAD_WORKERS, thread_name_prefix=f"media-{device.name}")
        upcoming = None
        while True:
            current = upcoming or self._take_batch(downloads, device, block=True)
            if current is None:
                downloads.shutdown(wait=False, cancel_futures=True)
                return
            upcoming = self._take_batch(downloads, device, block=False)  # its images load while the model runs
            job, entries, futures = current
            wait(futures)
            try:
                with device.working(len(entries)) as predictor:
                    items = predictor.run(job.plan, [e.work for e in entries], urgent=False)
            except Exception as exc:  # never let the worker die
                log.exception("job %s: a batch failed on %s", job.id, device.name)
                reason = (f"the model failed on this task: Retrieve Predictions again, and see the backend's log "
                          f"if it happens again (inference failed: {type(exc).__name__})")
                items = [PredictionItem.failed(job.version, reason) for _ in entries]
            self._finish(job, entries, items)

    def _take_batch(self, downloads: ThreadPoolExecutor, device: DeviceSlot, block: bool):
        with self._cond:
            while True:
                if self._stopped:
                    return None
                job = self._next_job()
                if job is not None:
                    break
                if not block:
                    return None
                self._cond.wait()
            size = device.predictor.batch_size
            entries = [job.queue.popleft() for _ in range(min(size, len(job.queue)))]
            if job.started_at is None:
                job.started_at = time.time()
            job.state = JobState.RUNNING
        futures = [downloads.submit(device.predictor.load, job.plan, e.work, job.access) for e in entries]
        return job, entries, futures

    def _next_job(self) -> PredictionJob | None:
        """Tasks a request is waiting for first (oldest request first), then background work in turn."""
        live = [j for j in self._jobs.values() if j.queue and j.state != JobState.WAITING]
        if not live:
            return None
        waited = [j for j in live if j.queue[0].waiter is not None]
        if waited:
            return waited[0]
        job = live[0]
        # round robin: move the chosen job to the end
        key = (job.project, job.version)
        self._jobs[key] = self._jobs.pop(key)
        return job

    def _finish(self, job: PredictionJob, entries: list[TaskEntry], items: list[PredictionItem]) -> None:
        with self._cond:
            for entry, item in zip(entries, items):
                entry.item, entry.done = item, True
                job.done += 1
                if not item.ok:
                    job.failed += 1
                    self.on_failure(job, entry, item.error or "no result")
                else:
                    self.on_success(job, entry)
                for note in entry.work.notes:
                    self.on_failure(job, entry, note)
                if entry.waiter is not None:
                    entry.waiter.notify()
                elif job.registry.get(entry.key) is entry:
                    self._finished_for_import(job, entry)
            self._settle(job)
            self._cond.notify_all()

    def _finished_for_import(self, job: PredictionJob, entry: TaskEntry) -> None:
        if not entry.item.ok:  # failed: nothing to store; the next click retries it
            job.registry.pop(entry.key, None)
        elif job.target is None or job.import_error or not isinstance(entry.work.task_id, (int, str)):
            self._drop(job, entry, job.import_error or NO_TARGET)
        else:
            job.to_import.append(entry)

    def _drop(self, job: PredictionJob, entry: TaskEntry, why: str) -> None:
        job.registry.pop(entry.key, None)
        try:
            job.queue.remove(entry)
        except ValueError:
            pass
        job.dropped += 1
        if job.message != why:
            job.message = why
            log.warning("project %s: %s", job.project, why)

    def _settle(self, job: PredictionJob) -> None:
        self._unsaved.add(job)
        if job.idle:
            if job.state != JobState.CANCELLED:
                job.state = JobState.FAILED if job.import_error else JobState.DONE
            job.finished_at = time.time()
            self._retire(job)

    def _retire(self, job: PredictionJob) -> None:
        key = (job.project, job.version)
        if self._jobs.get(key) is job:
            del self._jobs[key]
        if job not in self._history:
            self._history.appendleft(job)

    # ----- the importer -------------------------------------------------------------------------

    def _import_loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and not any(j.to_import for j in self._jobs.values()):
                    self._cond.wait()
                if self._stopped:
                    return
                job = next(j for j in self._jobs.values() if j.to_import)
                chunk, job.to_import = job.to_import[:IMPORT_CHUNK], job.to_import[IMPORT_CHUNK:]
                target = job.target
            payload = [{"task": e.work.task_id, "result": e.item.result, "score": e.item.score,
                        "model_version": job.version} for e in chunk]
            try:
                importer = self._importer(target, job.project)
                outcome = importer.import_items(payload, job.version)
            except PredictionImportError as exc:
                self._import_failed(job, chunk, str(exc))
                continue
            except Exception as exc:  # the importer's own bug: say so, keep the thread alive
                log.exception("project %s: import failed", job.project)
                self._import_failed(job, chunk, f"import failed ({type(exc).__name__}); see the backend's log")
                continue
            with self._cond:
                stored = self._stored.setdefault((job.project, job.version), {})
                for entry in chunk:
                    job.registry.pop(entry.key, None)
                    stored[entry.key] = time.monotonic()
                _forget_oldest(stored, STORED_MEMORY)
                job.imported += len(outcome.imported)
                job.already += len(outcome.already)
                self._settle(job)
                self._cond.notify_all()

    def _importer(self, target: LabelStudioTarget, project: str) -> PredictionImporter:
        key = (target.url, target.key, project)
        if key not in self._importers:
            self._importers[key] = self.importer_factory(target.url, target.key, int(project),
                                                         timeout=self.import_timeout)
        return self._importers[key]

    def _import_failed(self, job: PredictionJob, chunk: list[TaskEntry], reason: str) -> None:
        """Nothing of the chunk was stored; stop the job's background work: the next click goes on."""
        log.error("project %s: %s; %d predictions were not stored (the next Retrieve Predictions redoes them)",
                  job.project, reason, len(chunk))
        with self._cond:
            self._importers.pop((job.target.url, job.target.key, job.project), None)
            for entry in chunk + job.to_import:
                job.registry.pop(entry.key, None)
            job.dropped += len(chunk) + len(job.to_import)
            job.to_import.clear()
            job.import_error = reason
            for entry in list(job.queue):
                if entry.waiter is None:
                    self._drop(job, entry, reason)
            job.message = reason
            self._settle(job)
            self._cond.notify_all()


def _forget_oldest(stored: dict, keep: int) -> None:
    """Bound the memory of stored tasks (insertion order is age order)."""
    for key in list(stored)[: max(0, len(stored) - keep)]:
        del stored[key]
