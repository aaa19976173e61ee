"""Run the vision backbone once per image batch for all prompt chunks (a speed lever, exact).

A label set longer than the model's 256 text tokens (LVIS's 1,203 categories: ~31 chunks of 40) is run
as one forward per chunk, on the same pixels. The Swin backbone and its position embeddings see only
the pixels, so their output is the same for every chunk: computing it once and handing the same
tensors to every chunk's forward gives the very same numbers (nothing downstream writes into them),
and saves (N-1)/N of the backbone's cost (`python -m benchmarks.throughput` measures it: one N-chunk
image against N single-chunk forwards).

`install(model)` replaces the `forward` of the model instance's vision backbone (the module tree and
state dict are untouched; transformers' files are not edited). Reuse happens only inside
`BackboneReuse.session()` and only for the very tensor objects the first call of the session received:
a call with other pixels inside the session, and every call outside one, runs the backbone as before.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from .family import Architecture
from .patching import LeverInstall


class BackboneReuse:
    """The state of the lever on one backbone: the session's inputs and output, and counters."""

    def __init__(self, backbone: nn.Module):
        self.backbone = backbone
        self.runs = 0  # backbone forwards run
        self.reuses = 0  # backbone forwards served from the session
        self._open = False
        self._inputs: tuple[torch.Tensor, torch.Tensor] | None = None
        self._versions: tuple[int, int] | None = None
        self._output = None

    @classmethod
    def of(cls, model: nn.Module) -> "BackboneReuse | None":
        backbone = _backbone(model)
        forward = backbone.__dict__.get("forward") if backbone is not None else None
        owner = getattr(forward, "__self__", None)
        return owner if isinstance(owner, cls) else None

    @contextlib.contextmanager
    def session(self) -> Iterator["BackboneReuse"]:
        """Within: the first backbone call's output serves later calls on the same pixel tensors."""
        if self._open:  # nested (a caller's session already spans this one): nothing to add
            yield self
            return
        self._open = True
        try:
            yield self
        finally:
            self._open, self._inputs, self._versions, self._output = False, None, None, None

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor):
        if self._open and self._same_inputs(pixel_values, pixel_mask):
            self.reuses += 1
            return self._copy(self._output)
        output = type(self.backbone).forward(self.backbone, pixel_values, pixel_mask)
        self.runs += 1
        if self._open:
            self._inputs = (pixel_values, pixel_mask)
            self._versions = (_version(pixel_values), _version(pixel_mask))
            self._output = output
            return self._copy(output)
        return output

    def _same_inputs(self, pixel_values, pixel_mask) -> bool:
        if self._inputs is None:
            return False
        values, mask = self._inputs
        # The same tensor objects, not written to since (a tensor's _version counts in-place writes).
        return (
            pixel_values is values and pixel_mask is mask
            and (_version(pixel_values), _version(pixel_mask)) == self._versions
        )

    @staticmethod
    def _copy(output):
        # New lists around the same tensors: transformers appends the extra feature level's position
        # embedding to the list it receives, which must not grow the cached one.
        features, positions = output
        return [tuple(level) for level in features], list(positions)


def _version(tensor: torch.Tensor) -> int | None:
    """How often the tensor was written in place; None for inference-mode tensors, which cannot be
    written outside inference mode and do not count (identity is then the whole check)."""
    try:
        return tensor._version
    except RuntimeError:
        return None


def install(model: nn.Module, architecture: Architecture | None = None, device=None) -> LeverInstall:
    backbone = _backbone(model)
    path = "model.backbone"
    if backbone is None:
        return LeverInstall.unavailable(f"the model ({type(model).__name__}) has no vision backbone at model.backbone")
    if BackboneReuse.of(model) is not None:
        return LeverInstall(already=(path,))
    if "forward" in backbone.__dict__:
        return LeverInstall.unavailable(f"{path}.forward is already replaced by something else")
    backbone.forward = BackboneReuse(backbone).forward  # an instance attribute: nn.Module calls it
    return LeverInstall(patched=(path,))


def uninstall(model: nn.Module) -> int:
    if BackboneReuse.of(model) is None:
        return 0
    del _backbone(model).forward
    return 1


def _backbone(model: nn.Module) -> nn.Module | None:
    base = getattr(model, "model", None)
    backbone = getattr(base, "backbone", None)
    return backbone if isinstance(backbone, nn.Module) else None
