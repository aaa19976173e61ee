"""The encoder's image-text fusion attention with its projections reassociated (exact up to summation order).

Every encoder layer of Grounding DINO runs `GroundingDinoBiMultiHeadAttention` between N ≈ 18k image
tokens (an 800×1066 input) and T text tokens. transformers projects all N image tokens three times into
the 1024-wide attention space (queries, values, and back through `out_vision_proj`): three
N×256×1024 matrix products per layer, a third of the encoder's arithmetic. The text side is tiny
(T ≤ 256), so the same sums can be taken in another order that never makes an N×1024 tensor:

- logits:  (X·Wq_hᵀ + bq_h)·s·K_hᵀ = X·(s·Wq_hᵀ·K_hᵀ) + s·bq_h·K_hᵀ        (one N×256×(H·T) product)
- image side: Σ_h P_h·(V_h·Wo_hᵀ) + bo, with V_h the text values          (one N×(H·T)×256 product)
- text side:  P'_h·(X·Wv_hᵀ + bv_h) = (P'_h·X)·Wv_hᵀ + bv_h               (rows of P' sum to 1)

with X the (layer-normed) image tokens, K_h/V_h the text keys/values of head h, P the softmax over text
tokens and P' the softmax over image tokens. The softmaxes, the global-max shift, the ±50000 clamps and
both padding masks are transformers' own, on the same logits laid out (B, N, H·T) instead of
(B·H, N, T). For T = 13 (a 5-label config) the fusion costs ~0.5 instead of ~14 GMAC per layer; for the
80 COCO names (T = 195) ~11 instead of ~25.

`install(model, architecture)` replaces the `forward` of each fusion attention instance of either family
architecture (`GroundingDinoBiMultiHeadAttention`, `MMGroundingDinoBiMultiHeadAttention`: the same code);
its weights, module tree and state dict are untouched and transformers' files are not edited;
`uninstall(model)` restores it.
"""
from __future__ import annotations

import types

import torch
from torch import nn

from .family import Architecture
from .patching import LeverInstall, modules_of_type, nothing_found

_CLAMP = 50000  # transformers' bound ("data type half has quite limited range")


def fused_bi_attention_forward(
    self,
    vision_features: torch.Tensor,
    text_features: torch.Tensor,
    vision_attention_mask: torch.Tensor | None = None,
    text_attention_mask: torch.Tensor | None = None,
):
    """`BiMultiHeadAttention.forward` reassociated (the module docstring's three identities), with
    transformers' signature and return value: ((vision out, (B·H, N, T) weights), (text out, (B·H, T, N)
    weights)). Bound to a fusion attention instance by :func:`install`."""
    if self.training:  # dropout on the attention probabilities: transformers' own path
        return type(self).forward(self, vision_features, text_features, vision_attention_mask, text_attention_mask)
    batch, tokens, _ = vision_features.shape
    text_len = text_features.shape[1]
    heads, head_dim = self.num_heads, self.head_dim

    keys = self.text_proj(text_features).view(batch, text_len, heads, head_dim)
    text_values = self.values_text_proj(text_features).view(batch, text_len, heads, head_dim)
    logits = _folded_logits(self, vision_features, keys)
    vision_probs, text_probs = _attention_probs(logits, vision_attention_mask, text_attention_mask, heads)
    vision_out = _vision_output(self, vision_probs, text_values)
    text_out = _text_output(self, text_probs, vision_features)

    # Attention weights in transformers' layouts, (B·H, N, T) and (B·H, T, N), for output_attentions.
    vision_weights = vision_probs.permute(0, 2, 1, 3).reshape(batch * heads, tokens, text_len)
    text_weights = text_probs.view(batch, tokens, heads, text_len).permute(0, 2, 3, 1).reshape(batch * heads, text_len, tokens)
    return (vision_out, vision_weights), (text_out, text_weights)


def _folded_logits(self, vision_features: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """The scaled attention logits laid out (B, N, H·T), with the queries folded into the text keys:
    logits[b, n, h·T + t] = X[b, n]·query_to_logit[b, :, h·T + t] + bias (no N×1024 query tensor)."""
    batch, text_len, heads, head_dim = keys.shape
    channels = vision_features.shape[2]
    wq = self.vision_proj.weight.view(heads, head_dim, channels)
    bq = self.vision_proj.bias.view(heads, head_dim)
    query_to_logit = torch.einsum("hdc,bthd->bcht", wq, keys).reshape(batch, channels, heads * text_len)
    logit_bias = torch.einsum("hd,bthd->bht", bq, keys).reshape(batch, 1, heads * text_len)
    return torch.baddbmm(logit_bias, vision_features, query_to_logit, alpha=self.scale, beta=self.scale)


def _attention_probs(logits: torch.Tensor, vision_attention_mask: torch.Tensor | None,
                     text_attention_mask: torch.Tensor | None, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' two softmaxes on the (B, N, H·T) logits: the image side's over the text tokens,
    shaped (B, N, H, T), and the text side's over the image tokens, shaped (B, N, H·T)."""
    batch, tokens, columns = logits.shape
    # transformers shifts by the global max and clamps at -50000 before both softmaxes (then shifts
    # each text token's column by its max again). Softmax ignores shifts, so when the logits span less
    # than 50000 (always, in fp32 and bf16 practice) the clamps cannot bite and both shifts are skipped.
    # On an accelerator the checks below would each cost a host sync: run transformers' full sequence.
    checks = _host_checks_are_cheap(logits.device)
    vision_masked = vision_attention_mask is not None and (not checks or bool(vision_attention_mask.any()))
    text_masked = text_attention_mask is not None and (not checks or bool(text_attention_mask.any()))
    if not checks or _span(logits) >= _CLAMP:
        logits = (logits - logits.max()).clamp_(min=-_CLAMP, max=_CLAMP)
        text_logits = (logits - logits.amax(dim=1, keepdim=True)).clamp_(min=-_CLAMP, max=_CLAMP)
    else:
        text_logits = logits

    # Text side: each (head, text token) attends over the image tokens (dim 1).
    if vision_masked:
        text_logits = text_logits.masked_fill(vision_attention_mask[:, :, None], float("-inf"))
    text_probs = text_logits.softmax(dim=1)

    # Image side: each (image token, head) attends over the text tokens.
    logits = logits.view(batch, tokens, heads, columns // heads)
    if text_masked:
        logits = logits.masked_fill(text_attention_mask[:, None, None, :], float("-inf"))
    return logits.softmax(dim=-1), text_probs


def _vision_output(self, vision_probs: torch.Tensor, text_values: torch.Tensor) -> torch.Tensor:
    """The image tokens' output: the text values pushed through out_vision_proj first (T rows instead of N)."""
    batch, tokens, heads, text_len = vision_probs.shape
    channels = self.out_vision_proj.weight.shape[0]
    wo = self.out_vision_proj.weight.view(channels, heads, self.head_dim)
    values_to_out = torch.einsum("bthd,chd->bhtc", text_values, wo).reshape(batch, heads * text_len, channels)
    return torch.baddbmm(
        self.out_vision_proj.bias.expand(batch, 1, channels), vision_probs.view(batch, tokens, heads * text_len), values_to_out
    )


def _text_output(self, text_probs: torch.Tensor, vision_features: torch.Tensor) -> torch.Tensor:
    """The text tokens' output: the image tokens averaged first, then values_vision_proj (exact: rows of
    P' sum to 1), then out_text_proj."""
    batch, _, channels = vision_features.shape
    heads, head_dim = self.num_heads, self.head_dim
    text_len = text_probs.shape[2] // heads
    pooled = torch.bmm(text_probs.transpose(1, 2), vision_features).view(batch, heads, text_len, channels)
    wv = self.values_vision_proj.weight.view(heads, head_dim, channels)
    text_attended = torch.einsum("bhtc,hdc->bthd", pooled, wv) + self.values_vision_proj.bias.view(heads, head_dim)
    return self.out_text_proj(text_attended.reshape(batch, text_len, heads * head_dim))


def _host_checks_are_cheap(device: torch.device) -> bool:
    return device.type == "cpu"


def _span(tensor: torch.Tensor) -> float:
    low, high = torch.aminmax(tensor)
    return float(high - low)


def install(model: nn.Module, architecture: Architecture, device: torch.device | str = "cpu") -> LeverInstall:
    """Use the reassociated forward on every fusion attention of `model` (both architectures' classes)."""
    try:
        cls = architecture.layer_class("BiMultiHeadAttention")
    except LookupError as exc:
        return LeverInstall.unavailable(str(exc))
    found = modules_of_type(model, cls)
    if not found:
        return LeverInstall.unavailable(nothing_found(cls.__name__, model))
    patched, already = [], []
    for path, module in found:
        if _is_patched(module):
            already.append(path)
        else:
            module.forward = types.MethodType(fused_bi_attention_forward, module)
            patched.append(path)
    return LeverInstall(tuple(patched), tuple(already))


def uninstall(model: nn.Module) -> int:
    """Restore transformers' forward on every fusion attention this module patched; returns how many."""
    restored = 0
    for module in model.modules():
        if _is_patched(module):
            del module.forward
            restored += 1
    return restored


def _is_patched(module: nn.Module) -> bool:
    return getattr(module.__dict__.get("forward"), "__func__", None) is fused_bi_attention_forward
