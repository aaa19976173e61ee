"""What the server remembers between requests: one typed record per Label Studio project.

Credentials are kept per project and used only for that project's tasks: a project that never called
/setup gets the configured LABEL_STUDIO_URL/LABEL_STUDIO_API_KEY or nothing, never another project's
token (several Label Studio instances or organisations may share one backend).

Each record is also kept in `STATE_DIR/projects/<id>/project.json` (written atomically), so that the
versions served, the label config, Label Studio's address and the project's title survive a restart.
The /setup token is NOT written to disk: Label Studio sends it again with the next /setup (before every
Retrieve Predictions and whenever the project's model list loads), and until then the configured
LABEL_STUDIO_API_KEY, if any, is used.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from backend.project_key import project_key
from backend.training.store import ProjectStore, StateError
from labelstudio.target import LabelStudioTarget
from runtime.files import atomic_write

log = logging.getLogger(__name__)

MAX_VERSIONS_PER_PROJECT = 50


@dataclass
class ProjectRecord:
    project: str
    access: LabelStudioTarget = field(default_factory=LabelStudioTarget)  # what /setup sent
    label_config: str | None = None
    versions: list[str] = field(default_factory=list)
    last_setup_at: float | None = None
    key_check: dict | None = None  # {"ok", "message", "checked_at"} from the last /setup
    skipped_labels: tuple[str, ...] = ()
    title: str | None = None  # the project's title in Label Studio, once it could be asked

    def snapshot(self, settings) -> dict:
        """For the status page: never the token itself, only where it comes from."""
        target = self.access.under(settings.label_studio_url, settings.label_studio_api_key)
        return {"project": self.project, "title": self.title, "model_versions": list(self.versions),
                "label_studio": {"url": target.url, "key_source": target.key_source, "check": self.key_check},
                "skipped_labels": list(self.skipped_labels), "last_setup_at": self.last_setup_at}

    def add_version(self, version: str) -> bool:
        """True when the version is new to the project."""
        if version in self.versions:
            return False
        self.versions.append(version)
        del self.versions[:-MAX_VERSIONS_PER_PROJECT]
        return True

    def to_json(self) -> str:
        """What survives a restart: everything but the /setup token (a secret Label Studio sends again)."""
        return json.dumps({"project": self.project, "hostname": self.access.url, "label_config": self.label_config,
                           "versions": self.versions, "last_setup_at": self.last_setup_at, "title": self.title,
                           "skipped_labels": list(self.skipped_labels)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "ProjectRecord":
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        versions = data.get("versions")
        if not isinstance(data.get("project"), str) or not isinstance(versions, list):
            raise ValueError("no 'project' or 'versions'")
        # typed as the status document shows them (a hand-edited file must not break /status)
        setup_at, title, host = data.get("last_setup_at"), data.get("title"), data.get("hostname")
        return cls(data["project"], LabelStudioTarget.from_setup(host if isinstance(host, str) else None, None),
                   data.get("label_config"),
                   [str(v) for v in versions], float(setup_at) if isinstance(setup_at, (int, float)) else None,
                   None, tuple(str(s) for s in data.get("skipped_labels") or ()),
                   str(title) if title is not None else None)


@dataclass
class ServerState:
    predictor: object | None = None  # backend.serving.predictor.Predictor once loaded
    projects: dict[str, ProjectRecord] = field(default_factory=dict)
    pending_predicts: int = 0
    state_dir: str | None = None  # where project records are kept (STATE_DIR); None: memory only
    _save_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _path(self, key: str) -> Path | None:
        if self.state_dir is None:
            return None
        try:
            return ProjectStore(self.state_dir).project_dir(key) / "project.json"
        except StateError:  # an id that cannot be a directory name: kept in memory only
            return None

    def save(self, record: ProjectRecord) -> None:
        """Blocking (a file write): call it from a worker thread. A failure is logged, never raised."""
        path = self._path(record.project)
        if path is None:
            return
        with self._save_lock:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, record.to_json())
            except OSError as exc:
                log.error("project %s: could not keep its record in %s (%s); the versions it served are "
                          "forgotten at the next restart", record.project, path, exc)

    def load(self) -> list[str]:
        """Read the kept project records; returns one line per file that could not be read."""
        problems = []
        root = Path(self.state_dir) / "projects" if self.state_dir else None
        for path in sorted(root.glob("*/project.json")) if root and root.is_dir() else []:
            try:
                record = ProjectRecord.from_json(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, TypeError, UnicodeDecodeError) as exc:
                problems.append(f"{path} could not be read ({exc}); delete it (the project's next /setup "
                                "writes it again, without the versions served before)")
                continue
            self.projects[record.project] = record
        return problems

    def last_setup_project(self) -> ProjectRecord | None:
        records = [r for r in self.projects.values() if r.last_setup_at is not None]
        return max(records, key=lambda r: r.last_setup_at) if records else None

    def project(self, project) -> ProjectRecord | None:
        if project is None:
            return None
        return self.projects.get(project_key(project))

    def record_setup(self, project, label_config: str, version: str, hostname: str | None,
                     access_token: str | None, skipped: tuple[str, ...] = ()) -> tuple[ProjectRecord | None, bool]:
        """The project's record and whether what is kept on disk changed (then `save` it)."""
        if project is None:
            return None, False
        key = project_key(project)
        record = self.projects.setdefault(key, ProjectRecord(key))
        kept = record.to_json()
        record.access = LabelStudioTarget.from_setup(hostname, access_token)
        record.label_config = label_config
        record.skipped_labels = tuple(skipped)
        record.add_version(version)
        changed = record.to_json() != kept
        record.last_setup_at = time.time()
        return record, changed
