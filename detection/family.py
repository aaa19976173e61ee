"""The Grounding DINO family: which checkpoints the core runs, how they load, and what a refusal says.

Two transformers architectures share the core's prompt and post-processing rules:

- `grounding-dino` (IDEA-Research grounding-dino-tiny/base): `GroundingDinoForObjectDetection`;
- `mm-grounding-dino` (openmmlab-community MM-GDINO, iSEE-Laboratory LLMDet): `MMGroundingDinoForObjectDetection`,
  whose class head scales the logits by 1/sqrt(d), adds a learned bias and has one head per decoder
  layer. The core never re-derives logits: it reads `outputs.logits`, so either head is used as trained.

Both load through transformers' Auto classes. Loading an MM checkpoint into the plain class "works" with a
warning and gives a different model (0 AP, no error); here a checkpoint of another type, or one whose
weights do not match its class (missing, unexpected or mis-shaped), is a `ModelLoadError` that names the
checkpoint and what is wrong.
"""
from __future__ import annotations

import importlib
import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """The weights or processor could not be loaded; the message says what to do."""


@dataclass(frozen=True)
class Architecture:
    """One transformers architecture of the family: where its classes live and what they are called."""

    model_type: str  # config.json's model_type
    modeling_module: str  # the transformers module that defines the architecture's layers
    class_prefix: str  # "GroundingDino" / "MMGroundingDino": the prefix of its layer classes
    model_class: str  # what AutoModelForZeroShotObjectDetection builds for it

    def transformers_class(self, name: str) -> type:
        """A class of this architecture's modeling module; LookupError saying what is missing otherwise.

        The speed levers find the layers they patch by class: a transformers release that renames or
        moves one makes that lever report why it is not installed, instead of silently matching nothing.
        """
        try:
            module = importlib.import_module(self.modeling_module)
        except ImportError as exc:
            raise LookupError(f"transformers {_transformers_version()} has no module {self.modeling_module} ({exc})") from None
        cls = getattr(module, name, None)
        if not isinstance(cls, type):
            raise LookupError(f"transformers {_transformers_version()} has no class {name} in {self.modeling_module}")
        return cls

    def layer_class(self, suffix: str) -> type:
        """`layer_class("BiMultiHeadAttention")` -> GroundingDinoBiMultiHeadAttention / MMGroundingDino..."""
        return self.transformers_class(self.class_prefix + suffix)


ARCHITECTURES: dict[str, Architecture] = {
    a.model_type: a
    for a in (
        Architecture(
            model_type="grounding-dino",
            modeling_module="transformers.models.grounding_dino.modeling_grounding_dino",
            class_prefix="GroundingDino",
            model_class="GroundingDinoForObjectDetection",
        ),
        Architecture(
            model_type="mm-grounding-dino",
            modeling_module="transformers.models.mm_grounding_dino.modeling_mm_grounding_dino",
            class_prefix="MMGroundingDino",
            model_class="MMGroundingDinoForObjectDetection",
        ),
    )
}


def architecture_of(model) -> Architecture:
    """The family member a loaded model belongs to; ModelLoadError for any other model."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ModelLoadError(
            f"a model of type {model_type!r} ({type(model).__name__}) is not a Grounding DINO family model "
            f"(supported model types: {_supported()})"
        )
    return ARCHITECTURES[model_type]


def read_model_type(name: str, revision: str | None = None, what: str = "Grounding DINO model") -> str | None:
    """config.json's model_type of a hub id or local directory (what picks the detector family);
    ModelLoadError saying where to get the model (`what`, in words) when there is no config.json to read."""
    from transformers import PretrainedConfig

    use_cache_only_when_offline(name)
    try:
        config_dict, _ = PretrainedConfig.get_config_dict(name, revision=revision)
    except Exception as exc:  # OSError, hub errors: no config.json there
        raise ModelLoadError(_not_found(name, exc, what)) from exc
    if not config_dict:  # transformers reads a directory without config.json as an empty config
        raise ModelLoadError(_not_found(name, FileNotFoundError("no config.json"), what))
    return config_dict.get("model_type")


def load_checkpoint(name: str, revision: str | None = None):
    """(model, processor) of a hub id or local directory, refused with ModelLoadError unless it loads right."""
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    model_type = read_model_type(name, revision)
    if model_type not in ARCHITECTURES:
        raise ModelLoadError(
            f"could not load {name!r}: config.json says model_type {model_type!r}: not a Grounding DINO family "
            f"checkpoint (supported model types: {_supported()})"
        )
    architecture = ARCHITECTURES[model_type]
    try:
        model, info = AutoModelForZeroShotObjectDetection.from_pretrained(
            name, revision=revision, output_loading_info=True
        )
        processor = AutoProcessor.from_pretrained(name, revision=revision)
    except Exception as exc:  # missing weight/processor files, shape mismatches transformers refuses itself
        raise ModelLoadError(_not_found(name, exc)) from exc
    if type(model).__name__ != architecture.model_class:
        raise ModelLoadError(
            f"could not load {name!r}: model_type {model_type!r} built a {type(model).__name__}, expected "
            f"{architecture.model_class}; this transformers version maps the family differently"
        )
    problems = _weight_problems(info)
    if problems:
        raise ModelLoadError(
            f"could not load {name!r}: its weights do not match {architecture.model_class} "
            f"({'; '.join(problems)}). The checkpoint is damaged or saved from another architecture; "
            "re-download it or point at the right directory"
        )
    return model, processor


def _weight_problems(info: dict) -> list[str]:
    problems = []
    for key, what in (("missing_keys", "missing"), ("unexpected_keys", "unexpected"), ("mismatched_keys", "mis-shaped")):
        entries = sorted(str(k if not isinstance(k, tuple) else k[0]) for k in info.get(key) or ())
        if entries:
            shown = ", ".join(entries[:5]) + (f", ... ({len(entries) - 5} more)" if len(entries) > 5 else "")
            problems.append(f"{len(entries)} {what} weight{'s' if len(entries) != 1 else ''}: {shown}")
    errors = [str(e) for e in info.get("error_msgs") or ()]
    if errors:
        problems.append("load errors: " + " | ".join(errors[:3]))
    return problems


def use_cache_only_when_offline(name: str, timeout: float = 3.0) -> bool:
    """A hub id on a machine that cannot reach the hub: switch the hub client to its cache now.

    Without this, every file of a model that is not cached is retried with back-off (minutes) before
    the error; with it, a cached model loads at once and a missing one fails in seconds with the
    offline hint. Returns True when it switched. Local directories and HF_HUB_OFFLINE=1 need nothing.
    """
    from huggingface_hub import constants

    if Path(name).expanduser().exists() or constants.HF_HUB_OFFLINE:
        return False
    endpoint = urlparse(constants.ENDPOINT)
    host, port = endpoint.hostname, endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return False
    except OSError as exc:
        log.warning("the Hugging Face hub (%s) is unreachable (%s): using only the local cache for %s",
                    constants.ENDPOINT, exc, name)
        constants.HF_HUB_OFFLINE = True
        return True


def _not_found(name: str, exc: Exception, what: str = "Grounding DINO model") -> str:
    local = Path(name).expanduser()
    hint = (
        f"the directory {local} has no loadable {what} (config.json, weights and "
        "processor files saved with save_pretrained)"
        if local.exists()
        else ("it is not in this machine's Hugging Face cache and the hub cannot be reached (offline); "
              if _offline() else "check the hub id, or if this machine is offline, ")
        + "download it where there is internet "
        f"(`hf download {name} --local-dir DIR`) and point MODEL "
        "(backend) or --model (evaluation) at DIR"
    )
    detail = " ".join(str(exc).split())
    return f"could not load {what} {name!r}: {hint}. ({type(exc).__name__}: {detail})"


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _supported() -> str:
    return ", ".join(repr(t) for t in ARCHITECTURES)


def _transformers_version() -> str:
    try:
        import transformers

        return transformers.__version__
    except ImportError:
        return "(not installed)"
