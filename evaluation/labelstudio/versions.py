"""Which model version an evaluation scores: one, never a mix.

A project holds the predictions of every model that pre-labelled it (the base model, each fine-tuned one),
often several on one task. Scores of a mix would describe no model, so one version is scored, on the
annotated tasks that hold a prediction of it: `--model-version` when given, else the version predicting
the most annotated tasks (ties: the newest). What was chosen, why, and what else the export holds is
reported beside the figures.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from runtime.errors import InputError

from .formats import final_annotation

NO_VERSION = ""  # a prediction stored without a model_version


def version_of(pred: dict) -> str:
    return str(pred.get("model_version") or NO_VERSION)


def shown(version: str) -> str:
    return version if version else "(predictions without a model_version)"


@dataclass(frozen=True)
class VersionChoice:
    version: str
    reason: str  # why this version, in words
    task_ids: frozenset  # the annotated tasks scored: those holding a prediction of `version`
    unpredicted: tuple  # annotated task ids without a prediction of `version` (not scored)
    versions: dict = field(default_factory=dict)  # every version -> annotated tasks holding it

    def summary(self) -> str:
        others = [f"{shown(v)} ({_tasks(n)})" for v, n in self.versions.items() if v != self.version]
        text = f"model version {shown(self.version)} ({self.reason})"
        if self.unpredicted:
            text += (f"; {_tasks(len(self.unpredicted))} annotated but without a prediction of it, not scored "
                     f"(task ids {_ids(self.unpredicted)})")
        if others:
            text += f"; also in the export: {', '.join(others)} (score one with --model-version)"
        return text


def _tasks(n: int) -> str:
    return f"{n} task" if n == 1 else f"{n} tasks"


def _ids(ids) -> str:
    ids = sorted(ids)
    return ", ".join(map(str, ids[:10])) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")


def _newest(preds: list[dict]) -> tuple:
    """Order of creation: created_at, then the id (Label Studio numbers predictions in order)."""
    return max((str(p.get("created_at") or ""), p.get("id") if isinstance(p.get("id"), int) else -1) for p in preds)


def choose_version(tasks: list[dict], wanted: str | None = None) -> VersionChoice:
    """`tasks`: annotated tasks' predictions are objects (fetch.resolve_predictions)."""
    annotated = [t for t in tasks if final_annotation(t) is not None]
    holders: dict[str, set] = {}
    created: dict[str, tuple] = {}
    for task in annotated:
        for pred in task.get("predictions") or []:
            version = version_of(pred)
            holders.setdefault(version, set()).add(task["id"])
            created[version] = max(created.get(version, ("", -1)), _newest([pred]))
    if not holders:
        raise InputError(f"none of the {len(annotated)} annotated tasks holds a prediction, so there is nothing to "
                         "score: pre-label the tasks (Retrieve Predictions) before they are annotated, and export "
                         "again")
    order = sorted(holders, key=lambda v: (len(holders[v]), created[v]), reverse=True)
    counts = {v: len(holders[v]) for v in order}
    if wanted is not None:
        if wanted not in holders:
            listed = ", ".join(f"{shown(v)} ({_tasks(n)})" for v, n in counts.items())
            raise InputError(f"--model-version {wanted!r}: no annotated task holds a prediction of it; the export's "
                             f"annotated tasks hold {listed}")
        version, reason = wanted, "--model-version"
    else:
        version = order[0]
        if len(order) == 1:
            reason = "the only one in the export"
        elif len(holders[order[1]]) == len(holders[version]):
            reason = f"the newest of those predicting the most annotated tasks, {_tasks(len(holders[version]))}"
        else:
            reason = f"it predicted the most annotated tasks, {_tasks(len(holders[version]))}"
    unpredicted = tuple(sorted(t["id"] for t in annotated if t["id"] not in holders[version]))
    return VersionChoice(version, reason, frozenset(holders[version]), unpredicted, counts)


def keep_version(tasks: list[dict], choice: VersionChoice) -> list[dict]:
    """The tasks with one prediction each, of the chosen version, on the scored tasks, and none elsewhere.

    Of several predictions of the version on one task: the one the final annotation started from
    (`parent_prediction`), else the newest."""
    out = []
    for task in tasks:
        preds = [p for p in task.get("predictions") or []
                 if isinstance(p, dict) and version_of(p) == choice.version] if task["id"] in choice.task_ids else []
        if len(preds) > 1:
            parent = (final_annotation(task) or {}).get("parent_prediction")
            preds = [next((p for p in preds if parent is not None and p.get("id") == parent),
                          max(preds, key=lambda p: _newest([p])))]
        out.append({**task, "predictions": preds})
    return out
