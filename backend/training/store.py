"""What the backend learns per project, kept on disk under a state directory (``STATE_DIR``).

    STATE_DIR/projects/<id>/thresholds.json   LearnedThresholds
    STATE_DIR/projects/<id>/model.json        TrainedModel: the fine-tuned model that serves the project
    STATE_DIR/projects/<id>/models/<name>/    fine-tuned model directories (and their training runs)

Every file is written atomically (a temporary file, fsynced, renamed over the old one), so a reader
never sees half a file, and a crash leaves the previous version.
"""
from __future__ import annotations

import datetime
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from runtime.files import atomic_write

from backend.app.state import project_key
from .thresholds import LEARNED, LearnedThresholds


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

    def save_thresholds(self, thresholds: LearnedThresholds) -> Path:
        path = self.project_dir(thresholds.project) / "thresholds.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, thresholds.to_json())
        return path

    def learned_thresholds(self, project) -> dict[str, float]:
        """label -> threshold for the labels whose threshold was learned (what prediction applies)."""
        learned = self.load_thresholds(project)
        if learned is None:
            return {}
        return {label: t.threshold for label, t in learned.labels.items() if t.source == LEARNED}

    def load_thresholds(self, project) -> LearnedThresholds | None:
        """The project's learned thresholds, or None when it has none yet."""
        path = self.project_dir(project) / "thresholds.json"
        text = self._read(path)
        if text is None:
            return None
        try:
            return LearnedThresholds.from_json(text)
        except (ValueError, TypeError, KeyError) as exc:
            raise StateError(f"{path} is not a thresholds file this version can read ({exc}); "
                             "delete it and press Start Training again to relearn the thresholds") from None

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

    @staticmethod
    def _read(path: Path) -> str | None:
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise StateError(f"cannot read {path} ({exc})") from None
