"""The detector-family interface: what the products (backend, evaluation, training) may ask of a detector,
whatever model family runs behind it.

A family is one module that registers a `DetectorFamily` here (Grounding DINO: `detector.py`). It
is recognised by config.json's `model_type`; `load_detector(config)` reads that, picks the family and
returns its `FamilyDetector`. A second family (SAM 3, say) is one new module, imported by the package's
`__init__` so that it registers;
the predictor, the evaluation runner and training talk only to what is defined here.

Optional abilities are declared in `Capabilities`, so the products can refuse or skip what a family
cannot do with a message naming the family, instead of failing inside it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

from .family import ModelLoadError, read_model_type

if TYPE_CHECKING:  # type names only: the families import this module, not the other way round
    import torch
    from PIL import Image

    from .detector import DetectorConfig
    from .postprocess import Detections
    from .prompt import Prompt


@dataclass(frozen=True)
class Capabilities:
    """What a family can do beyond "phrases in, scored boxes out"."""

    own_masks: bool = False  # `detect` returns Detections with masks: no second (SAM) stage is needed
    exemplar_prompts: bool = False  # boxes drawn on the image as prompts ("find all like this")
    fine_tuning: bool = False  # Start Training / `python -m backend.train` can fine-tune it
    phrases_per_class: str = "several"  # "several": a class is scored as the max over its phrases; "one"


class FamilyDetector(Protocol):
    """A loaded detector of some family: the only calls the products make.

    Two modes over the same scores: `detect` (labelling: each box's best class above a threshold, for
    pre-annotation) and `rank` (evaluation: the top `num_select` boxes x classes, no threshold).
    """

    family: "DetectorFamily"
    model_type: str  # config.json's model_type
    device: "torch.device"
    model_revision: str | None  # the checkpoint's commit hash when known (run fingerprints)
    lever_report: dict[str, str]  # {speed lever: "active" | "off" | "not installed: <why>"} (/status, metrics.json)
    warnings: list[str]  # what the start-up log warned about, for /status
    preprocessing: str  # how images become pixels, in words (metrics.json)

    def prompt(self, classes: Sequence[str | Sequence[str]], chunk_size: int | None = None) -> "Prompt":
        """The prompt for a label set: one or several phrases per class; raises PromptError when unusable."""

    def describe_prompt(self, prompt: "Prompt") -> dict:
        """JSON-able facts of a prompt for a run's metrics.json (Grounding DINO: its chunks and captions)."""

    def detect(self, images: Sequence["Image.Image"], prompt: "Prompt", box_threshold: float,
               nms_iou: float | None = None) -> "list[Detections]":
        """Labelling mode: per image the boxes over `box_threshold` with their best class.

        A family with `capabilities.own_masks` also takes `masks=True` (keyword) and then returns
        detections with `.masks` ((N, H, W) bool at the image's size); callers pass it to no other family."""

    def rank(self, images: Sequence["Image.Image"], prompt: "Prompt", num_select: int = 300) -> "list[Detections]":
        """Ranking mode (evaluation): per image the top `num_select` scored boxes, no threshold (a family's
        own default when not given; `masks=True` as for `detect`, own_masks families only)."""


class ExemplarDetector(FamilyDetector, Protocol):
    """A detector whose family has `capabilities.exemplar_prompts`: "find all like this"."""

    def find_like(self, image: "Image.Image", positive: Sequence[float], negatives: Sequence[Sequence[float]] = (),
                  label: int = 0, threshold: float | None = None, masks: bool = True) -> "Detections":
        """Every instance in `image` like the example box `positive` (xyxy pixels) and unlike the
        `negatives`, labelled `label`, score over `threshold` (the family's default when None)."""


@dataclass(frozen=True)
class DetectorFamily:
    """One detector family: how to recognise its checkpoints, load them and what it can do."""

    name: str  # the family in words and in messages ("grounding-dino")
    title: str  # for messages ("Grounding DINO")
    model_types: tuple[str, ...]  # the config.json model_type values it loads
    default_box_threshold: float  # labelling mode's threshold when none is configured
    capabilities: Capabilities
    load: Callable[["DetectorConfig"], FamilyDetector]  # raises ModelLoadError with what to do
    # Put before a checkpoint name that does not start with it, in model_version ("sam3-<checkpoint>");
    # "" for a family whose checkpoint names say it (grounding-dino-tiny, mm_grounding_dino_..., llmdet_...).
    version_prefix: str = ""

    def version_name(self, checkpoint: str) -> str:
        """The family-and-checkpoint part of a model_version: the checkpoint's last path part, after
        `version_prefix` unless the name already starts with it (facebook/sam3 -> "sam3", DIR/tiny -> "sam3-tiny")."""
        name = PurePath(checkpoint).name or checkpoint
        if self.version_prefix and not name.lower().startswith(self.version_prefix.lower()):
            return f"{self.version_prefix}-{name}"
        return name


FAMILIES: list[DetectorFamily] = []  # filled by the family modules as the package is imported


def register(family: DetectorFamily) -> DetectorFamily:
    taken = {t for f in FAMILIES for t in f.model_types} & set(family.model_types)
    if taken:
        raise ValueError(f"model types {sorted(taken)} already belong to another family")
    FAMILIES.append(family)
    return family


def family_of_model_type(model_type: str | None) -> DetectorFamily | None:
    return next((f for f in FAMILIES if model_type in f.model_types), None)


def supported_model_types() -> str:
    return ", ".join(f"{t!r}" for f in FAMILIES for t in f.model_types)


MODEL_SETTING = "MODEL (backend) or --model (evaluation)"


def hub_status(exc: BaseException | None) -> int | None:
    """The HTTP status of a hub error anywhere in the exception's chain (transformers wraps them in OSError)."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, HfHubHTTPError):
            code = getattr(getattr(exc, "response", None), "status_code", None)
            if code is not None:
                return int(code)
            if isinstance(exc, GatedRepoError):
                return 403
        exc = exc.__cause__ or exc.__context__
    return None


def offline_recipe(name: str) -> str:
    return (f"to run offline, download it where there is internet (`hf download {name} --local-dir DIR`) and point "
            f"{MODEL_SETTING} at DIR")


def refused_access(name: str, status: int, what: str = "model") -> str:
    """A 401/403 from the hub: the checkpoint is gated (facebook/sam3): the licence, the login, the offline way."""
    return (
        f"could not load {what} {name!r}: the hub refused access ({status}): the checkpoint is gated. Accept "
        f"the licence on the model page (https://huggingface.co/{name}) and log in (`hf auth login` or HF_TOKEN) "
        f"with the account that accepted it; or {offline_recipe(name)}"
    )


def family_of_checkpoint(name: str, revision: str | None = None) -> DetectorFamily:
    """The family of a hub id or local directory, from its config.json's model_type (ModelLoadError else;
    a gated checkpoint the hub refuses says how to get access, whatever its family)."""
    try:
        model_type = read_model_type(name, revision, what="model")
    except ModelLoadError as exc:
        status = hub_status(exc.__cause__)
        if status in (401, 403):
            raise ModelLoadError(refused_access(name, status)) from None
        raise
    family = family_of_model_type(model_type)
    if family is None:
        raise ModelLoadError(
            f"could not load {name!r}: config.json says model_type {model_type!r}: not a checkpoint of a "
            f"detector family this core runs (supported model types: {supported_model_types()})"
        )
    return family


def load_detector(config: "DetectorConfig") -> FamilyDetector:
    """The detector of `config.model`, loaded by its family."""
    return family_of_checkpoint(config.model, config.revision).load(config)


def lever_report(detector) -> tuple[dict[str, str], list[str]]:
    """The detector's speed levers as installed ({lever: "active" | "off" | "not installed: <why>"}) and
    what its start-up warned about, as the backend's /status and a run's metrics.json report them
    (empty for a stand-in detector that has neither)."""
    return dict(getattr(detector, "lever_report", {}) or {}), list(getattr(detector, "warnings", []) or [])
