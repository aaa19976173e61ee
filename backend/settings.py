"""Typed settings of the ML backend, read from the environment.

Every variable is documented in the README (section "Label Studio ML backend"). A bad value raises
`SettingsError` naming the variable, so the server refuses to start with a message a user can act on.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Mapping

from detection import DEFAULT_MODEL
from labelstudio import environment

MB = 1024 * 1024


class SettingsError(ValueError):
    """A configuration value that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    # MODEL (alias GROUNDING_DINO_MODEL; MODEL wins when both are set): a checkpoint of any detector family
    # (Grounding DINO or SAM 3), recognised by its config.json.
    model: str = DEFAULT_MODEL
    device: str = "auto"
    # Several devices in one backend (one model each, work spread over them): e.g. ("cuda:0", "cuda:1").
    # Empty: DEVICE, or every visible GPU when DEVICE is auto/cuda (backend/serving/devices.py).
    devices: tuple[str, ...] = ()
    dtype: str = "fp32"
    # None: the model family's default (Grounding DINO 0.35, SAM 3 0.5): `Predictor.box_threshold`.
    box_threshold: float | None = None
    nms_iou: float | None = None
    # None: 1 on the CPU (padding costs more than batching saves there, and batch 1 is exact),
    # 4 on a GPU, where batching is the main speed lever.
    batch_size: int | None = None
    label_studio_url: str | None = None
    label_studio_api_key: str | None = None
    local_files_document_root: str | None = None
    allowed_media_hosts: tuple[str, ...] = ()
    basic_auth_user: str | None = None
    basic_auth_pass: str | None = None
    log_level: str = "INFO"
    max_download_bytes: int = 50 * MB
    max_image_pixels: int = 100_000_000
    download_timeout: float = 30.0
    max_pending_predicts: int = 16
    # Label Studio's own variable and default: how long it waits for a /predict answer.
    ml_timeout_predict: float = 100.0
    # Optional: the name of a task data field that receives a failed task's reason (visible and filterable
    # as a Data Manager column; Label Studio 1.23 Community has no comments API). Empty: off.
    failed_task_field: str | None = None
    # Where what a project teaches the model is kept (learned thresholds, fine-tuned models): a volume in compose.
    state_dir: str = "state"
    # Fine-tuning steps and shortest image edge; None: the training device's defaults (backend/training/job.py:
    # 1000 steps at the model's own size on a GPU, 200 at 512 px on the CPU).
    train_steps: int | None = None
    train_image_size: int | None = None
    # The SAM-family mask model for <BrushLabels>/<PolygonLabels> and smart tools (hub id or directory).
    # None: DEFAULT_SAM_MODEL, loaded on first need (backend/serving/mask_stage.py); set: loaded at start.
    sam_model: str | None = None
    # Polygon pre-labels: parts kept per mask (the largest always) and the smallest further part, as a
    # fraction of the mask's pixels (backend/regions/polygon.py): a reviewer never gets hundreds of slivers.
    polygon_max_parts: int = 3
    polygon_min_part_fraction: float = 0.05

    @property
    def predict_deadline(self) -> float:
        """When /predict answers with what is finished: safely before Label Studio gives up (network,
        JSON encoding and Label Studio's own saving need the rest)."""
        return max(0.5, self.ml_timeout_predict - max(2.0, 0.15 * self.ml_timeout_predict))

    @property
    def auth_enabled(self) -> bool:
        return bool(self.basic_auth_user)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        get = _Reader(env)
        settings = cls(
            model=model_setting(env),
            device=get.choice_prefix("DEVICE", "auto", ("auto", "cpu", "cuda", "mps")),
            devices=get.devices("DEVICES"),
            dtype=get.choice("DTYPE", "fp32", ("fp32", "bf16", "fp16")),
            box_threshold=get.float("BOX_THRESHOLD", None, lo=0.0, hi=1.0),
            nms_iou=get.float("NMS_IOU", None, lo=0.0, hi=1.0),
            batch_size=get.int("BATCH_SIZE", None, lo=1, hi=1024),
            label_studio_url=label_studio_url(env),
            label_studio_api_key=label_studio_api_key(env),
            local_files_document_root=get.directory("LOCAL_FILES_DOCUMENT_ROOT"),
            allowed_media_hosts=get.list("ALLOWED_MEDIA_HOSTS"),
            basic_auth_user=get.str("BASIC_AUTH_USER"),
            basic_auth_pass=get.str("BASIC_AUTH_PASS"),
            log_level=get.choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), upper=True),
            max_download_bytes=get.int("MAX_DOWNLOAD_BYTES", 50 * MB, lo=1),
            max_image_pixels=get.int("MAX_IMAGE_PIXELS", 100_000_000, lo=1),
            download_timeout=get.float("DOWNLOAD_TIMEOUT", 30.0, lo=0.1, hi=3600.0),
            max_pending_predicts=get.int("MAX_PENDING_PREDICTS", 16, lo=1),
            ml_timeout_predict=get.float("ML_TIMEOUT_PREDICT", 100.0, lo=1.0, hi=86400.0),
            failed_task_field=get.identifier("FAILED_TASK_FIELD"),
            state_dir=get.str("STATE_DIR") or "state",
            train_steps=get.int("TRAIN_STEPS", None, lo=1, hi=1_000_000),
            train_image_size=get.int("TRAIN_IMAGE_SIZE", None, lo=64, hi=4096),
            sam_model=get.str("SAM_MODEL"),
            polygon_max_parts=get.int("POLYGON_MAX_PARTS", 3, lo=1, hi=1000),
            polygon_min_part_fraction=get.float("POLYGON_MIN_PART_FRACTION", 0.05, lo=0.0, hi=1.0),
        )
        _check_devices(settings.device, settings.devices)
        if bool(settings.basic_auth_user) != bool(settings.basic_auth_pass):
            raise SettingsError(
                "BASIC_AUTH_USER and BASIC_AUTH_PASS must be set together (both for HTTP Basic auth, or neither)"
            )
        return settings


def model_setting(environ: Mapping[str, str]) -> str:
    """MODEL, else its older name GROUNDING_DINO_MODEL, else the default. MODEL wins when both are set
    (a warning names both when they differ)."""
    get = _Reader(environ)
    model, legacy = get.str("MODEL"), get.str("GROUNDING_DINO_MODEL")
    if model and legacy and model != legacy:
        logging.getLogger(__name__).warning("MODEL=%s and GROUNDING_DINO_MODEL=%s are both set: using MODEL (%s); "
                                            "unset GROUNDING_DINO_MODEL", model, legacy, model)
    return model or legacy or DEFAULT_MODEL


def label_studio_url(environ: Mapping[str, str]) -> str | None:
    """LABEL_STUDIO_URL (alias LABEL_STUDIO_HOST), read by the adapters' one rule (`labelstudio.environment`)."""
    try:
        return environment.label_studio_url(environ)
    except environment.LabelStudioEnvError as exc:
        raise SettingsError(str(exc)) from None


def label_studio_api_key(environ: Mapping[str, str]) -> str | None:
    """LABEL_STUDIO_API_KEY (alias LABEL_STUDIO_ACCESS_TOKEN)."""
    return environment.label_studio_api_key(environ)


class _Reader:
    def __init__(self, env: Mapping[str, str]):
        self.env = env

    def raw(self, *names: str) -> tuple[str, str | None]:
        for name in names:
            value = self.env.get(name)
            if value is not None and value.strip() != "":
                return name, value.strip()
        return names[0], None

    def str(self, *names: str) -> str | None:
        return self.raw(*names)[1]

    def int(self, name: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
        _, value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value.replace("_", ""))
        except ValueError:
            raise SettingsError(f"{name}={value!r} is not a whole number") from None
        _check_range(name, number, lo, hi)
        return number

    def float(self, name: str, default: float | None, lo: float | None = None, hi: float | None = None):
        _, value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise SettingsError(f"{name}={value!r} is not a number") from None
        if number != number:  # NaN
            raise SettingsError(f"{name}={value!r} is not a number")
        _check_range(name, number, lo, hi)
        return number

    def choice(self, name: str, default: str, choices: tuple[str, ...], upper: bool = False) -> str:
        _, value = self.raw(name)
        if value is None:
            return default
        value = value.upper() if upper else value.lower()
        if value not in choices:
            raise SettingsError(f"{name}={value!r} is not one of {', '.join(choices)}")
        return value

    def choice_prefix(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        _, value = self.raw(name)
        if value is None:
            return default
        value = value.lower()
        if not _is_device(value, choices):
            raise SettingsError(f"{name}={value!r} is not one of auto, cpu, cuda, cuda:N, mps")
        return value

    def devices(self, name: str) -> tuple[str, ...]:
        """A comma-separated list of devices (`cuda:0,cuda:1`); `cpu,cpu` runs two models on the CPU."""
        _, value = self.raw(name)
        if value is None:
            return ()
        items = [item.strip().lower() for item in value.split(",")]
        for item in items:
            if not _is_device(item, ("cpu", "cuda", "mps")):
                shown = repr(item) if item else "an empty entry"
                raise SettingsError(f"{name}={value!r}: {shown} is not a device (cpu, cuda, cuda:N or mps, "
                                    "comma-separated, e.g. DEVICES=cuda:0,cuda:1)")
        return tuple(items)

    def url(self, *names: str) -> str | None:
        name, value = self.raw(*names)
        if value is None:
            return None
        try:
            return environment.checked_url(name, value)
        except environment.LabelStudioEnvError as exc:
            raise SettingsError(str(exc)) from None

    def directory(self, name: str) -> str | None:
        _, value = self.raw(name)
        if value is None:
            return None
        path = os.path.abspath(os.path.expanduser(value))
        if path == os.path.abspath(os.sep):
            raise SettingsError(f"{name}=/ would expose every file on this machine: point it at the media directory")
        if not os.path.isdir(path):
            raise SettingsError(f"{name}={value!r} is not an existing directory")
        return path

    def identifier(self, name: str) -> str | None:
        _, value = self.raw(name)
        if value is None:
            return None
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", value):
            raise SettingsError(f"{name}={value!r} must be a field name of letters, digits and _ (e.g. prelabel_error)")
        return value

    def list(self, name: str) -> tuple[str, ...]:
        _, value = self.raw(name)
        if value is None:
            return ()
        return tuple(item.strip().lower() for item in value.split(",") if item.strip())


def _is_device(value: str, choices: tuple[str, ...]) -> bool:
    base, colon, index = value.partition(":")
    return base in choices and (not colon or (base == "cuda" and index.isdigit()))


def _check_devices(device: str, devices: tuple[str, ...]) -> None:
    """DEVICES names every device; a DEVICE of another kind next to it is a contradiction, not a choice."""
    kind = device.split(":", 1)[0]
    if devices and kind != "auto" and any(d.split(":", 1)[0] != kind for d in devices):
        raise SettingsError(f"DEVICE={device} contradicts DEVICES={','.join(devices)}: DEVICES lists every "
                            "device the backend uses, so leave DEVICE unset (or auto) or make them agree")


def _check_range(name, number, lo, hi) -> None:
    if lo is not None and number < lo:
        raise SettingsError(f"{name}={number} is below the minimum {lo}")
    if hi is not None and number > hi:
        raise SettingsError(f"{name}={number} is above the maximum {hi}")


def configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for package in ("backend", "labelstudio", "detection", "runtime"):  # the backend's code, in its four packages
        logging.getLogger(package).setLevel(getattr(logging, level.upper(), logging.INFO))
