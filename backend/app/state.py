"""What the server remembers between requests: one typed record per Label Studio project.

Credentials are kept per project and used only for that project's tasks: a project that never called
/setup gets the configured LABEL_STUDIO_URL/LABEL_STUDIO_API_KEY or nothing, never another project's
token (several Label Studio instances or organisations may share one backend).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

MAX_VERSIONS_PER_PROJECT = 50


def project_key(project) -> str:
    """Label Studio sends `"<id>.<created timestamp>"`; the id alone names the project."""
    return str(project).split(".", 1)[0]


@dataclass
class LabelStudioAccess:
    """Where a project's Label Studio is and the key to call it with (from /setup or the settings)."""

    hostname: str | None = None
    access_token: str | None = None


@dataclass
class ProjectRecord:
    project: str
    access: LabelStudioAccess = field(default_factory=LabelStudioAccess)
    label_config: str | None = None
    versions: list[str] = field(default_factory=list)
    last_setup_at: float | None = None
    key_check: dict | None = None  # {"ok", "message", "checked_at"} from the last /setup
    skipped_labels: tuple[str, ...] = ()

    def snapshot(self, settings) -> dict:
        """For the status page: never the token itself, only where it comes from."""
        url = settings.label_studio_url or self.access.hostname
        source = "LABEL_STUDIO_API_KEY" if settings.label_studio_api_key else ("/setup" if self.access.access_token else None)
        return {"project": self.project, "model_versions": list(self.versions),
                "label_studio": {"url": url, "key_source": source, "check": self.key_check},
                "skipped_labels": list(self.skipped_labels), "last_setup_at": self.last_setup_at}

    def add_version(self, version: str) -> None:
        if version not in self.versions:
            self.versions.append(version)
            del self.versions[:-MAX_VERSIONS_PER_PROJECT]


@dataclass
class ServerState:
    predictor: object | None = None  # backend.serving.predictor.Predictor once loaded
    projects: dict[str, ProjectRecord] = field(default_factory=dict)
    pending_predicts: int = 0

    def last_setup_project(self) -> ProjectRecord | None:
        records = [r for r in self.projects.values() if r.last_setup_at is not None]
        return max(records, key=lambda r: r.last_setup_at) if records else None

    def project(self, project) -> ProjectRecord | None:
        if project is None:
            return None
        return self.projects.get(project_key(project))

    def record_setup(self, project, label_config: str, version: str, hostname: str | None,
                     access_token: str | None) -> ProjectRecord | None:
        if project is None:
            return None
        key = project_key(project)
        record = self.projects.setdefault(key, ProjectRecord(key))
        record.access = LabelStudioAccess(hostname, access_token)
        record.label_config = label_config
        record.last_setup_at = time.time()
        record.add_version(version)
        return record
