"""Small random-weight SAM 3 models (`sam3`, `sam3_lite_text`) for tests, built at run time (no downloads).

Each is saved as a hub checkpoint is laid out: `save_pretrained` weights and config, a CLIP byte-level BPE
tokenizer (vocab.json, merges.txt, tokenizer.json) built here from a few words, and processor_config.json.
Input 56x56 (a 4x4 ViT patch grid, 16x16 mask logits), about 270k parameters: a forward pass takes
milliseconds. Built once per test process (`tiny_sam3_dir`), in a temporary directory removed at exit.
"""
from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

import torch

from benchmarks.random_sam3 import processor_config, save_sam3, tiny_tokenizer  # their one home

IMAGE_SIZE = 56
PATCH = 14
HIDDEN = 32
TEXT_LENGTH = 32  # Sam3Processor pads every prompt to 32 tokens


def _detector_parts(vocab_size: int, bos: int, eos: int) -> dict:
    vit = dict(
        model_type="sam3_vit_model", hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=PATCH, window_size=2, global_attn_indexes=[1],
        pretrain_image_size=28,
    )
    side = IMAGE_SIZE // PATCH * 4  # the FPN's finest level: 4x the patch grid
    layer = dict(hidden_size=HIDDEN, num_attention_heads=2, intermediate_size=64)
    return dict(
        vision_config=dict(backbone_config=vit, fpn_hidden_size=HIDDEN,
                           backbone_feature_sizes=[[side, side], [side // 2, side // 2], [side // 4, side // 4]]),
        geometry_encoder_config=dict(num_layers=1, **layer),
        detr_encoder_config=dict(num_layers=1, **layer),
        detr_decoder_config=dict(num_layers=2, num_queries=20, **layer),
        mask_decoder_config=dict(hidden_size=HIDDEN, num_attention_heads=2),
        text_ids=dict(vocab_size=vocab_size, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos),
    )


def tiny_sam3_config(model_type: str = "sam3"):
    tokenizer = tiny_tokenizer()
    parts = _detector_parts(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    ids = parts.pop("text_ids")
    text = dict(hidden_size=HIDDEN, intermediate_size=64, projection_dim=HIDDEN, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=TEXT_LENGTH, **ids)
    if model_type == "sam3":
        from transformers import Sam3Config

        return Sam3Config(text_config=text, **parts)
    if model_type == "sam3_lite_text":
        from transformers import Sam3LiteTextConfig

        # MobileCLIP-style text encoder: RepMixer blocks first and last, a transformer layer between.
        text.update(num_hidden_layers=3, repmixer_kernel_size=3)
        return Sam3LiteTextConfig(text_config=text, **parts)
    raise ValueError(f"no tiny SAM 3 config for model type {model_type!r}")


def tiny_sam3_model(model_type: str = "sam3", seed: int = 0):
    from transformers import Sam3LiteTextModel, Sam3Model

    torch.manual_seed(seed)
    cls = Sam3Model if model_type == "sam3" else Sam3LiteTextModel
    model = cls(tiny_sam3_config(model_type)).eval()
    # Random init gives near-equal detection logits and mask logits near 0 (probability ~0.5 everywhere);
    # larger scales on the scoring projection and the mask embedding spread the scores over (0, 1) and
    # the mask logits over several units, so thresholds, rankings and mask pixels in the tests are unambiguous.
    with torch.no_grad():
        model.dot_product_scoring.query_proj.weight.mul_(60.0)
        model.mask_decoder.mask_embedder.layers[-1].weight.mul_(5000.0)
    return model


def build_tiny_sam3(out_dir: Path, model_type: str = "sam3", seed: int = 0) -> Path:
    return save_sam3(tiny_sam3_model(model_type, seed), out_dir)


_BUILT: dict[tuple[str, int], Path] = {}
_ROOT: list[Path] = []


def tiny_sam3_dir(model_type: str = "sam3", seed: int = 0) -> Path:
    """The tiny checkpoint of `model_type`, built once per process (tests must not write into it)."""
    key = (model_type, seed)
    if key not in _BUILT:
        if not _ROOT:
            _ROOT.append(Path(tempfile.mkdtemp(prefix="tiny-sam3-")))
            atexit.register(shutil.rmtree, _ROOT[0], True)
        _BUILT[key] = build_tiny_sam3(_ROOT[0] / f"{model_type}-{seed}", model_type, seed)
    return _BUILT[key]


def build_tiny_sam3_video_layout(out_dir: Path, seed: int = 0) -> Path:
    """The tiny detector saved as facebook/sam3 is on the hub: config.json of model type `sam3_video` with the
    detector's config as `detector_config`, weights under `detector_model.` beside the tracker's
    (`tracker_model.`; one stand-in tensor here)."""
    from safetensors.torch import save_file

    model = tiny_sam3_model("sam3", seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {f"detector_model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    weights["tracker_model.memory_attention.weight"] = torch.zeros(3)
    save_file(weights, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    detector = model.config.to_dict()
    config = {"architectures": ["Sam3VideoModel"], "model_type": "sam3_video", "detector_config": detector,
              "tracker_config": {"model_type": "sam3_tracker_video"}}
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    tiny_tokenizer().save_pretrained(out_dir)
    (out_dir / "processor_config.json").write_text(json.dumps(processor_config(int(model.config.image_size)), indent=2))
    return out_dir
