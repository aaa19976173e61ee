"""Label Studio rectangle geometry: percent -> pixels, rotation clockwise about the top-left corner."""
from __future__ import annotations

import pytest

from labelstudio.regions.geometry import rectangle_box, rectangle_corners

# 200 x 100 px image; the rectangle x=50 %, y=20 %, 20 % x 30 % is 40 x 30 px at (100, 20).
IMAGE = (200, 100)


def test_unrotated_rectangle_is_its_stored_box_exactly():
    assert rectangle_box(50, 20, 20, 30, 0, *IMAGE) == (100.0, 20.0, 40.0, 30.0)


def test_rotation_is_clockwise_about_the_top_left_corner():
    # y points down: turning 90 degrees clockwise about (100, 20) sends the top edge (to x=140) down to
    # y=60 and the left edge (to y=50) left to x=70.
    corners = rectangle_corners(50, 20, 20, 30, 90, *IMAGE)
    assert corners.ravel().tolist() == pytest.approx([100, 20, 100, 60, 70, 60, 70, 20], abs=1e-9)
    assert rectangle_box(50, 20, 20, 30, 90, *IMAGE) == pytest.approx((70, 20, 30, 40), abs=1e-9)


def test_half_turn_puts_the_box_up_and_left_of_the_corner():
    assert rectangle_box(50, 50, 20, 30, 180, *IMAGE) == pytest.approx((60, 20, 40, 30), abs=1e-9)
