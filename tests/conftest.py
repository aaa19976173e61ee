import os
from pathlib import Path

# Tests never reach the hub: set before huggingface_hub is imported (it reads this once), and
# inherited by every subprocess the tests start.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest


from tests.http_server import LocalServer  # noqa: E402
from tests.model_factory import build_tiny_mm_model, build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A small random Grounding DINO saved with its processor, loaded by directory like a hub id."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-grounding-dino")


@pytest.fixture(scope="session")
def tiny_sam_dir(tmp_path_factory) -> Path:
    """A small random SAM (v1: its processor needs only PIL) saved with its processor, loaded by directory."""
    from tests.sam_factory import build_tiny_mask_model

    return build_tiny_mask_model(tmp_path_factory.mktemp("models") / "tiny-sam", "sam")


@pytest.fixture(scope="session")
def tiny_mm_model_dir(tmp_path_factory) -> Path:
    """The same small settings as an MM-Grounding-DINO (model type mm-grounding-dino), loaded by directory."""
    return build_tiny_mm_model(tmp_path_factory.mktemp("models") / "tiny-mm-grounding-dino")


@pytest.fixture(scope="session")
def tiny_detector(tiny_model_dir):
    from detection import Detector, DetectorConfig

    return Detector.load(DetectorConfig(model=str(tiny_model_dir), device="cpu"))


@pytest.fixture
def make_settings(tiny_model_dir, tmp_path):
    """Backend settings as from the environment, on the tiny model and the CPU (state in a temp dir)."""
    from backend.settings import Settings

    def make(**env) -> Settings:
        base = {"GROUNDING_DINO_MODEL": str(tiny_model_dir), "DEVICE": "cpu", "BOX_THRESHOLD": "0.3",
                "STATE_DIR": str(tmp_path / "state")}
        base.update({k: str(v) for k, v in env.items()})
        return Settings.from_env(base)

    return make


@pytest.fixture
def make_client(tiny_detector, make_settings):
    """The real FastAPI app (tiny model) behind a TestClient; `detector=` swaps in a wrapped detector."""
    from fastapi.testclient import TestClient

    from backend.serving.predictor import Predictor
    from backend.app.server import create_app

    clients = []

    def make(detector=None, raise_server_exceptions=True, importer_factory=None, notes_client_factory=None, **env):
        settings = make_settings(**env)
        predictor = Predictor(detector or tiny_detector, settings)
        app = create_app(settings, predictor, importer_factory=importer_factory,
                         notes_client_factory=notes_client_factory)
        client = TestClient(app, raise_server_exceptions=raise_server_exceptions)
        client.__enter__()
        client.predictor = predictor
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def http_server():
    """A local HTTP server (tests/http_server.py) for the test to give routes: a stand-in Label Studio, a media host."""
    server = LocalServer()
    yield server
    server.close()
