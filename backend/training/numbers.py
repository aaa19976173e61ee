"""Numbers in training messages, with as many digits as the decision they carry needs.

"held-out AP 0.0 -> 0.0; not adopted (worse)" contradicts itself when the values are 0.014 and 0: a
before/after pair is shown with the fewest decimals (at least ``min_decimals``) at which the two
figures differ exactly when the values differ, and no non-zero value reads as zero.
"""
from __future__ import annotations

MAX_DECIMALS = 8


def pair_decimals(before: float, after: float, min_decimals: int = 1) -> int:
    """The decimals that show ``before`` and ``after`` truthfully side by side."""
    for decimals in range(min_decimals, MAX_DECIMALS + 1):
        b, a = f"{before:.{decimals}f}", f"{after:.{decimals}f}"
        if (b == a) != (before == after):
            continue  # different values that read the same
        if any(v != 0 and float(s) == 0 for v, s in ((before, b), (after, a))):
            continue  # a non-zero value that reads as zero
        return decimals
    return MAX_DECIMALS


def metric_change(name: str, before: float, after: float, scale: float = 100.0) -> str:
    """``"AP 0.014 -> 0.000"``: a COCO metric (a fraction) before and after, in points (x ``scale``)."""
    b, a = scale * before, scale * after
    decimals = pair_decimals(b, a)
    return f"{name} {b:.{decimals}f} -> {a:.{decimals}f}"
