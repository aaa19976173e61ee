"""Small random-weight Grounding DINO family models for tests, built at run time (no downloads).

A tiny Swin + tiny BERT with the real bert-base-uncased vocabulary,
saved with its processor by `save_pretrained` and loaded back by directory as a user loads a hub id.
"""
from __future__ import annotations

from pathlib import Path

import torch

from benchmarks.random_model import build_full_size_model, make_processor, make_tokenizer, save_model  # noqa: F401


def _tiny_settings() -> dict:
    from transformers import BertConfig, SwinConfig

    backbone = SwinConfig(
        embed_dim=24, depths=[1, 1, 1, 1], num_heads=[1, 2, 3, 4], window_size=7,
        out_indices=[2, 3, 4], out_features=["stage2", "stage3", "stage4"],
    )
    text = BertConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128)
    return dict(
        backbone_config=backbone, text_config=text, d_model=64,
        encoder_layers=1, decoder_layers=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=100, num_feature_levels=4,
    )


def tiny_config():
    from transformers import GroundingDinoConfig

    return GroundingDinoConfig(**_tiny_settings())


def tiny_mm_config():
    from transformers import MMGroundingDinoConfig

    return MMGroundingDinoConfig(**_tiny_settings())


def build_tiny_model(out_dir: Path, seed: int = 0, config=None) -> Path:
    """Save a ~3M-parameter random Grounding DINO (or one of `config`) with its processor into `out_dir`."""
    from transformers import GroundingDinoForObjectDetection

    torch.manual_seed(seed)
    model = GroundingDinoForObjectDetection(config or tiny_config()).eval()
    # Random init saturates the logits (scores tie at 1.0); shrinking the norm that feeds the
    # class and box heads spreads them out, so rankings are unambiguous.
    with torch.no_grad():
        norm = model.model.decoder.layer_norm
        norm.weight.mul_(0.15)
        norm.bias.mul_(0.15)
    return save_model(model, out_dir)


def build_tiny_mm_model(out_dir: Path, seed: int = 0) -> Path:
    """The same small settings as an MM-Grounding-DINO (model type mm-grounding-dino), saved with its processor.

    Its class head divides the logits by sqrt(d_model) and adds a learned bias, initialised to -log(99):
    every score would be ~0.01. A bias of -1 spreads the scores (~0.4-0.75 at the top) across the
    thresholds the tests use, without ties.
    """
    from transformers import MMGroundingDinoForObjectDetection

    torch.manual_seed(seed)
    model = MMGroundingDinoForObjectDetection(tiny_mm_config()).eval()
    with torch.no_grad():
        for module in model.modules():
            if type(module).__name__ == "MMGroundingDinoContrastiveEmbedding":
                module.bias.fill_(-1.0)
    return save_model(model, out_dir)


def with_input_size(model_dir: Path, out_dir: Path, shortest_edge: int, longest_edge: int) -> Path:
    """A copy of a saved model whose processor resizes to another resolution (same weights, tokenizer)."""
    import shutil

    shutil.copytree(model_dir, out_dir)
    return set_input_size(out_dir, shortest_edge, longest_edge)


def set_input_size(model_dir: Path, shortest_edge: int, longest_edge: int) -> Path:
    """Make a saved model's processor resize to another resolution, in place."""
    import json

    cfg_path = model_dir / "processor_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["image_processor"]["size"] = {"shortest_edge": shortest_edge, "longest_edge": longest_edge}
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return model_dir
