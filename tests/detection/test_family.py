"""Loading the Grounding DINO family: both architectures load right (as transformers' Auto classes), others are refused."""
from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from detection import ARCHITECTURES, Detector, DetectorConfig, ModelLoadError, rank_detections
from tests.detection.scenes import scene

NAMES = ["red square", "yellow circle", "sky", "person"]


def test_detections_equal_the_transformers_auto_model(family_model_dir, family_detector):
    """Our detections = the same post-processing on the unmodified Auto model's outputs for the checkpoint."""
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    assert family_detector.model_type == json.loads((family_model_dir / "config.json").read_text())["model_type"]
    processor = AutoProcessor.from_pretrained(family_model_dir)
    model = AutoModelForZeroShotObjectDetection.from_pretrained(family_model_dir).eval()
    image = scene((640, 480))  # Hugging Face's resize and the official one agree on this size (800×1066)
    prompt = family_detector.prompt(NAMES)
    (chunk,) = prompt.chunks
    inputs = processor(images=image, text=chunk.caption.text, return_tensors="pt")
    assert torch.equal(inputs["input_ids"], chunk.input_ids)
    with torch.inference_mode():
        outputs = model(**inputs)
    reference = rank_detections(outputs.logits, outputs.pred_boxes, chunk, [image.size], 100)[0]
    ours = family_detector.rank([image], prompt, num_select=100)[0]
    assert torch.equal(ours.labels, reference.labels)
    torch.testing.assert_close(ours.scores, reference.scores, rtol=0, atol=1e-4)
    torch.testing.assert_close(ours.boxes, reference.boxes, rtol=0, atol=0.05)


def test_mm_checkpoint_in_the_plain_class_would_be_another_model(tiny_mm_model_dir):
    """What the Auto loading prevents: the MM weights in GroundingDinoForObjectDetection give other scores."""
    from transformers import GroundingDinoForObjectDetection

    detector = Detector.load(DetectorConfig(model=str(tiny_mm_model_dir), device="cpu").with_levers(()))
    assert type(detector.model).__name__ == "MMGroundingDinoForObjectDetection"
    wrong = GroundingDinoForObjectDetection.from_pretrained(tiny_mm_model_dir).eval()
    image, chunk = scene((640, 480)), detector.prompt(NAMES).chunks[0]
    pixels = detector.pixels([image])
    with torch.inference_mode():
        logits = wrong(pixel_values=pixels.pixel_values, pixel_mask=pixels.pixel_mask, input_ids=chunk.input_ids,
                       attention_mask=chunk.attention_mask, token_type_ids=chunk.token_type_ids).logits
    ours, _ = detector.forward([image], chunk)
    finite = torch.isfinite(ours)
    assert (logits[finite] - ours[finite]).abs().max() > 1.0


def _copy(model_dir, tmp_path):
    return shutil.copytree(model_dir, tmp_path / "checkpoint")


def test_checkpoint_of_another_model_type_is_refused_by_name(tiny_model_dir, tmp_path):
    checkpoint = _copy(tiny_model_dir, tmp_path)
    config = json.loads((checkpoint / "config.json").read_text())
    config["model_type"] = "owlv2"
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError) as err:
        Detector.load(DetectorConfig(model=str(checkpoint), device="cpu"))
    message = str(err.value)
    assert f"'{checkpoint}'" in message
    assert "config.json says model_type 'owlv2': not a Grounding DINO family checkpoint" in message
    assert "'grounding-dino', 'mm-grounding-dino'" in message


def test_checkpoint_with_a_missing_weight_is_refused_naming_it(family_model_dir, tmp_path):
    checkpoint = _copy(family_model_dir, tmp_path)
    weights = load_file(checkpoint / "model.safetensors")
    del weights["model.level_embed"]
    save_file(weights, checkpoint / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError) as err:
        Detector.load(DetectorConfig(model=str(checkpoint), device="cpu"))
    message = str(err.value)
    assert f"'{checkpoint}'" in message and "1 missing weight: model.level_embed" in message


def test_checkpoint_with_an_unexpected_weight_is_refused_naming_it(tiny_model_dir, tmp_path):
    checkpoint = _copy(tiny_model_dir, tmp_path)
    weights = load_file(checkpoint / "model.safetensors")
    weights["model.extra_head.weight"] = torch.zeros(3)
    save_file(weights, checkpoint / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="1 unexpected weight: model.extra_head.weight"):
        Detector.load(DetectorConfig(model=str(checkpoint), device="cpu"))


def test_grounding_dino_weights_under_an_mm_config_are_refused(tiny_model_dir, tmp_path):
    """The MM head has a learned bias per class head that a Grounding DINO checkpoint lacks."""
    checkpoint = _copy(tiny_model_dir, tmp_path)
    config = json.loads((checkpoint / "config.json").read_text())
    config["model_type"] = "mm-grounding-dino"
    config["architectures"] = ["MMGroundingDinoForObjectDetection"]
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"do not match MMGroundingDinoForObjectDetection \(\d+ missing weights?: .*class_embed.*bias"):
        Detector.load(DetectorConfig(model=str(checkpoint), device="cpu"))


def test_a_model_object_of_another_type_is_refused():
    stranger = SimpleNamespace(config=SimpleNamespace(model_type="owlv2"))
    with pytest.raises(ModelLoadError, match="'owlv2'.*not a Grounding DINO family model"):
        Detector(stranger, SimpleNamespace(), DetectorConfig(device="cpu"))


def test_both_architectures_are_known_to_transformers():
    from transformers import AutoConfig

    for model_type, architecture in ARCHITECTURES.items():
        assert AutoConfig.for_model(model_type).model_type == model_type
        assert architecture.transformers_class(architecture.model_class).__name__ == architecture.model_class


def test_an_unreachable_hub_fails_in_seconds_with_the_offline_hint(monkeypatch):
    """No network: the hub client is switched to its cache before any download is tried (no minutes of
    retries); a model that is not cached is refused at once with how to get it."""
    import socket
    import time

    from huggingface_hub import constants

    from detection import ModelLoadError
    from detection.family import load_checkpoint

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    tried = []

    def no_route(address, timeout=None):
        tried.append(address)
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_route)
    started = time.monotonic()
    with pytest.raises(ModelLoadError) as refused:
        load_checkpoint("IDEA-Research/not-cached-anywhere")
    assert time.monotonic() - started < 10
    assert tried and tried[0][0] == "huggingface.co"
    message = str(refused.value)
    assert "hub cannot be reached" in message and "hf download IDEA-Research/not-cached-anywhere --local-dir DIR" in message
    assert constants.HF_HUB_OFFLINE is True
