"""Before/after figures with enough digits to carry the comparison (issue: "AP 0.0 -> 0.0; not adopted")."""
from __future__ import annotations

import pytest

from backend.training.numbers import MAX_DECIMALS, metric_change, pair_decimals


@pytest.mark.parametrize("before, after, expected", [
    (0.00014, 0.0, "AP 0.01 -> 0.00"),          # the case: differ, so they read differently
    (0.0, 0.097, "AP 0.0 -> 9.7"),
    (0.312, 0.3125, "AP 31.20 -> 31.25"),
    (0.25, 0.25, "AP 25.0 -> 25.0"),            # equal values read equal
    (0.0, 0.0, "AP 0.0 -> 0.0"),
    (0.5, 0.0000004, "AP 50.00000 -> 0.00004"),  # a non-zero value never reads as zero
])
def test_metric_change_shows_the_digits_the_comparison_needs(before, after, expected):
    assert metric_change("AP", before, after) == expected


def test_the_name_of_the_metric_is_said():
    assert metric_change("AP50", 0.1, 0.2) == "AP50 10.0 -> 20.0"


def test_pair_decimals_reads_different_values_differently_and_stops_at_its_cap():
    for before, after in [(0.014, 0.0), (1.23456, 1.23457), (99.9, 99.95)]:
        d = pair_decimals(before, after)
        assert f"{before:.{d}f}" != f"{after:.{d}f}" and f"{before:.{d - 1}f}" == f"{after:.{d - 1}f}"
    assert pair_decimals(1.0, 1.0 + 1e-12) == MAX_DECIMALS
