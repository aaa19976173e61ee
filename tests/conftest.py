import os
import sys
from pathlib import Path

# Tests never reach the hub: set before huggingface_hub is imported (it reads this once), and
# inherited by every subprocess the tests start.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # model_factory and other test helpers

from model_factory import build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A small random Grounding DINO saved with its processor, loaded by directory like a hub id."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-grounding-dino")


@pytest.fixture(scope="session")
def tiny_detector(tiny_model_dir):
    from backend.detection import Detector, DetectorConfig

    return Detector.load(DetectorConfig(model=str(tiny_model_dir), device="cpu"))
