"""Which Label Studio export a file is, and its tasks in the JSON export's shape.

Label Studio 1.23 exports a project as (Export button, `GET /api/projects/<id>/export?exportType=...`, or
an export snapshot, `POST /api/projects/<id>/exports/`):

- JSON: a list of tasks `{"id", "data", "annotations": [...], "predictions": [...]}`. The Export button
  writes each prediction as its id (`"predictions": [378]`); a snapshot with
  `serialization_options.predictions.only_id = false` writes the predictions themselves.
- JSON_MIN: one record per annotation, `{<data fields>, "id": <task>, <control name>: [region values],
  "annotator", "annotation_id", ...}`; no predictions, no region ids, no cancelled annotations.
- CSV / TSV (JSON_MIN's records as rows), COCO / YOLO / Pascal VOC (ZIP archives of labels, or COCO's
  `result.json` taken out of one): annotations only, in formats that lose what scoring needs.

`read_export` accepts JSON and JSON_MIN and refuses every other file with one sentence naming the export
to choose instead; it checks the shape of what it returns, so the readers after it need not.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import InputError

JSON, JSON_MIN = "JSON", "JSON_MIN"
REGION_KINDS = ("rectanglelabels", "brushlabels", "polygonlabels")
# The fields of a JSON_MIN record that are not task data or regions (label-studio-sdk's convert_to_json_min).
JSON_MIN_FIELDS = {"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "agreement",
                   "history", "was_cancelled"}
CHOOSE_JSON = ("export the project as JSON instead (Export -> JSON; see the README's section "
               "\"Exporting a project for evaluation\")")


@dataclass(frozen=True)
class ExportFile:
    path: Path
    format: str  # JSON or JSON_MIN
    tasks: list[dict]  # in the JSON export's shape; a JSON_MIN task's "predictions" is None (not in the file)

    def annotated(self) -> list[dict]:
        return [t for t in self.tasks if final_annotation(t) is not None]


def final_annotation(task: dict) -> dict | None:
    """The task's final annotation: the last updated of those not cancelled (skipped); None without one."""
    anns = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not anns:
        return None
    return max(enumerate(anns), key=lambda p: (str(p[1].get("updated_at") or ""), p[0]))[1]


def require_annotated(tasks: list[dict], source: str) -> None:
    """Scoring needs a final annotation on at least one task; else say what the tasks hold."""
    if any(final_annotation(t) is not None for t in tasks):
        return
    cancelled = sum(1 for t in tasks if t.get("annotations"))
    why = f" (cancelled (skipped) annotations only, on {cancelled} of its {len(tasks)} tasks)" if cancelled else ""
    raise InputError(f"{source} has no annotated tasks{why}: nothing to score the predictions against")


def read_export(path: Path) -> ExportFile:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"export file not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not an export file: give the .json file Label Studio "
                         "downloaded") from None
    except OSError as exc:
        raise InputError(f"cannot read {path} ({exc.strerror or exc})") from None
    if not raw.strip():
        raise InputError(f"{path} is empty: {CHOOSE_JSON}")
    if raw[:4] == b"PK\x03\x04":
        raise InputError(f"{path} is a ZIP archive (Label Studio's COCO, YOLO or Pascal VOC export): it holds "
                         f"annotations without the backend's predictions; {CHOOSE_JSON}")
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise InputError(f"{path} is not a text file, so not a Label Studio JSON export; {CHOOSE_JSON}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is {_not_json(raw, exc)}; {CHOOSE_JSON}") from None
    return ExportFile(path, *_tasks(data, path))


def _not_json(raw: bytes, exc: json.JSONDecodeError) -> str:
    first = raw.decode("utf-8", "replace").lstrip("\ufeff").strip().splitlines()[0]
    if first[:1] not in "[{" and "annotation_id" in first:  # Label Studio's CSV/TSV header row
        if "\t" in first:
            return "Label Studio's TSV export, which has no predictions"
        if "," in first:
            return "Label Studio's CSV export, which has no predictions"
    return f"not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"


def _tasks(data, path: Path) -> tuple[str, list[dict]]:
    if isinstance(data, dict):
        if {"images", "annotations", "categories"} <= data.keys():
            raise InputError(f"{path} is a COCO file (Label Studio's COCO export): it holds annotations without "
                             f"the backend's predictions; {CHOOSE_JSON}")
        if not _is_task(data):
            raise InputError(f"{path} is a JSON object with the keys {_keys(data)}, not a Label Studio JSON export "
                             f"(a list of tasks); {CHOOSE_JSON}")
        data = [data]  # one task on its own
    if not isinstance(data, list):
        raise InputError(f"{path} holds a JSON {type(data).__name__}, not a Label Studio JSON export (a list of "
                         f"tasks); {CHOOSE_JSON}")
    if not data:
        raise InputError(f"{path} holds no tasks: the Export button exports only tasks with annotations, so "
                         "annotate some tasks (or export with all tasks) and export again")
    for n, item in enumerate(data):
        if not isinstance(item, dict):
            raise InputError(f"{path}: item {n + 1} is a JSON {type(item).__name__}, not a task; {CHOOSE_JSON}")
    if all(_is_task(t) for t in data):
        for n, task in enumerate(data):
            _check_task(task, n, path)
        _check_unique_ids(data, path)
        return JSON, data
    if all(_is_json_min(t) for t in data):
        return JSON_MIN, _from_json_min(data, path)
    bad = next(n for n, t in enumerate(data) if not _is_task(t))
    raise InputError(f"{path}: item {bad + 1} has the keys {_keys(data[bad])}, not those of a task in Label "
                     f"Studio's JSON export (data, annotations, predictions); {CHOOSE_JSON}")


def _keys(item: dict) -> str:
    keys = sorted(map(str, item))
    return ", ".join(keys[:8]) + (", ..." if len(keys) > 8 else "") if keys else "(none)"


def _is_task(item: dict) -> bool:
    return isinstance(item.get("data"), dict) or "annotations" in item or "predictions" in item


def _is_json_min(item: dict) -> bool:
    return "annotation_id" in item and "id" in item and "annotations" not in item


def _task_id(task: dict, n: int, path: Path):
    value = task.get("id", n + 1)
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
        raise InputError(f"{path}: task {n + 1} has the id {value!r}; Label Studio's task ids are whole numbers")
    return int(value)


def _check_task(task: dict, n: int, path: Path) -> None:
    """Every field the readers use has the type Label Studio writes; else one sentence naming it."""
    where = f"{path}: task {_task_id(task, n, path)}"
    task["id"] = _task_id(task, n, path)
    for name in ("annotations", "predictions"):
        items = task.get(name)
        if items is not None and not isinstance(items, list):
            raise InputError(f"{where}: \"{name}\" is a {type(items).__name__}, not a list")
    for ann in task.get("annotations") or []:
        if not isinstance(ann, dict):
            raise InputError(f"{where}: an annotation is a {type(ann).__name__}, not an object")
        if ann.get("result") is not None and not isinstance(ann["result"], list):
            raise InputError(f"{where}: annotation {ann.get('id')!r} has a \"result\" that is not a list")
    for pred in task.get("predictions") or []:
        if isinstance(pred, bool) or not isinstance(pred, (dict, int)):
            raise InputError(f"{where}: a prediction is {pred!r}, neither a prediction nor a prediction id")
        if isinstance(pred, dict) and pred.get("result") is not None and not isinstance(pred["result"], list):
            raise InputError(f"{where}: prediction {pred.get('id')!r} has a \"result\" that is not a list")


def _check_unique_ids(tasks: list[dict], path: Path) -> None:
    seen = set()
    for task in tasks:
        if task["id"] in seen:
            raise InputError(f"{path}: task {task['id']} appears twice; give one project's export as Label Studio "
                             "wrote it")
        seen.add(task["id"])


def _from_json_min(records: list[dict], path: Path) -> list[dict]:
    """JSON_MIN records (one per annotation) -> tasks in the JSON export's shape, without predictions."""
    tasks: dict[int, dict] = {}
    for n, record in enumerate(records):
        task_id = _task_id(record, n, path)
        regions = {k: v for k, v in record.items() if k not in JSON_MIN_FIELDS and _is_region_list(v)}
        data = {k: v for k, v in record.items() if k not in JSON_MIN_FIELDS and k not in regions}
        task = tasks.setdefault(task_id, {"id": task_id, "data": data, "annotations": [], "predictions": None})
        if record.get("annotation_id") is None:  # a task without annotations (exported with all tasks)
            continue
        result = []
        for name, values in regions.items():
            for value in values:
                value = dict(value)
                item = {"from_name": name, "type": next(k for k in REGION_KINDS if k in value)}
                for size in ("original_width", "original_height"):
                    if size in value:
                        item[size] = value.pop(size)
                value.pop("type", None)
                result.append({**item, "value": value})
        task["annotations"].append({"id": record["annotation_id"], "created_at": record.get("created_at"),
                                    "updated_at": record.get("updated_at"), "result": result})
    return list(tasks.values())


def _is_region_list(value) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(v, dict) and any(k in v for k in REGION_KINDS) for v in value))
