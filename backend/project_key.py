"""How the backend names a Label Studio project: below the HTTP app, serving and training, which all key
their per-project records (state, engines, files under STATE_DIR) by it."""
from __future__ import annotations


def project_key(project) -> str:
    """Label Studio sends `"<id>.<created timestamp>"`; the id alone names the project."""
    return str(project).split(".", 1)[0]
