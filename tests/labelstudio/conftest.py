"""The media tests use the backend tests' local HTTP server and media directory."""
from tests.backend.conftest import http_server, media_root  # noqa: F401  (pytest fixtures)
