"""Which checkpoints are SAM 3, how they load, and what a refusal says.

The family is recognised from config.json's `model_type`, never from the name:

| model_type | what it is | class |
|---|---|---|
| `sam3` | the image detector alone | `Sam3Model` |
| `sam3_video` | facebook/sam3 as the hub ships it: detector + video tracker, `detector_config` inside | `Sam3Model` (the tracker's weights are not loaded) |
| `sam3_lite_text` | EfficientSAM3 LiteText: SAM 3 with a MobileCLIP text encoder | `Sam3LiteTextModel` |

Loading never instantiates transformers' Sam3Processor (its image processor needs torchvision): the
tokenizer loads by itself (CLIP BPE) and the image processor's config is read as a dict
(`preprocess.Sam3Preprocessing.from_config`). facebook/sam3 is gated on the hub: a 401/403 says how to get
access and how to run offline, in one sentence, without a traceback.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..families import hub_status, offline_recipe, refused_access
from ..family import ModelLoadError, _weight_problems, use_cache_only_when_offline
from .preprocess import Sam3Preprocessing
from .text import VISUAL

# model_type -> (transformers model class, config class) of the detector it holds.
SAM3_MODEL_TYPES = {
    "sam3": ("Sam3Model", "Sam3Config"),
    "sam3_video": ("Sam3Model", "Sam3Config"),  # the detector's config is its `detector_config`
    "sam3_lite_text": ("Sam3LiteTextModel", "Sam3LiteTextConfig"),
}


@dataclass
class Sam3Checkpoint:
    """What the core needs of a SAM 3 checkpoint."""

    name: str
    model_type: str  # config.json's model_type (sam3, sam3_video, sam3_lite_text)
    model: object  # Sam3Model | Sam3LiteTextModel, eval mode, on the CPU
    tokenizer: object
    preprocessing: Sam3Preprocessing


def sam3_model_type(config_dict: dict) -> str | None:
    """The SAM 3 family member a config.json describes, or None when it is not one."""
    model_type = config_dict.get("model_type")
    if model_type == "sam3_video":
        detector = (config_dict.get("detector_config") or {}).get("model_type", "sam3")
        return "sam3_video" if detector == "sam3" else None
    return model_type if model_type in SAM3_MODEL_TYPES else None


def load_sam3(name: str, revision: str | None = None) -> Sam3Checkpoint:
    """A SAM 3 hub id or local directory, refused with ModelLoadError unless every part loads right."""
    import transformers
    from transformers import AutoTokenizer, PretrainedConfig
    from transformers.image_processing_base import ImageProcessingMixin

    use_cache_only_when_offline(name)
    try:
        config_dict, _ = PretrainedConfig.get_config_dict(name, revision=revision)
    except Exception as exc:  # OSError, hub errors: no config.json there, or no access to it
        raise ModelLoadError(load_failure(name, exc)) from None
    if not config_dict:  # transformers reads a directory without config.json as an empty config
        raise ModelLoadError(load_failure(name, FileNotFoundError("no config.json")))
    model_type = sam3_model_type(config_dict)
    if model_type is None:
        found = config_dict.get("model_type")
        if found == "sam3_video":
            found = f"sam3_video with a {config_dict.get('detector_config', {}).get('model_type')!r} detector"
        raise ModelLoadError(
            f"could not load {name!r}: config.json says model_type {found!r}: not a SAM 3 checkpoint "
            f"(supported model types: {', '.join(repr(t) for t in SAM3_MODEL_TYPES)})"
        )
    class_name, config_class_name = SAM3_MODEL_TYPES[model_type]
    model_class = getattr(transformers, class_name)
    detector_dict = config_dict["detector_config"] if model_type == "sam3_video" else config_dict
    try:
        config = getattr(transformers, config_class_name).from_dict(
            {k: v for k, v in detector_dict.items() if k not in ("model_type", "transformers_version", "architectures")}
        )
        model, info = model_class.from_pretrained(name, config=config, revision=revision, output_loading_info=True)
        tokenizer = AutoTokenizer.from_pretrained(name, revision=revision)
        processor_dict, _ = ImageProcessingMixin.get_image_processor_dict(name, revision=revision)
    except Exception as exc:  # missing weight/tokenizer files, shape mismatches transformers refuses itself
        raise ModelLoadError(load_failure(name, exc)) from None
    # Without tokenizer.json (or vocab.json + merges.txt) transformers still builds a CLIP tokenizer, with no
    # vocabulary: every word becomes the unknown token and the model answers an empty prompt, silently. (CLIP's
    # unknown token is also its end token: the check leaves the special tokens out.)
    unknown = getattr(tokenizer, "unk_token_id", None)
    if unknown is not None and unknown in tokenizer([VISUAL], add_special_tokens=False)["input_ids"][0]:
        raise ModelLoadError(
            f"could not load SAM 3 model {name!r}: its tokenizer has no vocabulary (the word {VISUAL!r} tokenizes to "
            "the unknown token): tokenizer.json, or vocab.json and merges.txt, is missing or damaged; re-download "
            "the checkpoint or point at the right directory"
        )
    problems = _weight_problems({**info, "unexpected_keys": _without_tracker(info.get("unexpected_keys"))})
    if problems:
        raise ModelLoadError(
            f"could not load {name!r}: its weights do not match {class_name} ({'; '.join(problems)}). The "
            "checkpoint is damaged or saved from another architecture; re-download it or point at the right directory"
        )
    preprocessing = Sam3Preprocessing.from_config(processor_dict.get("image_processor", processor_dict), repr(name))
    if preprocessing.size != int(model.config.image_size):
        raise ModelLoadError(
            f"could not load {name!r}: its processor resizes to {preprocessing.size}x{preprocessing.size} but the "
            f"model takes {model.config.image_size}x{model.config.image_size} images"
        )
    return Sam3Checkpoint(name, model_type, model.eval(), tokenizer, preprocessing)


def _without_tracker(keys) -> list:
    """facebook/sam3 carries the video tracker's weights beside the detector's: not a mismatch here."""
    return [k for k in keys or () if not str(k if not isinstance(k, tuple) else k[0]).startswith(("tracker_model.", "tracker_neck."))]


def load_failure(name: str, exc: BaseException) -> str:
    """One sentence: why `name` did not load and what to do (gated: the licence and login; offline: the recipe)."""
    status = hub_status(exc)
    if status in (401, 403):
        return refused_access(name, status, what="SAM 3 model")
    local = Path(name).expanduser()
    if local.exists():
        hint = (
            f"the directory {local} has no loadable SAM 3 model (config.json, weights, tokenizer and "
            "processor_config.json as the hub checkpoint has them)"
        )
    else:
        from huggingface_hub import constants

        hint = (
            "it is not in this machine's Hugging Face cache and the hub cannot be reached (offline); "
            if constants.HF_HUB_OFFLINE else "check the hub id, or "
        ) + offline_recipe(name)
    detail = " ".join(str(exc).split())
    return f"could not load SAM 3 model {name!r}: {hint}. ({type(exc).__name__}: {detail})"
