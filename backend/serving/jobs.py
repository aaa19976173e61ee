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
in STATE_DIR and queued again at the next start (`restore`), or reported as dropped with the reason.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from .devices import DeviceSlot, PredictorPool
from .job_journal import JobJournal, KeptJob, dropped_row, name_tasks
from .job_status import JobRow, JobState, rate_and_eta
from labelstudio.importer import PredictionImporter, PredictionImportError
from .items import PredictionItem
from .predictor import DOWNLOAD_WORKERS, PredictionPlan, Predictor, TaskWork
from labelstudio.target import LabelStudioTarget

log = logging.getLogger(__name__)
IMPORT_CHUNK = 100
HISTORY = 20
STORED_MEMORY = 100_000  # stored task ids remembered per project and version
# How long a stored task is not predicted again: covers Label Studio's choosing a click's tasks before our
# import landed (seconds), yet a user who deletes predictions to redo them gets them on a later click.
STORED_TTL_S = 300.0
NO_TARGET = ("set LABEL_STUDIO_API_KEY (and LABEL_STUDIO_URL) so that the backend can store in Label Studio "
             "the tasks that do not fit in one answer; the next Retrieve Predictions continues with them")
JOURNAL_INTERVAL_S = 0.5  # a job's file is rewritten at most this often while it changes


class RequestWaiter:
    """A `/predict` request waiting (on the event loop) for its tasks."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.event = asyncio.Event()

    def notify(self) -> None:
        self.loop.call_soon_threadsafe(self.event.set)


@dataclass(eq=False)
class TaskEntry:
    job: "PredictionJob"
    work: TaskWork
    key: object  # the task id (or a private key for a task without one)
    waiter: RequestWaiter | None = None  # a request that will take the result in its answer
    item: PredictionItem | None = None
    done: bool = False

    @property
    def deliver_by_import(self) -> bool:
        return self.waiter is None


@dataclass(eq=False)
class PredictionJob:
    id: str
    project: str
    plan: PredictionPlan
    access: LabelStudioTarget  # what the project's /setup sent (for media)
    target: LabelStudioTarget | None  # where its predictions are stored: complete, or None
    queue: deque = field(default_factory=deque)  # TaskEntry not started
    registry: dict = field(default_factory=dict)  # key -> TaskEntry queued, running or awaiting import
    to_import: list = field(default_factory=list)
    state: JobState = JobState.QUEUED
    total: int = 0
    done: int = 0
    failed: int = 0
    imported: int = 0
    answered: int = 0  # returned in a /predict answer
    already: int = 0  # skipped at import: Label Studio had this version already
    dropped: int = 0  # given up (nothing stored): the next click predicts them
    started_at: float | None = None
    finished_at: float | None = None
    message: str | None = None
    import_error: str | None = None  # set when Label Studio refused an import; cleared by the next click
    label_config: str | None = None  # to predict the tasks again after a restart
    key_source: str | None = None  # which key stores the predictions (kept with the job; the key is not)

    @property
    def version(self) -> str:
        return self.plan.version

    @property
    def idle(self) -> bool:
        """Nothing queued, running, awaiting an answer or awaiting import."""
        return not self.queue and not self.to_import and not self.registry

    def snapshot(self) -> JobRow:
        now = time.time()
        elapsed = (self.finished_at or now) - self.started_at if self.started_at else None
        left = self.total - self.done
        rate, eta = rate_and_eta(self.done / elapsed if elapsed and self.done else None, left,
                                 left > 0 and self.state == JobState.RUNNING, digits=3)
        return JobRow(
            id=self.id, project=self.project, model_version=self.version, state=self.state,
            total=self.total, done=self.done, failed=self.failed, imported=self.imported,
            answered=self.answered, already_stored=self.already, dropped=self.dropped,
            rate_per_s=rate, eta_s=eta, started_at=self.started_at, finished_at=self.finished_at,
            message=self.message, stores_in_background=self.target is not None,
        )


class JobManager:
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

    # ----- the journal: each job's unfinished tasks kept in STATE_DIR --------------------------------

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
