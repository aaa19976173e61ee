"""Random-weight SAM 3 detectors at real sizes (no downloads), for the SAM 3 benchmark.

The cost of a forward pass does not depend on weight values, so the architecture is what matters:

- `sam3`: `Sam3Config()`, facebook/sam3's detector (ViT 1024 wide x 32 layers at 1008x1008, CLIP text
  encoder, 6+6 DETR layers, 200 queries, mask decoder; 550 M parameters);
- `sam3-small`: the same with an 8-layer ViT (global attention every 4th layer, as in the full one), about a
  quarter of the image encoder's cost, for quick runs.

The tokenizer and processor_config.json are built here and shared with the tests (tests/sam3_factory.py
imports them): a CLIP byte-level BPE tokenizer built from a few words, processor config as Sam3Processor saves it: every phrase is padded to
32 tokens, so the vocabulary does not change the cost. The text encoder's BOS/EOS/PAD ids are set to that
tokenizer's.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import CLIPTokenizer, Sam3Config, Sam3Model

VARIANTS = ("sam3", "sam3-small")
# SAM 3 normalises with 0.5/0.5 (facebook/sam3's processor config), not ImageNet's statistics.
IMAGE_MEAN = [0.5, 0.5, 0.5]
IMAGE_STD = [0.5, 0.5, 0.5]
# Words with BPE merges of their own; any other text still tokenizes, byte by byte.
WORDS = ("cat", "dog", "car", "apple", "person", "traffic", "light", "visual", "bicycle", "red")
BOS, EOS = "<|startoftext|>", "<|endoftext|>"



def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table (byte-level BPE's alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def clip_vocab_and_merges(words=WORDS) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-layout vocabulary: the 256 byte symbols, the same with `</w>`, the merges' results, BOS, EOS."""
    alphabet = list(bytes_to_unicode().values())
    tokens = alphabet + [c + "</w>" for c in alphabet]
    merges: list[tuple[str, str]] = []
    for word in words:
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:  # merge left to right: c a t</w> -> ca t</w> -> cat</w>
            pair = (symbols[0], symbols[1])
            merged = symbols[0] + symbols[1]
            if pair not in merges:
                merges.append(pair)
                tokens.append(merged)
            symbols = [merged] + symbols[2:]
    tokens += [BOS, EOS]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def tiny_tokenizer():
    """transformers' CLIPTokenizer (tokenizers-backed) on the tiny vocabulary."""
    vocab, merges = clip_vocab_and_merges()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def processor_config(image_size: int) -> dict:
    """processor_config.json as Sam3Processor.save_pretrained writes it (transformers 5.24), the fields the
    core reads: transformers only has a torchvision build of Sam3ImageProcessor, so it is written here."""
    return {
        "processor_class": "Sam3Processor",
        "point_pad_value": -10,
        "target_size": image_size,
        "image_processor": {
            "image_processor_type": "Sam3ImageProcessor",
            "do_convert_rgb": True,
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": IMAGE_MEAN,
            "image_std": IMAGE_STD,
            "rescale_factor": 1 / 255,
            "resample": 2,
            "size": {"height": image_size, "width": image_size},
            "mask_size": {"height": 288, "width": 288},
        },
    }


def save_sam3(model, out_dir: Path) -> Path:
    """Save `model` with the tiny tokenizer and its processor config: a directory laid out as a hub checkpoint."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tiny_tokenizer().save_pretrained(out_dir)
    (out_dir / "processor_config.json").write_text(json.dumps(processor_config(int(model.config.image_size)), indent=2))
    return out_dir


def full_size_config(variant: str = "sam3"):
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
    torch.manual_seed(seed)
    model = Sam3Model(full_size_config(variant)).eval()
    return save_sam3(model, out_dir)
