"""Settings from the environment (aliases, defaults, errors naming the variable) and `python -m backend`."""
import os
import subprocess
import sys

import httpx
import pytest

from backend.settings import Settings, SettingsError
from tests.backend.processes import REPO, run_backend
from tests.waiting import wait_until


def test_defaults():
    s = Settings.from_env({})
    assert (s.model, s.device, s.dtype, s.box_threshold, s.batch_size) == (
        "IDEA-Research/grounding-dino-tiny", "auto", "fp32", None, None)
    assert s.max_download_bytes == 50 * 1024 * 1024
    assert (s.label_studio_url, s.label_studio_api_key, s.allowed_media_hosts, s.auth_enabled) == (None, None, (), False)
    assert (s.polygon_max_parts, s.polygon_min_part_fraction) == (3, 0.05)


def test_values_and_aliases(tmp_path):
    s = Settings.from_env({
        "GROUNDING_DINO_MODEL": "/models/gd", "DEVICE": "cuda:1", "DTYPE": "BF16", "BOX_THRESHOLD": "0.25",
        "BATCH_SIZE": "8", "LABEL_STUDIO_HOST": "http://ls:8080/", "LABEL_STUDIO_ACCESS_TOKEN": "abc",
        "LOCAL_FILES_DOCUMENT_ROOT": str(tmp_path), "ALLOWED_MEDIA_HOSTS": "Minio:9000, 10.0.0.0/8,",
        "BASIC_AUTH_USER": "u", "BASIC_AUTH_PASS": "p", "LOG_LEVEL": "debug", "MAX_DOWNLOAD_BYTES": "1_000",
        "POLYGON_MAX_PARTS": "1", "POLYGON_MIN_PART_FRACTION": "0",
    })
    assert (s.polygon_max_parts, s.polygon_min_part_fraction) == (1, 0.0)
    assert (s.model, s.device, s.dtype, s.box_threshold, s.batch_size) == ("/models/gd", "cuda:1", "bf16", 0.25, 8)
    assert (s.label_studio_url, s.label_studio_api_key) == ("http://ls:8080", "abc")
    assert s.local_files_document_root == str(tmp_path)
    assert s.allowed_media_hosts == ("minio:9000", "10.0.0.0/8")
    assert s.auth_enabled and s.log_level == "DEBUG" and s.max_download_bytes == 1000
    # the primary names win over the aliases
    s = Settings.from_env({"LABEL_STUDIO_URL": "https://a", "LABEL_STUDIO_HOST": "https://b",
                           "LABEL_STUDIO_API_KEY": "k1", "LABEL_STUDIO_ACCESS_TOKEN": "k2"})
    assert (s.label_studio_url, s.label_studio_api_key) == ("https://a", "k1")


@pytest.mark.parametrize(
    "env, name",
    [
        ({"BOX_THRESHOLD": "high"}, "BOX_THRESHOLD"),
        ({"BOX_THRESHOLD": "1.5"}, "BOX_THRESHOLD"),
        ({"BOX_THRESHOLD": "nan"}, "BOX_THRESHOLD"),
        ({"BATCH_SIZE": "0"}, "BATCH_SIZE"),
        ({"BATCH_SIZE": "2.5"}, "BATCH_SIZE"),
        ({"DEVICE": "gpu"}, "DEVICE"),
        ({"DTYPE": "int8"}, "DTYPE"),
        ({"LABEL_STUDIO_URL": "localhost:8080"}, "LABEL_STUDIO_URL"),
        ({"LABEL_STUDIO_HOST": "ftp://x"}, "LABEL_STUDIO_HOST"),
        ({"LOCAL_FILES_DOCUMENT_ROOT": "/does/not/exist"}, "LOCAL_FILES_DOCUMENT_ROOT"),
        ({"LOCAL_FILES_DOCUMENT_ROOT": "/"}, "LOCAL_FILES_DOCUMENT_ROOT"),
        ({"BASIC_AUTH_USER": "u"}, "BASIC_AUTH_PASS"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"MAX_DOWNLOAD_BYTES": "-1"}, "MAX_DOWNLOAD_BYTES"),
        ({"DOWNLOAD_TIMEOUT": "0"}, "DOWNLOAD_TIMEOUT"),
        ({"POLYGON_MAX_PARTS": "0"}, "POLYGON_MAX_PARTS"),
        ({"POLYGON_MIN_PART_FRACTION": "25"}, "POLYGON_MIN_PART_FRACTION"),  # a fraction of the mask, not pixels
    ],
)
def test_bad_values_name_the_variable(env, name):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(env)


@pytest.mark.slow
def test_main_exits_with_a_clear_message(tmp_path):
    result = run_backend({"GROUNDING_DINO_MODEL": str(tmp_path), "DEVICE": "cpu"}, "--port", "1")
    assert result.returncode == 1
    assert f"could not load model {str(tmp_path)!r}: the directory" in result.stderr and "Traceback" not in result.stderr
    result = run_backend({"BOX_THRESHOLD": "x"})
    assert result.returncode == 2 and "BOX_THRESHOLD" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_main_serves(tiny_model_dir):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO", "BASIC_AUTH"))}
    env.update({"GROUNDING_DINO_MODEL": str(tiny_model_dir), "DEVICE": "cpu"})
    proc = subprocess.Popen([sys.executable, "-m", "backend", "--host", "127.0.0.1", "--port", str(port),
                             "--log-level", "WARNING"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        def health():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stdout.read()
                return None

        response = wait_until(health, "the backend's /health to answer", 120, 0.2,
                              holds=lambda answer: answer is not None)
        assert response.json()["status"] == "UP"
    finally:
        proc.terminate()
        proc.wait(10)
