"""What the backend learns per project, kept on disk under a state directory (``STATE_DIR``).

    STATE_DIR/projects/<id>/thresholds.json                 LearnedThresholds of the base model
    STATE_DIR/projects/<id>/model.json                      TrainedModel: the fine-tuned model that serves the project
    STATE_DIR/projects/<id>/models/<name>/                  fine-tuned model directories (and their training runs)
    STATE_DIR/projects/<id>/models/<name>/thresholds.json   LearnedThresholds of that fine-tuned model

Thresholds belong to the model they were learned on: each file records its model and is applied to
that model only (``served``: the one home of this rule, used by the server, ``backend.prelabel`` and
``backend.train``). Every file is written atomically (a temporary file, fsynced, renamed over the old
one), so a reader never sees half a file, and a crash leaves the previous version.
"""
from __future__ import annotations

import datetime
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from runtime.files import atomic_write

from backend.project_key import project_key
from .thresholds import LearnedThresholds


class StateError(ValueError):
    """A state file that cannot be read; the message names it and what to do."""


@dataclass(frozen=True)
class TrainedModel:
    """A fine-tuned model and the held-out evidence that it is not worse than the one it replaced."""

    model_dir: str
    base_model: str
    ap_before: float | None  # held-out COCO AP (0..1) of the base model, None without a held-out part
    ap_after: float | None
    ap50_before: float | None
    ap50_after: float | None
    not_worse: bool
    train_tasks: int
    heldout_tasks: int
    created_at: str = field(
        default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))

    @property
    def name(self) -> str:
        return Path(self.model_dir).name


@dataclass(frozen=True)
class ServedModel:
    """What serves a project: the checkpoint, the adopted fine-tuned model (None: the base model), and the
    thresholds learned on that checkpoint (None when it has none)."""

    model: str
    tuned: TrainedModel | None
    thresholds: LearnedThresholds | None

    def applied(self) -> dict[str, float]:
        """label -> threshold that prediction applies (the learned ones)."""
        return self.thresholds.applied() if self.thresholds is not None else {}


class ProjectStore:
    """Per-project learned state under one state directory."""

    def __init__(self, state_dir: str | Path):
        self.root = Path(state_dir)

    def project_dir(self, project) -> Path:
        key = project_key(project)
        if not re.fullmatch(r"[A-Za-z0-9_-]+", key):  # the id becomes a path: nothing that escapes it
            raise StateError(f"project id {key!r} is not usable as a directory name (letters, digits, _ and -)")
        return self.root / "projects" / key

    def models_dir(self, project) -> Path:
        return self.project_dir(project) / "models"

    # ----- thresholds -------------------------------------------------------------------------

    def thresholds_path(self, project, model: str | None) -> Path:
        """A fine-tuned model's thresholds live in its directory, the base model's in the project's."""
        if model and self._is_tuned(project, model):
            return Path(model) / "thresholds.json"
        return self.project_dir(project) / "thresholds.json"

    def _is_tuned(self, project, model: str) -> bool:
        return Path(model).resolve().parent == self.models_dir(project).resolve()

    def save_thresholds(self, thresholds: LearnedThresholds) -> Path:
        path = self.thresholds_path(thresholds.project, thresholds.model)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, thresholds.to_json())
        return path

    def load_thresholds(self, project, model: str | None = None) -> LearnedThresholds | None:
        """The thresholds learned on ``model`` for the project, or None when it has none. ``model=None``
        reads the base model's file whatever model it was learned on (for tools that show it)."""
        path = self.thresholds_path(project, model)
        text = self._read(path)
        if text is None:
            return None
        try:
            learned = LearnedThresholds.from_json(text)
        except (ValueError, TypeError, KeyError) as exc:
            raise StateError(f"{path} is not a thresholds file this version can read ({exc}); "
                             "delete it and press Start Training again to relearn the thresholds") from None
        if model is None or _same_model(learned, model):
            return learned
        return None  # learned on another model: never applied to this one

    def served(self, project, base_model: str) -> ServedModel:
        """The model serving ``project`` (its adopted fine-tuned model, else ``base_model``) and that model's
        own thresholds. Raises StateError for an unreadable state file."""
        tuned = self.load_model(project)
        model = tuned.model_dir if tuned is not None else base_model
        return ServedModel(model, tuned, self.load_thresholds(project, model))

    # ----- fine-tuned model -------------------------------------------------------------------

    def save_model(self, project, model: TrainedModel) -> Path:
        path = self.project_dir(project) / "model.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(asdict(model), indent=2, sort_keys=True))
        return path

    def load_model(self, project) -> TrainedModel | None:
        """The fine-tuned model serving the project, or None (the base model serves it)."""
        path = self.project_dir(project) / "model.json"
        text = self._read(path)
        if text is None:
            return None
        try:
            return TrainedModel(**json.loads(text))
        except (ValueError, TypeError) as exc:
            raise StateError(f"{path} is not a model record this version can read ({exc}); delete it to serve "
                             "the project with the base model") from None

    def commit(self, project, thresholds: list[LearnedThresholds], model: TrainedModel | None) -> None:
        """A finished training run's changes, written together at its end (never after a cancel). The new
        model's thresholds go into its own directory (served by nobody yet), then the served model's
        thresholds, then ``model.json``, which switches the project to the new model: each file is
        atomic, and a crash between two of them leaves every model with its own thresholds."""
        tuned = [t for t in thresholds if t.model and self._is_tuned(project, t.model)]
        for learned in tuned + [t for t in thresholds if t not in tuned]:
            self.save_thresholds(learned)
        if model is not None:
            self.save_model(project, model)

    @staticmethod
    def _read(path: Path) -> str | None:
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise StateError(f"cannot read {path} ({exc})") from None


def _same_model(learned: LearnedThresholds, model: str) -> bool:
    if learned.model is not None:
        return learned.model == model
    # Written before thresholds recorded their model: they were learned on the base model, whose name
    # starts the version they were learned from.
    name = Path(model.rstrip("/\\")).name or model
    return learned.model_version.startswith(name + "-")
