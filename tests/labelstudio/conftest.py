"""The media tests use the backend tests' media directory (the local HTTP server is tests/conftest.py's)."""
from tests.backend.conftest import media_root  # noqa: F401  (pytest fixture)
