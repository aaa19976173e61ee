"""Run the text encoder once per distinct prompt (a speed lever that leaves outputs unchanged).

Grounding DINO encodes the caption with BERT on every forward, once per image of the batch. The
caption is the same for every image of a label set, so we compute its features for one row, reuse
them for the whole batch, and keep the last few prompts' features across calls. Installed by
wrapping the model instance's `text_backbone` (the same attribute in both family architectures;
transformers' files are not edited); `uninstall(model)` puts the wrapped text backbone back.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions

from .family import Architecture
from .patching import LeverInstall


class TextFeatureCache(nn.Module):
    def __init__(self, text_backbone: nn.Module, max_entries: int = 16):
        super().__init__()
        self.inner = text_backbone
        self.max_entries = max_entries
        self.entries: OrderedDict = OrderedDict()
        self.hits = 0
        self.misses = 0

    @classmethod
    def of(cls, model: nn.Module) -> "TextFeatureCache | None":
        """The cache installed on `model`, if any."""
        backbone = getattr(_base(model), "text_backbone", None)
        return backbone if isinstance(backbone, cls) else None

    def clear(self) -> None:
        self.entries.clear()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, return_dict=True, **kw):
        rows_equal = bool((input_ids == input_ids[:1]).all())
        if not rows_equal or kw:
            return self.inner(input_ids, attention_mask, token_type_ids, position_ids, return_dict=return_dict, **kw)
        key = (
            input_ids.device.type,
            torch.get_autocast_dtype(input_ids.device.type) if torch.is_autocast_enabled(input_ids.device.type) else None,
            tuple(input_ids[0].tolist()),
            None if attention_mask is None else attention_mask[:1].cpu().numpy().tobytes(),
            None if token_type_ids is None else tuple(token_type_ids[0].tolist()),
        )
        hidden = self.entries.get(key)
        if hidden is None:
            self.misses += 1
            one = lambda t: None if t is None else t[:1]  # noqa: E731
            out = self.inner(input_ids[:1], one(attention_mask), one(token_type_ids), one(position_ids), return_dict=True)
            hidden = out.last_hidden_state
            self.entries[key] = hidden
            if len(self.entries) > self.max_entries:
                self.entries.popitem(last=False)
        else:
            self.hits += 1
            self.entries.move_to_end(key)
        hidden = hidden.expand(input_ids.shape[0], -1, -1)
        if return_dict:
            return BaseModelOutputWithPoolingAndCrossAttentions(last_hidden_state=hidden)
        return (hidden,)


def install(model: nn.Module, architecture: Architecture | None = None, device=None) -> LeverInstall:
    """Wrap the model's text backbone in a `TextFeatureCache`; the report names the wrapped module."""
    base = _base(model)
    path = "model.text_backbone" if base is not model else "text_backbone"
    backbone = getattr(base, "text_backbone", None)
    if isinstance(backbone, TextFeatureCache):
        return LeverInstall(already=(path,))
    if not isinstance(backbone, nn.Module):
        return LeverInstall.unavailable(f"the model ({type(model).__name__}) has no text_backbone module")
    cache = TextFeatureCache(backbone)
    base.text_backbone = cache
    return LeverInstall(patched=(path,))


def uninstall(model: nn.Module) -> int:
    cache = TextFeatureCache.of(model)
    if cache is None:
        return 0
    _base(model).text_backbone = cache.inner
    return 1


def _base(model: nn.Module) -> nn.Module:
    """The inner GroundingDinoModel/MMGroundingDinoModel of a detection model (or the model itself)."""
    return model.model if isinstance(getattr(model, "model", None), nn.Module) else model
