"""Waiting for a condition in a test, with a deadline: the one poll loop of the suite.

A test waits for what it needs (a job ended, a server answers, a file appeared), never for a fixed time:
fast machines do not wait longer than needed, slow ones get up to the deadline, and a failure says what
was awaited and what was seen last.
"""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(probe: Callable[[], T], what: str, timeout: float = 60.0, interval: float = 0.05,
               holds: Callable[[T], object] = bool) -> T:
    """Call `probe` every `interval` s until `holds(value)` (by default: the value is truthy) and return that
    value; after `timeout` s fail with an AssertionError naming `what` and the last value. The probe is
    called at least once, also after the deadline; an exception from it (e.g. "the process exited") ends
    the wait at once."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if holds(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}; last seen: {value!r:.2000}")
        time.sleep(interval)
