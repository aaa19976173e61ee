"""Why a task's image could not be obtained: the errors of media fetching and of its SSRF guard.

Their own module so that the fetcher (`labelstudio.media`) and the guard (`labelstudio.destinations`)
raise the same types without importing each other.
"""
from __future__ import annotations


class MediaError(Exception):
    """A task's image could not be obtained; the message tells the user what to do.

    What a labeller can act on comes first, the technical detail (status code, URL) after it in parentheses:
    Label Studio's Data Manager shows a data field (FAILED_TASK_FIELD) cut to about three lines."""


class KeyRefusedError(MediaError):
    """Label Studio answered that the key is not valid (HTTP 401/403, or a refresh token it refuses)."""


class LabelStudioUnreachableError(MediaError):
    """Label Studio did not answer at the address in use (connection refused, DNS, timeout)."""
