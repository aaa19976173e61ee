"""Durations and rates in words for people: `3 min 20 s`, `18.8 tasks/s`.

One home below the HTTP app and the training service, which both say how long work takes: the status page
(uptimes, ETAs, job rates) and a training run's estimate in its status message.
"""
from __future__ import annotations

DURATION_UNITS = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))


def format_duration(seconds: float | None) -> str:
    """`3 min 20 s`, `2 h 5 min`, `4 d 1 h`: the two largest units, for ETAs, uptimes and ages."""
    if seconds is None:
        return "—"
    seconds = max(0.0, float(seconds))
    if seconds < 1:
        return "< 1 s"
    total = int(round(seconds))
    major = next(i for i, (_, size) in enumerate(DURATION_UNITS) if total >= size or size == 1)
    name, size = DURATION_UNITS[major]
    value, rest = divmod(total, size)
    text = f"{value} {name}"
    if major + 1 < len(DURATION_UNITS):
        minor_name, minor_size = DURATION_UNITS[major + 1]
        if rest // minor_size:
            text += f" {rest // minor_size} {minor_name}"
    return text


def format_rate(per_second: float | None, unit: str = "tasks") -> str:
    """Per second from one `unit` a second up, else per minute: `18.8 tasks/s`, `15.0 tasks/min`."""
    if per_second is None:
        return "—"
    if per_second >= 1:
        return f"{per_second:.1f} {unit}/s"
    return f"{per_second * 60:.1f} {unit}/min"
