"""The speed levers the Detector installs, and the report of what each did.

Every lever is exact (same outputs up to float summation order; tests/detection/test_speed_levers.py
checks each on small random models of both family architectures against the unpatched model):

| name             | module             | what it patches                                            |
|------------------|--------------------|------------------------------------------------------------|
| text_cache       | text_cache.py      | the text backbone: BERT once per distinct prompt           |
| backbone_reuse   | backbone_reuse.py  | the vision backbone: once per image batch for all chunks   |
| fusion           | fusion.py          | the encoder's image-text attention, reassociated           |
| deformable       | deformable.py      | multi-scale deformable attention as one embedding_bag      |
| inplace_relu     | inplace_relu.py    | the FFN ReLUs, in place                                    |

All five fit both architectures (`grounding-dino`, `mm-grounding-dino`: MM-Grounding-DINO's layers are
transformers copies of Grounding DINO's under other class names, which each lever looks up through
`Architecture`). The report maps each lever to "active", "off" (switched off in the config) or
"not installed: <reason>" (it found nothing to patch: the Detector also logs a warning), plus the
process-level `thp_allocation` lever (runtime/allocator.py).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import nn

from . import backbone_reuse, deformable, fusion, inplace_relu, text_cache
from .family import Architecture
from .patching import NOT_INSTALLED, OFF, LeverInstall

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lever:
    name: str
    install: Callable[[nn.Module, Architecture, torch.device], LeverInstall]
    uninstall: Callable[[nn.Module], int]


LEVERS: tuple[Lever, ...] = (
    Lever("text_cache", text_cache.install, text_cache.uninstall),
    Lever("backbone_reuse", backbone_reuse.install, backbone_reuse.uninstall),
    Lever("fusion", fusion.install, fusion.uninstall),
    Lever("deformable", deformable.install, deformable.uninstall),
    Lever("inplace_relu", inplace_relu.install, inplace_relu.uninstall),
)
LEVER_NAMES = tuple(lever.name for lever in LEVERS)


def install_levers(
    model: nn.Module, architecture: Architecture, device: torch.device, enabled: Mapping[str, bool]
) -> dict[str, str]:
    """Install every enabled lever on `model`; {name: "active" | "off" | "not installed: <reason>"}.

    A lever that finds nothing to patch (a transformers release renamed what it patches) leaves the model
    as it was, at its old speed: that is a warning here, and visible wherever the report is shown.
    """
    report = {}
    for lever in LEVERS:
        if not enabled.get(lever.name, True):
            report[lever.name] = OFF
            continue
        report[lever.name] = lever.install(model, architecture, device).status
    for message in lever_warnings(report, architecture.model_type):
        log.warning("%s", message)
    return report


def lever_warnings(report: Mapping[str, str], model_type: str) -> list[str]:
    """One sentence per lever of `report` that was meant to run and patched nothing."""
    return [
        f"speed lever {name!r} {status} (model type {model_type}); running without it: same outputs, slower"
        for name, status in report.items()
        if name in LEVER_NAMES and status.startswith(NOT_INSTALLED)
    ]


def uninstall_levers(model: nn.Module) -> dict[str, int]:
    """Remove every lever from `model`; {name: modules restored}."""
    return {lever.name: lever.uninstall(model) for lever in reversed(LEVERS)}
