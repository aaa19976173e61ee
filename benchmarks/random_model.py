"""Random-weight Grounding DINO models built at run time (no downloads), for the benchmark and the tests.

The tokenizer is the real bert-base-uncased vocabulary (tests/fixtures), so captions tokenise exactly as
with a hub checkpoint; the weights are random. Saved with `save_pretrained` and loaded back by directory,
as a user loads a hub id.
"""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import BertTokenizer, GroundingDinoConfig, GroundingDinoForObjectDetection, GroundingDinoProcessor
from transformers.models.grounding_dino.image_processing_pil_grounding_dino import GroundingDinoImageProcessorPil

ROOT = Path(__file__).resolve().parent.parent
VOCAB = ROOT / "tests" / "fixtures" / "bert-base-uncased-vocab.txt"


def make_tokenizer():
    # transformers 5: `vocab=` (the old `vocab_file=` silently gives an empty vocabulary)
    return BertTokenizer(vocab=str(VOCAB), do_lower_case=True)


def make_processor():
    return GroundingDinoProcessor(image_processor=GroundingDinoImageProcessorPil(), tokenizer=make_tokenizer())


def save_model(model, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    make_processor().save_pretrained(out_dir)
    return out_dir


def build_full_size_model(out_dir: Path, seed: int = 0) -> Path:
    """The full grounding-dino-tiny architecture with random weights (for speed work only)."""
    torch.manual_seed(seed)
    return save_model(GroundingDinoForObjectDetection(GroundingDinoConfig()).eval(), out_dir)
