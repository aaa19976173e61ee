"""Fixtures for the evaluation toolkit tests: a fast copy of the tiny model and COCO-format datasets."""
from __future__ import annotations

from pathlib import Path

import pytest


from tests.evaluation.coco.drawn_dataset import make_dataset  # noqa: E402
from tests.model_factory import with_input_size  # noqa: E402


@pytest.fixture(scope="session")
def fast_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The session's tiny random model with a small input resolution (shorter side 160), so the many
    subprocess runs stay quick; everything else (weights, tokenizer, caption) is the fixture's."""
    return with_input_size(tiny_model_dir, tmp_path_factory.mktemp("models") / "tiny-grounding-dino-160", 160, 267)


@pytest.fixture(scope="session")
def coco_dataset(tmp_path_factory) -> tuple[Path, Path]:
    """(annotation file, image dir) of a small COCO-format dataset drawn with PIL."""
    return make_dataset(tmp_path_factory.mktemp("coco"), num_images=4)


@pytest.fixture(scope="session")
def fast_detector(fast_model_dir):
    from detection import Detector, DetectorConfig

    return Detector.load(DetectorConfig(model=str(fast_model_dir), device="cpu"))
