"""SAM 3 checkpoints load by their config's model type; anything else is a ModelLoadError naming it."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from detection.family import ModelLoadError
from detection.sam3 import Sam3Detector, Sam3DetectorConfig, load_sam3
from detection.sam3 import checkpoint as checkpoint_module
from tests.sam3_factory import build_tiny_sam3_video_layout, tiny_sam3_dir, tiny_sam3_model


@pytest.mark.parametrize("model_type, cls", [("sam3", "Sam3Model"), ("sam3_lite_text", "Sam3LiteTextModel")])
def test_each_model_type_loads_its_class_with_the_saved_weights(model_type, cls):
    loaded = load_sam3(str(tiny_sam3_dir(model_type)))
    assert loaded.model_type == model_type
    assert type(loaded.model).__name__ == cls
    reference = tiny_sam3_model(model_type).state_dict()
    assert reference.keys() == loaded.model.state_dict().keys()
    assert all(torch.equal(reference[k], v) for k, v in loaded.model.state_dict().items())
    assert (loaded.preprocessing.size, loaded.preprocessing.mean, loaded.preprocessing.std) == (56, (0.5,) * 3, (0.5,) * 3)


def test_the_hub_layout_of_facebook_sam3_loads_the_detector_and_ignores_the_tracker(tmp_path):
    loaded = load_sam3(str(build_tiny_sam3_video_layout(tmp_path / "sam3-video")))
    assert loaded.model_type == "sam3_video" and type(loaded.model).__name__ == "Sam3Model"
    reference = tiny_sam3_model("sam3").state_dict()
    assert all(torch.equal(reference[k], v) for k, v in loaded.model.state_dict().items())


def test_the_family_comes_from_the_config_not_the_name(tmp_path):
    renamed = tmp_path / "grounding-dino-tiny"  # a SAM 3 checkpoint under a misleading name
    shutil.copytree(tiny_sam3_dir(), renamed)
    assert load_sam3(str(renamed)).model_type == "sam3"
    other = tmp_path / "sam3-large"  # another model's config under a SAM 3 name
    shutil.copytree(tiny_sam3_dir(), other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "owlv2"}))
    with pytest.raises(ModelLoadError) as err:
        load_sam3(str(other))
    assert str(err.value) == (
        f"could not load {str(other)!r}: config.json says model_type 'owlv2': not a SAM 3 checkpoint "
        "(supported model types: 'sam3', 'sam3_video', 'sam3_lite_text')"
    )


def test_a_partial_checkpoint_is_refused_naming_the_missing_weights(tmp_path):
    from safetensors.torch import load_file, save_file

    partial = tmp_path / "partial"
    shutil.copytree(tiny_sam3_dir(), partial)
    weights = load_file(str(partial / "model.safetensors"))
    dropped = sorted(k for k in weights if k.startswith("dot_product_scoring.query_proj"))
    save_file({k: v for k, v in weights.items() if k not in dropped}, str(partial / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError) as err:
        load_sam3(str(partial))
    message = str(err.value)
    assert message.startswith(f"could not load {str(partial)!r}: its weights do not match Sam3Model (2 missing weights: ")
    assert all(name in message for name in dropped)
    assert "Traceback" not in message


def test_a_directory_without_a_model_says_what_is_missing(tmp_path):
    with pytest.raises(ModelLoadError) as err:
        load_sam3(str(tmp_path))
    assert str(err.value).startswith(
        f"could not load SAM 3 model {str(tmp_path)!r}: the directory {tmp_path} has no loadable SAM 3 model"
    )


def test_a_processor_config_the_core_cannot_follow_is_refused(tmp_path):
    odd = tmp_path / "bicubic"
    shutil.copytree(tiny_sam3_dir(), odd)
    config = json.loads((odd / "processor_config.json").read_text())
    config["image_processor"]["resample"] = 3
    (odd / "processor_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"not SAM 3's preprocessing \(resample 3 is not bilinear \(2\)\)"):
        load_sam3(str(odd))


def test_a_gated_checkpoint_says_accept_the_licence_and_log_in_with_the_offline_recipe(monkeypatch):
    """A 403 from the hub, as huggingface_hub raises it for a gated repository the token may not read."""
    import httpx2
    import transformers.utils.hub as hub
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError

    calls = []

    def refuse(repo_id, filename, **kwargs):
        calls.append((repo_id, filename))
        request = httpx2.Request("GET", f"https://huggingface.co/{repo_id}/resolve/main/{filename}")
        raise GatedRepoError("403 Client Error: Cannot access gated repo", response=httpx2.Response(403, request=request))

    monkeypatch.setattr(hub, "hf_hub_download", refuse)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(checkpoint_module, "use_cache_only_when_offline", lambda name: False)
    with pytest.raises(ModelLoadError) as err:
        load_sam3("facebook/sam3")
    assert calls and calls[0] == ("facebook/sam3", "config.json")
    assert str(err.value) == (
        "could not load SAM 3 model 'facebook/sam3': the hub refused access (403): the checkpoint is gated. Accept "
        "the licence on the model page (https://huggingface.co/facebook/sam3) and log in (`hf auth login` or "
        "HF_TOKEN) with the account that accepted it; or to run offline, download it where there is internet "
        "(`hf download facebook/sam3 --local-dir DIR`) and point MODEL (backend) or --model "
        "(evaluation) at DIR"
    )
    assert err.value.__cause__ is None  # the message is the whole story: no chained traceback


def test_the_detector_reports_the_roi_align_stand_in_where_torchvision_is_missing():
    from detection.sam3.roi_align import torchvision_importable

    detector = Sam3Detector.load(Sam3DetectorConfig(model=str(tiny_sam3_dir()), device="cpu"))
    expected = "not installed: torchvision is installed: its roi_align kernel runs" if torchvision_importable() else "active"
    assert detector.lever_report == {"text_cache": "active", "roi_align": expected}
    assert detector.preprocessing == (
        "SAM 3 processor: resize to 56x56 (bilinear, antialias, uint8), Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])"
    )
