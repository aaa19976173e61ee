"""Bulk pre-labelling of a whole Label Studio project, outside Label Studio's 100 s `/predict` timeout.

    python -m backend.prelabel --project 12 [--batch-size 32] [--page-size 200] [--import-chunk 200]
    torchrun --nproc-per-node 8 -m backend.prelabel --project 12      # every GPU of this machine
    torchrun --nnodes 4 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m backend.prelabel --project 12                               # and several machines

Label Studio's URL and API key come from LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY (the backend's
variables; legacy tokens and personal access tokens both work through label_studio_sdk.LabelStudio),
the model and thresholds from the backend's other variables (SAM_MODEL for projects with
`<BrushLabels>` / `<PolygonLabels>`), so the predictions and their `model_version` are exactly what the
ML backend would give.

Pages through the project's tasks with the SDK, skips tasks that already hold a prediction of the current
model_version, predicts in batches with the backend's Predictor and imports the predictions chunk by chunk
through `labelstudio.importer.PredictionImporter` (which asks Label Studio again under a per-project lock,
so a running backend and this command never store one task twice). Killed half-way, a re-run skips what was
imported and goes on: nothing is predicted twice into Label Studio and nothing is lost.

Under torchrun every process (rank) takes the tasks whose id modulo the number of processes is its rank,
on its own device (`cuda:LOCAL_RANK`, or the LOCAL_RANK-th entry of DEVICES; gloo on the CPU); rank 0
shows the whole run's progress and prints one summary. Exit status 0 when no task failed, 1 when some did
or the run stopped early (see the summary), 2 on a configuration error.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field, replace

from backend.serving.items import PredictionItem
from labelstudio.importer import PredictionImporter, PredictionImportError, describe_api_error, field_of, has_version
from runtime.distributed import Dist

from .prelabel_progress import BarProgress, SharedProgress

# The settings, the label sets, the project store, the model and the devices are imported inside the
# functions that use them: each imports the detection core, hence torch, and --help and argument errors
# answer without loading it (nor the Label Studio SDK, 0.8 s with pandas).

log = logging.getLogger("backend.prelabel")
FAILURES_SHOWN = 50


class ConfigError(RuntimeError):
    """The run cannot start (project, key, label config, device); the message says what to change."""


class RunStopped(RuntimeError):
    """Label Studio stopped answering mid-run; what was imported stays, a re-run goes on from there."""


@dataclass(frozen=True)
class Shard:
    """The tasks one process takes: task id modulo the number of processes. Decided by the id alone, so
    two processes never take one task, whatever order or page Label Studio lists it in."""

    index: int = 0
    count: int = 1

    def owns(self, task_id) -> bool:
        return int(task_id) % self.count == self.index


@dataclass
class Summary:
    predicted: int = 0  # imported by this run
    skipped: int = 0  # held a prediction of this model_version already
    stored_meanwhile: int = 0  # of the skipped: stored by another process while this run predicted them
    empty: int = 0  # of the predicted: without boxes
    failed: dict = field(default_factory=dict)  # task id -> reason
    stopped: list = field(default_factory=list)  # why a process stopped before the end of its share

    @classmethod
    def merge(cls, parts: list["Summary"]) -> "Summary":
        total = cls()
        for part in parts:
            total.predicted += part.predicted
            total.skipped += part.skipped
            total.stored_meanwhile += part.stored_meanwhile
            total.empty += part.empty
            total.failed.update(part.failed)
            total.stopped.extend(part.stopped)
        return total

    @property
    def ok(self) -> bool:
        return not self.failed and not self.stopped

    def report(self) -> str:
        meanwhile = f" (of which stored by another process during this run: {self.stored_meanwhile})"
        lines = [f"predicted: {self.predicted} (of which without boxes: {self.empty})",
                 f"skipped (already predicted by this model version): {self.skipped}"
                 + (meanwhile if self.stored_meanwhile else ""),
                 f"failed: {len(self.failed)}"]
        for task_id, reason in sorted(self.failed.items())[:FAILURES_SHOWN]:
            lines.append(f"  task {task_id}: {reason}")
        if len(self.failed) > FAILURES_SHOWN:
            lines.append(f"  ... and {len(self.failed) - FAILURES_SHOWN} more")
        for reason in dict.fromkeys(self.stopped):
            lines.append(f"stopped early: {reason}; run the command again to go on")
        return "\n".join(lines)


@dataclass(frozen=True)
class ProjectRun:
    """One project to pre-label: its label config, the model_version it gets, its size."""

    client: object  # label_studio_sdk.LabelStudio
    predictor: object  # backend.serving.predictor.Predictor
    project_id: int
    label_config: str
    version: str
    total: int | None
    thresholds: dict | None = None  # per-label thresholds Start Training learned (as the backend uses them)

    @classmethod
    def open(cls, client, predictor, project_id: int, base_url: str = "", thresholds: dict | None = None) -> "ProjectRun":
        """Raises ConfigError naming what to fix (no such project, a refused key, an unusable config)."""
        from labelstudio.label_sets import LabelConfigError

        try:
            project = client.projects.get(id=project_id)
        except Exception as exc:
            raise ConfigError(f"cannot read project {project_id}: {describe_api_error(exc, base_url)}") from None
        label_config = field_of(project, "label_config")
        try:
            version = predictor.model_version(label_config, thresholds)
        except LabelConfigError as exc:
            raise ConfigError(f"project {project_id}'s label config cannot be used: {exc}") from None
        log.info("project %s: model_version %s", project_id, version)
        return cls(client, predictor, project_id, label_config, version, field_of(project, "task_number") or None,
                   thresholds)

    def label(self, importer, shard: Shard = Shard(), tracker=None, batch_size: int = 16, page_size: int = 100,
              import_chunk: int = 100, hostname: str | None = None, access_token: str | None = None) -> Summary:
        """Predict and import this shard's tasks that lack a prediction of this version."""
        tracker = tracker or BarProgress(enabled=False)
        labelling = LabelPass(self, importer, tracker, batch_size, import_chunk,
                              {"hostname": hostname, "access_token": access_token, "thresholds": self.thresholds})
        tracker.start(self.total, f"project {self.project_id}")
        try:
            for task in self._tasks(page_size, importer.base_url):
                task_id = field_of(task, "id")
                if not shard.owns(task_id):
                    continue
                if has_version(task, self.version):
                    labelling.skip()
                    continue
                labelling.take({"id": task_id, "data": field_of(task, "data") or {},
                                "meta": field_of(task, "meta") or {}})
            labelling.finish()
        except RunStopped as exc:
            log.error("project %s: %s; %d predictions were not stored (a re-run redoes them)",
                      self.project_id, exc, labelling.unstored)
            labelling.summary.stopped.append(str(exc))
        finally:
            tracker.close()
        return labelling.summary

    def _tasks(self, page_size: int, base_url: str):
        """Every task of the project, page by page; a failed page stops the run with a clear reason."""
        pages = iter(self.client.tasks.list(project=self.project_id, page_size=page_size, fields="all",
                                            resolve_uri=False))
        while True:
            try:
                task = next(pages)
            except StopIteration:
                return
            except Exception as exc:
                raise RunStopped(describe_api_error(exc, base_url)) from None
            yield task


class LabelPass:
    """One pass of `ProjectRun.label`: tasks gather into batches for the predictor, their predictions into
    chunks for the importer, and every outcome is counted in `summary`."""

    def __init__(self, run: ProjectRun, importer, tracker, batch_size: int, import_chunk: int, predict_options: dict):
        self.run, self.importer, self.tracker = run, importer, tracker
        self.batch_size, self.import_chunk = batch_size, import_chunk
        self.predict_options = predict_options  # hostname, access_token, thresholds for predict_tasks
        self.summary = Summary()
        self.batch: list[dict] = []  # tasks waiting to be predicted
        self.pending: list[dict] = []  # predictions waiting to be imported

    @property
    def unstored(self) -> int:
        """Tasks taken whose prediction is not in Label Studio yet (lost if the pass stops now)."""
        return len(self.pending) + len(self.batch)

    def skip(self) -> None:
        """A task that holds a prediction of this version already."""
        self.summary.skipped += 1
        self.tracker.advance(1)

    def take(self, task: dict) -> None:
        self.batch.append(task)
        if len(self.batch) >= self.batch_size:
            self._predict_batch()

    def finish(self) -> None:
        """Predict the last batch and import everything still pending. Raises RunStopped."""
        self._predict_batch()
        self._import(force=True)

    def _predict_batch(self) -> None:
        if not self.batch:
            return
        version = self.run.version
        items = self.run.predictor.predict_tasks(self.batch, self.run.label_config, **self.predict_options)
        for task, item in zip(self.batch, map(PredictionItem.from_json, items)):
            if not item.ok:
                self.summary.failed[task["id"]] = item.error or "no result"
            elif item.model_version != version:
                self.summary.failed[task["id"]] = f"model_version changed during the run ({item.model_version})"
            else:
                self.pending.append({"task": task["id"], "result": item.result, "score": item.score,
                                     "model_version": version})
        self.tracker.advance(len(self.batch))
        self.batch.clear()
        self._import()

    def _import(self, force: bool = False) -> None:
        """Import full chunks (every pending prediction with `force`); Label Studio refusing stops the run."""
        while self.pending and (force or len(self.pending) >= self.import_chunk):
            chunk = self.pending[:self.import_chunk]
            try:
                outcome = self.importer.import_items(chunk, self.run.version)
            except PredictionImportError as exc:
                raise RunStopped(str(exc)) from None
            del self.pending[:self.import_chunk]
            stored = set(outcome.imported)
            self.summary.predicted += len(stored)
            self.summary.empty += sum(1 for item in chunk if item["task"] in stored and not item["result"])
            self.summary.skipped += len(outcome.already)
            self.summary.stored_meanwhile += len(outcome.already)


def prelabel(client, predictor, project_id: int, batch_size: int = 16, page_size: int = 100,
             import_chunk: int = 100, progress: bool = True, hostname: str | None = None,
             access_token: str | None = None, shard: Shard = Shard(), tracker=None) -> Summary:
    """One process's pre-labelling of `project_id` (its `shard` of the tasks); `hostname` is Label
    Studio's URL: for media and for the per-project import lock shared with a running backend."""
    run = ProjectRun.open(client, predictor, project_id, hostname or "")
    importer = PredictionImporter(client, hostname or "", project_id)
    return run.label(importer, shard, tracker or BarProgress(progress), batch_size, page_size, import_chunk,
                     hostname, access_token)


def served_settings(settings, project_id):
    """The settings the backend serves this project with: its fine-tuned model when Start Training adopted
    one (STATE_DIR/projects/<id>/model.json), so that the predictions carry the backend's model_version."""
    model = _served(settings, project_id).tuned
    if model is None:
        return settings
    log.info("project %s: its fine-tuned model %s (adopted by Start Training)", project_id, model.model_dir)
    return replace(settings, model=model.model_dir)


def served_thresholds(settings, project_id) -> dict:
    """The per-label thresholds the backend predicts this project with: those learned on the model that
    serves it (ProjectStore.served, the server's rule too), never another model's."""
    return _served(settings, project_id).applied()


def _served(settings, project_id):
    """What STATE_DIR records for the project: the model that serves it and that model's thresholds."""
    from .training.store import ProjectStore

    return ProjectStore(settings.state_dir).served(str(project_id), settings.model)


def rank_device(settings, dist) -> str:
    """This process's device: the LOCAL_RANK-th of DEVICES, else DEVICE (cuda/auto -> cuda:LOCAL_RANK)."""
    if settings.devices:
        if dist.local_rank >= len(settings.devices):
            raise ConfigError(f"DEVICES={','.join(settings.devices)} lists {len(settings.devices)} devices for "
                              f"more processes on this machine: start at most {len(settings.devices)} per node "
                              "(torchrun --nproc-per-node) or list more devices")
        return settings.devices[dist.local_rank]
    return dist.device_for(settings.device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend.prelabel", description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=int, required=True, help="Label Studio project id")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="tasks per predict call (default: 4 x BATCH_SIZE); the model runs them in BATCH_SIZE micro-batches")
    parser.add_argument("--page-size", type=int, default=100, help="tasks fetched per API page (default 100)")
    parser.add_argument("--import-chunk", type=int, default=100, help="predictions per import request (default 100)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    for name in ("batch_size", "page_size", "import_chunk"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")

    from .settings import Settings, SettingsError, configure_logging

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not settings.label_studio_url or not settings.label_studio_api_key:
        print("error: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (Label Studio's address and an API key)",
              file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    # gloo for CPU processes, nccl for GPUs; one process (no group) without torchrun's variables.
    dist = Dist.from_env(settings.devices[0] if settings.devices else settings.device)
    try:
        return _run(args, settings, dist)
    finally:
        dist.close()


def _run(args, settings, dist) -> int:
    from label_studio_sdk import LabelStudio

    from detection import ModelLoadError
    from detection.masks import MaskModelLoadError
    from backend.serving.devices import load_on

    run, error = None, None
    try:
        device = rank_device(settings, dist)
        predictor = load_on(served_settings(settings, args.project), device)
        client = LabelStudio(base_url=settings.label_studio_url, api_key=settings.label_studio_api_key, timeout=300)
        learned = served_thresholds(settings, args.project)
        run = ProjectRun.open(client, predictor, args.project, settings.label_studio_url, learned)
    except (ConfigError, ModelLoadError, MaskModelLoadError, ValueError) as exc:
        error = str(exc)
    error = dist.agree(error)  # every rank stops together, with the first rank's reason
    if error is None:
        versions = sorted(set(dist.gather(run.version)))
        if len(versions) > 1:  # several machines with different models or settings
            error = (f"the processes disagree on the model_version ({', '.join(versions)}): give every machine "
                     "the same MODEL, thresholds and DTYPE")
    if error is not None:
        if dist.is_main:
            print(f"error: {error}", file=sys.stderr)
        return 2
    if dist.is_main and dist.enabled:
        log.info("project %s: %d processes, each on its own device, take the tasks by id modulo %d",
                 args.project, dist.world_size, dist.world_size)
    elif len(settings.devices) > 1:
        log.info("DEVICES lists %d devices; one process uses the first (%s): run it under torchrun "
                 "--nproc-per-node %d to use them all", len(settings.devices), device, len(settings.devices))
    progress = not args.no_progress
    tracker = SharedProgress(dist, progress) if dist.enabled else BarProgress(progress)
    summary = run.label(
        PredictionImporter(run.client, settings.label_studio_url, args.project), Shard(dist.rank, dist.world_size),
        tracker, batch_size=args.batch_size or 4 * run.predictor.batch_size, page_size=args.page_size,
        import_chunk=args.import_chunk, hostname=settings.label_studio_url,
        access_token=settings.label_studio_api_key,
    )
    total = Summary.merge(dist.gather(summary))
    if dist.is_main:
        print(total.report())
    return 0 if total.ok else 1


if __name__ == "__main__":
    sys.exit(main())
