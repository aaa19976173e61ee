"""Random-weight SAM 3 detectors at real sizes (no downloads), for the SAM 3 benchmark.

The cost of a forward pass does not depend on weight values, so the architecture is what matters:

- `sam3`: `Sam3Config()`, facebook/sam3's detector (ViT 1024 wide x 32 layers at 1008x1008, CLIP text
  encoder, 6+6 DETR layers, 200 queries, mask decoder; 550 M parameters);
- `sam3-small`: the same with an 8-layer ViT (global attention every 4th layer, as in the full one), about a
  quarter of the image encoder's cost, for quick runs.

The tokenizer and processor_config.json are the tests' (tests/sam3_factory.py: a CLIP byte-level BPE
tokenizer built from a few words, processor config as Sam3Processor saves it): every phrase is padded to
32 tokens, so the vocabulary does not change the cost. The text encoder's BOS/EOS/PAD ids are set to that
tokenizer's.
"""
from __future__ import annotations

from pathlib import Path

import torch

VARIANTS = ("sam3", "sam3-small")


def full_size_config(variant: str = "sam3"):
    from transformers import Sam3Config

    from tests.sam3_factory import tiny_tokenizer  # the one home of the test CLIP tokenizer

    if variant not in VARIANTS:
        raise ValueError(f"unknown SAM 3 variant {variant!r}: use {' or '.join(VARIANTS)}")
    tokenizer = tiny_tokenizer()
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
    config = Sam3Config(text_config=ids)
    if variant == "sam3-small":
        backbone = config.vision_config.backbone_config
        backbone.num_hidden_layers = 8
        backbone.global_attn_indexes = [3, 7]
    return config


def build_full_size_sam3(out_dir: Path, variant: str = "sam3", seed: int = 0) -> Path:
    """Save a random `variant` detector with the test tokenizer and processor config into `out_dir`."""
    from transformers import Sam3Model

    from tests.sam3_factory import save_sam3

    torch.manual_seed(seed)
    model = Sam3Model(full_size_config(variant)).eval()
    return save_sam3(model, out_dir)
