"""The predictions an export names by id (or, for JSON_MIN, leaves out), fetched from Label Studio's API.

Label Studio's Export button writes `"predictions": [378]`: ids. With Label Studio's address and an API key
(`--label-studio-url`/`--api-key`, else LABEL_STUDIO_URL/LABEL_STUDIO_API_KEY as the backend reads them),
each annotated task's predictions are read with `GET /api/predictions/?task=<id>`, authenticated as the
backend's media downloads are (`MediaFetcher.auth_header`: personal access tokens refreshed through
label-studio-sdk, legacy tokens sent as `Token <key>`). Without them, one sentence says which options or
which export to use. Only annotated tasks are fetched: the others are not scored.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable

import httpx
from label_studio_sdk._extensions.label_studio_tools.core.utils.io import concat_urls

from labelstudio.media_errors import KeyRefusedError, LabelStudioUnreachableError
from labelstudio.target import LabelStudioTarget
from runtime.errors import InputError

from .formats import JSON_MIN, ExportFile
from .target_options import TargetOptions

EXPORT_HELP = "see the README's section \"Exporting a project for evaluation\""
WORKERS = 4  # concurrent requests: a large project is read in seconds without crowding Label Studio


class PredictionClient:
    """Reads a task's predictions; every failure an InputError naming the option to fix."""

    def __init__(self, options: TargetOptions, transport: httpx.BaseTransport | None = None):
        self.options = options
        self.target = options.target
        self.fetcher = options.media_fetcher(transport)

    def close(self) -> None:
        self.fetcher.client.close()

    def task_predictions(self, task_id: int) -> list[dict]:
        host, url_name = self.target.url, self.options.url_name
        url = concat_urls(host, "/api/predictions/")
        try:
            header = self.fetcher.auth_header(self.target)
            response = self.fetcher.client.get(url, params={"task": task_id}, headers={"Authorization": header})
        except KeyRefusedError:
            raise InputError(self._refused("a personal access token that cannot be refreshed: expired, revoked or "
                                           "not valid")) from None
        except LabelStudioUnreachableError:
            raise InputError(f"could not reach Label Studio at {host} to refresh the personal access token: "
                             f"check {url_name}") from None
        except httpx.HTTPError as exc:
            reason = (str(exc).strip() or type(exc).__name__)[:200]
            raise InputError(f"could not reach Label Studio at {host} ({reason}): check {url_name}") from None
        code = response.status_code
        if code in (401, 403):
            raise InputError(self._refused(f"HTTP {code}"))
        if code in (400, 404):
            raise InputError(f"Label Studio at {host} has no task {task_id} (HTTP {code} for its predictions): "
                             f"give the address of the Label Studio this export came from ({url_name}), or "
                             "export the project again if the task was deleted")
        body = _json(response) if code == 200 else None
        if isinstance(body, dict) and isinstance(body.get("results"), list):  # a paginated answer
            body = body["results"]
        if not isinstance(body, list) or not all(isinstance(p, dict) for p in body):
            raise InputError(f"{host} answered HTTP {code} to {url}?task={task_id}, not with Label Studio's list "
                             f"of predictions: check {url_name} (Label Studio's address, e.g. http://localhost:8080)")
        for pred in body:
            if pred.get("result") is not None and not isinstance(pred["result"], list):
                raise InputError(f"Label Studio at {host}: prediction {pred.get('id')!r} of task {task_id} has a "
                                 "\"result\" that is not a list")
        return body

    def _refused(self, detail: str) -> str:
        return (f"Label Studio at {self.target.url} refused the API key ({self.options.key_name}, {detail}): give an "
                "access token of a user with access to the project (Label Studio -> Account & Settings -> Access Token)")


def _json(response: httpx.Response):
    try:
        return response.json()
    except ValueError:
        return None


@dataclass(frozen=True)
class ResolvedTasks:
    tasks: list[dict]  # annotated tasks hold predictions as objects
    source: str  # where the scored predictions came from, in words


def resolve_predictions(export: ExportFile, options: TargetOptions,
                        client_factory: Callable[[TargetOptions], PredictionClient] = PredictionClient,
                        ) -> ResolvedTasks:
    """The export's tasks with each annotated task's predictions as objects, fetched when the export holds
    only their ids (the Export button's JSON) or none at all (JSON_MIN)."""
    if export.format == JSON_MIN:
        wanted = export.annotated()
    else:
        wanted = [t for t in export.annotated() if any(isinstance(p, int) for p in t.get("predictions") or [])]
    if not wanted:
        return ResolvedTasks(export.tasks, "the export")
    if not options.target.complete:
        raise InputError(_needs_access(export, wanted, options))
    client = client_factory(options)
    try:
        with ThreadPoolExecutor(WORKERS) as pool:
            fetched = dict(zip((t["id"] for t in wanted), pool.map(client.task_predictions, (t["id"] for t in wanted))))
    finally:
        client.close()
    tasks, missing = [], []
    for task in export.tasks:
        if task["id"] not in fetched:
            tasks.append(task)
            continue
        if export.format == JSON_MIN:
            tasks.append({**task, "predictions": fetched[task["id"]]})
            continue
        by_id = {p.get("id"): p for p in fetched[task["id"]]}
        preds = []
        for pred in task.get("predictions") or []:
            if isinstance(pred, int) and pred not in by_id:
                missing.append(f"{pred} (task {task['id']})")
            preds.append(by_id.get(pred, pred) if isinstance(pred, int) else pred)
        tasks.append({**task, "predictions": preds})
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InputError(f"the export lists predictions that Label Studio at {options.target.url} no longer has: {shown}; "
                         "they were deleted after the export: export the project again")
    what = "the predictions the export lists by id" if export.format != JSON_MIN else \
        "the tasks' predictions as they are now (JSON_MIN holds none)"
    return ResolvedTasks(tasks, f"{what}, fetched from Label Studio at {options.target.url} for {len(wanted)} annotated "
                                "tasks")


def _needs_access(export: ExportFile, wanted: list[dict], options: TargetOptions) -> str:
    give = (f"give Label Studio's address and an API key to fetch them ({options.missing()}, or LABEL_STUDIO_URL "
            "and LABEL_STUDIO_API_KEY)")
    if export.format == JSON_MIN:
        return (f"{export.path} is Label Studio's JSON_MIN export: it holds the annotations but not the backend's "
                f"predictions; {give}, or export JSON with full predictions ({EXPORT_HELP})")
    example = next(p for p in wanted[0]["predictions"] if isinstance(p, int))
    return (f"{export.path} is Label Studio's JSON export as the Export button writes it: it lists the predictions "
            f"of {len(wanted)} annotated tasks by id only (task {wanted[0]['id']}: \"predictions\": [{example}, ...]); "
            f"{give}, or export a snapshot with full predictions ({EXPORT_HELP})")


def require_prediction_objects(export: ExportFile) -> ExportFile:
    """The export itself, when every annotated task holds its predictions as objects; else the message."""
    return replace(export, tasks=resolve_predictions(export, TargetOptions(LabelStudioTarget())).tasks)
