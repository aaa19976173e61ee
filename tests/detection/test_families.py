"""The detector-family interface: a checkpoint's family from config.json's model_type, loaded by it."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest

from detection import (
    FAMILIES,
    GROUNDING_DINO,
    SAM3,
    Capabilities,
    Detector,
    DetectorConfig,
    ModelLoadError,
    family_of_checkpoint,
    load_detector,
)
from detection.families import register


def test_grounding_dino_family_loads_both_architectures(tiny_model_dir, tiny_mm_model_dir):
    for model_dir, model_type in ((tiny_model_dir, "grounding-dino"), (tiny_mm_model_dir, "mm-grounding-dino")):
        assert family_of_checkpoint(str(model_dir)) is GROUNDING_DINO
        detector = load_detector(DetectorConfig(model=str(model_dir), device="cpu"))
        assert isinstance(detector, Detector) and detector.family is GROUNDING_DINO
        assert detector.model_type == model_type


def test_what_the_grounding_dino_family_declares():
    assert GROUNDING_DINO.model_types == ("grounding-dino", "mm-grounding-dino")
    assert GROUNDING_DINO.default_box_threshold == 0.35
    assert GROUNDING_DINO.capabilities == Capabilities(own_masks=False, exemplar_prompts=False,
                                                       fine_tuning=True, phrases_per_class="several")
    # model_version keeps the checkpoint's name, as before the interface
    assert GROUNDING_DINO.version_name("/models/grounding-dino-tiny/") == "grounding-dino-tiny"
    assert GROUNDING_DINO.version_name("IDEA-Research/grounding-dino-base") == "grounding-dino-base"


def test_a_checkpoint_of_no_family_is_refused_with_the_supported_types(tiny_model_dir, tmp_path):
    checkpoint = shutil.copytree(tiny_model_dir, tmp_path / "checkpoint")
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, "model_type": "owlv2"}))
    with pytest.raises(ModelLoadError) as err:
        load_detector(DetectorConfig(model=str(checkpoint), device="cpu"))
    assert str(err.value) == (
        f"could not load '{checkpoint}': config.json says model_type 'owlv2': not a checkpoint of a detector "
        "family this core runs (supported model types: 'grounding-dino', 'mm-grounding-dino', 'sam3', 'sam3_video', "
        "'sam3_lite_text')")


def test_a_model_type_belongs_to_one_family():
    with pytest.raises(ValueError, match="mm-grounding-dino"):
        register(replace(GROUNDING_DINO, name="other", model_types=("mm-grounding-dino",)))
    assert FAMILIES == [GROUNDING_DINO, SAM3]


def test_describe_prompt_names_the_chunks(tiny_detector):
    prompt = tiny_detector.prompt(["cat", ["red car", "truck"]])
    described = tiny_detector.describe_prompt(prompt)
    assert described == {"num_chunks": 1, "chunk_tokens": [prompt.chunks[0].num_tokens],
                         "captions": ["cat . red car . truck ."]}
