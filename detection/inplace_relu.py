"""In-place ReLU in the feed-forward blocks (a speed lever that leaves outputs bit-identical).

Each encoder (deformable and text-enhancer) and decoder layer computes `activation(fc1(x))`: `fc1`'s
output is a fresh (tokens, ffn_dim) tensor read only by the ReLU. On the CPU a second 100+ MB output
tensor costs more in page faults than the ReLU itself; rectifying fc1's output in place saves it. Same
op on the same values: bit-identical results.

`install(model, architecture)` swaps each of those layers' `nn.ReLU` for an `InplaceReLU` that remembers
the module it replaced; `uninstall(model)` puts that very module back, whatever its settings were.
Layers whose activation is not a plain `nn.ReLU` (another `activation_function` in the config) are left
alone, and the lever says it found nothing to patch.
"""
from __future__ import annotations

from torch import nn

from .family import Architecture
from .patching import LeverInstall

# The layers whose FFN activation this lever makes in-place: class suffix -> attribute holding it.
FFN_ACTIVATIONS = {
    "DeformableLayer": "activation_fn",  # encoder, image side
    "TextEnhancerLayer": "activation",  # encoder, text side
    "DecoderLayer": "activation_fn",
}


class InplaceReLU(nn.ReLU):
    """`nn.ReLU(inplace=True)` that keeps the module it replaced (outside the module tree) for uninstall."""

    def __init__(self, original: nn.Module):
        super().__init__(inplace=True)
        self._replaced = [original]  # a list keeps it out of the module tree and the state dict

    @property
    def replaced(self) -> nn.Module:
        return self._replaced[0]


def install(model: nn.Module, architecture: Architecture, device=None) -> LeverInstall:
    """Make every FFN ReLU of the family's layers in place; returns the activations patched."""
    layer_types = {}
    for suffix, attribute in FFN_ACTIVATIONS.items():
        try:
            layer_types[architecture.layer_class(suffix)] = attribute
        except LookupError as exc:
            return LeverInstall.unavailable(str(exc))
    patched, already, other = [], [], set()
    for path, layer in model.named_modules():
        attribute = layer_types.get(type(layer))
        if attribute is None:
            continue
        activation = layer._modules.get(attribute)
        where = f"{path}.{attribute}"
        if isinstance(activation, InplaceReLU) or (type(activation) is nn.ReLU and activation.inplace):
            already.append(where)  # ours, or in place already: nothing to change, nothing to restore
        elif type(activation) is nn.ReLU and not activation.inplace:
            setattr(layer, attribute, InplaceReLU(activation))
            patched.append(where)
        else:
            other.add(type(activation).__name__)
    if patched or already:
        return LeverInstall(tuple(patched), tuple(already))
    if other:
        return LeverInstall.unavailable(f"the FFN activations are {', '.join(sorted(other))}, not a plain ReLU")
    names = ", ".join(architecture.class_prefix + suffix for suffix in FFN_ACTIVATIONS)
    return LeverInstall.unavailable(f"the model ({type(model).__name__}) has none of {names}")


def uninstall(model: nn.Module) -> int:
    """Put back every module `install` replaced; returns how many."""
    restored = 0
    for path, module in list(model.named_modules()):
        if isinstance(module, InplaceReLU):
            parent_path, _, name = path.rpartition(".")
            setattr(model.get_submodule(parent_path), name, module.replaced)
            restored += 1
    return restored
