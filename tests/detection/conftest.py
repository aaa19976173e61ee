"""The detection tests run on small random models of both family architectures."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.model_factory import with_input_size

FAMILY = ("grounding-dino", "mm-grounding-dino")
MODEL_DIR_FIXTURE = {"grounding-dino": "tiny_model_dir", "mm-grounding-dino": "tiny_mm_model_dir"}


@pytest.fixture(scope="session", params=FAMILY)
def family_model_dir(request) -> Path:
    """Each architecture's small random checkpoint (tests using it run once per architecture)."""
    return request.getfixturevalue(MODEL_DIR_FIXTURE[request.param])


@pytest.fixture(scope="session")
def family_detector(family_model_dir):
    from detection import Detector, DetectorConfig

    return Detector.load(DetectorConfig(model=str(family_model_dir), device="cpu"))


@pytest.fixture(scope="session")
def small_family_model_dir(family_model_dir, tmp_path_factory) -> Path:
    """The same checkpoint with its processor resizing to 320 (long side <= 533): quick forwards."""
    return with_input_size(family_model_dir, tmp_path_factory.mktemp("small") / family_model_dir.name, 320, 533)
