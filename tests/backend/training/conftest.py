"""Fixtures for the training tests: small synthetic datasets in the shapes domain."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.backend.training.synthetic import make_shapes_dataset


@pytest.fixture(scope="session")
def small_shapes(tmp_path_factory) -> tuple[Path, Path]:
    """(annotation file, image dir): 8 images of 96 x 96 pixels, for runs of a few steps."""
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes-small"), num_images=8, size=96, seed=1)


@pytest.fixture(scope="session")
def shapes24(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes24"), num_images=24, size=96, seed=3)
