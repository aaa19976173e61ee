"""Bulk pre-labelling of a whole Label Studio project, outside Label Studio's 100 s `/predict` timeout.

    python -m backend.prelabel --project 12 [--batch-size 32] [--page-size 200] [--import-chunk 200]

Label Studio's URL and API key come from LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY (the backend's
variables; legacy tokens and personal access tokens both work through label_studio_sdk.LabelStudio),
the model and thresholds from the backend's other variables (SAM_MODEL for projects with
`<BrushLabels>` / `<PolygonLabels>`), so the predictions and their `model_version` are exactly what the
ML backend would give.

Pages through the project's tasks with the SDK, skips tasks that already hold a prediction of the current
model_version, predicts in batches with the backend's Predictor and imports predictions through the SDK
(`projects.import_predictions`) chunk by chunk. Killed half-way, a re-run skips what was imported and
goes on: nothing is predicted twice into Label Studio and nothing is lost. Exit status 0 when no task
failed, 1 when some did (see the summary), 2 on a configuration error.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field

from tqdm import tqdm

log = logging.getLogger("backend.prelabel")


@dataclass
class Summary:
    predicted: int = 0
    skipped: int = 0
    empty: int = 0
    failed: dict = field(default_factory=dict)  # task id -> reason

    def report(self) -> str:
        lines = [f"predicted: {self.predicted} (of which without boxes: {self.empty})",
                 f"skipped (already predicted by this model version): {self.skipped}",
                 f"failed: {len(self.failed)}"]
        for task_id, reason in list(self.failed.items())[:50]:
            lines.append(f"  task {task_id}: {reason}")
        if len(self.failed) > 50:
            lines.append(f"  ... and {len(self.failed) - 50} more")
        return "\n".join(lines)


def _get(obj, name, default=None):
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


def has_version(task, version: str) -> bool:
    return any(_get(p, "model_version") == version for p in (_get(task, "predictions") or []))


def prelabel(client, predictor, project_id: int, batch_size: int = 16, page_size: int = 100,
             import_chunk: int = 100, progress: bool = True, hostname: str | None = None,
             access_token: str | None = None) -> Summary:
    project = client.projects.get(id=project_id)
    label_config = project.label_config
    version = predictor.model_version(label_config)
    total = _get(project, "task_number") or None
    log.info("project %s: model_version %s", project_id, version)
    summary = Summary()
    batch: list[dict] = []
    pending: list[dict] = []  # predictions waiting to be imported

    def flush_imports(force: bool = False):
        while pending and (force or len(pending) >= import_chunk):
            chunk = pending[:import_chunk]
            client.projects.import_predictions(id=project_id, request=chunk)
            del pending[:import_chunk]

    def run_batch(bar):
        if not batch:
            return
        items = predictor.predict_tasks(batch, label_config, hostname=hostname, access_token=access_token)
        for task, item in zip(batch, items):
            if "result" not in item:
                summary.failed[task["id"]] = item.get("error") or "no result"
                continue
            if item.get("model_version") != version:
                summary.failed[task["id"]] = f"model_version changed during the run ({item.get('model_version')})"
                continue
            pending.append({"task": task["id"], "result": item["result"], "score": item.get("score"),
                            "model_version": version})
            summary.predicted += 1
            summary.empty += not item["result"]
        bar.update(len(batch))
        batch.clear()
        flush_imports()

    with tqdm(total=total, unit="task", desc=f"project {project_id}", disable=not progress) as bar:
        for task in client.tasks.list(project=project_id, page_size=page_size, fields="all", resolve_uri=False):
            if has_version(task, version):
                summary.skipped += 1
                bar.update(1)
                continue
            batch.append({"id": _get(task, "id"), "data": _get(task, "data") or {}, "meta": _get(task, "meta") or {}})
            if len(batch) >= batch_size:
                run_batch(bar)
        run_batch(bar)
        flush_imports(force=True)
    return summary


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

    from label_studio_sdk import LabelStudio

    from .server import load_predictor

    from .detection import ModelLoadError
    from .detection.masks import MaskModelLoadError

    client = LabelStudio(base_url=settings.label_studio_url, api_key=settings.label_studio_api_key, timeout=300)
    try:
        predictor = load_predictor(settings)
    except (ModelLoadError, MaskModelLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from .label_config import LabelConfigError

    try:
        summary = prelabel(
            client, predictor, args.project, batch_size=args.batch_size or 4 * predictor.batch_size,
            page_size=args.page_size, import_chunk=args.import_chunk, progress=not args.no_progress,
            hostname=settings.label_studio_url, access_token=settings.label_studio_api_key,
        )
    except LabelConfigError as exc:  # the project's config cannot be predicted (or its mask model not loaded)
        print(f"error: project {args.project}: {exc}", file=sys.stderr)
        return 2
    print(summary.report())
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
