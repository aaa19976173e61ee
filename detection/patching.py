"""What a speed lever's installer reports: the modules it patched, or why it patched nothing.

Every lever replaces behaviour of transformers' modules on one model instance (transformers' files are
never edited). A transformers release that renames a class would make a lever match nothing and the
model silently slower; so every installer returns a `LeverInstall`, and the Detector turns an empty one
into a start-up warning and a "not installed: <reason>" entry of its lever report.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

ACTIVE = "active"
OFF = "off"
NOT_INSTALLED = "not installed: "


@dataclass(frozen=True)
class LeverInstall:
    """The result of one installer on one model."""

    patched: tuple[str, ...] = ()  # module paths changed by this call ("" is the model itself)
    already: tuple[str, ...] = ()  # module paths that were already patched (a second install)
    reason: str = ""  # why nothing is patched, when nothing is

    @classmethod
    def unavailable(cls, reason: str) -> "LeverInstall":
        return cls(reason=reason)

    @property
    def active(self) -> bool:
        return bool(self.patched or self.already)

    @property
    def status(self) -> str:
        """The lever report's entry: "active" or "not installed: <reason>"."""
        return ACTIVE if self.active else f"{NOT_INSTALLED}{self.reason or 'nothing to patch'}"



def modules_of_type(model: nn.Module, cls: type) -> list[tuple[str, nn.Module]]:
    """(path, module) of every module of exactly `cls` (subclasses are other layers, with other code)."""
    return [(path, module) for path, module in model.named_modules() if type(module) is cls]


def nothing_found(what: str, model: nn.Module) -> str:
    return f"the model ({type(model).__name__}) has no {what}"
