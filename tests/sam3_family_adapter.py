"""TEST-LOCAL STAND-IN — remove when detection/sam3/family.py (issue 23, "the model in the core") lands.

Registers SAM 3 as a detector family of the core, adapting `detection.sam3.Sam3Detector` to the
`FamilyDetector` protocol (detection/families.py), so that the evaluation can be tested against the
protocol before the real family module is merged. `ensure_registered()` does nothing when a family
already claims the `sam3` model type (the real one), so the tests run unchanged after the merge.

The one assumption the evaluation makes of the real family beyond the protocol: for a family whose
`capabilities.own_masks` is set, `rank(images, prompt, num_select, masks=True)` returns per image
Detections with `masks` ((N, H, W) bool at the image's size, SAM 3's evaluation mask rule).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

from detection.families import FAMILIES, Capabilities, DetectorFamily, family_of_model_type, register

SAM3_MODEL_TYPES = ("sam3", "sam3_video", "sam3_lite_text")


class Sam3FamilyDetector:
    """`Sam3Detector` behind the FamilyDetector calls the evaluation makes."""

    def __init__(self, inner, family: DetectorFamily):
        self.inner = inner
        self.family = family
        self.model_type = inner.model_type
        self.device = inner.device
        self.warnings: list[str] = []

    @property
    def model_revision(self):
        return self.inner.model_revision

    @property
    def lever_report(self) -> dict[str, str]:
        return self.inner.lever_report

    @property
    def preprocessing(self) -> str:
        return self.inner.preprocessing

    def prompt(self, classes: Sequence[str | Sequence[str]], chunk_size: int | None = None):
        from detection.sam3 import class_phrase_list

        class_phrase_list(classes)  # PromptError when a class has no phrase
        return tuple(c if isinstance(c, str) else tuple(c) for c in classes)

    def describe_prompt(self, prompt) -> dict:
        return {"num_prompts": sum(1 if isinstance(c, str) else len(c) for c in prompt)}

    def detect(self, images, prompt, box_threshold: float, nms_iou: float | None = None, masks: bool = False):
        return self.inner.detect(images, prompt, threshold=box_threshold, masks=masks)

    def rank(self, images, prompt, num_select: int = 100, masks: bool = False):
        return self.inner.rank(images, prompt, top_k=num_select, masks=masks)


def _load(config):
    from detection.sam3 import Sam3Detector, Sam3DetectorConfig

    inner = Sam3Detector.load(Sam3DetectorConfig(model=config.model, device=config.device, dtype=config.dtype,
                                                 revision=config.revision))
    return Sam3FamilyDetector(inner, family_of_model_type("sam3"))


@contextlib.contextmanager
def sam3_family() -> Iterator[DetectorFamily]:
    """The SAM 3 family for the duration of a test: registered here if the core has none, and removed
    again afterwards, so that tests of the family registry see the core's own families."""
    registered_here = family_of_model_type("sam3") is None
    family = ensure_registered()
    try:
        yield family
    finally:
        if registered_here:
            FAMILIES.remove(family)


def ensure_registered() -> DetectorFamily:
    """The SAM 3 family: the real one when registered, else this stand-in (registered once)."""
    family = family_of_model_type("sam3")
    if family is None:
        family = register(DetectorFamily(
            name="sam3", title="SAM 3", model_types=SAM3_MODEL_TYPES, default_box_threshold=0.5,
            capabilities=Capabilities(own_masks=True, exemplar_prompts=True, fine_tuning=False,
                                      phrases_per_class="one"),
            load=_load,
        ))
    return family


if __name__ == "__main__":  # python -m tests.sam3_family_adapter evaluation.coco ARGS...: the command with SAM 3 registered
    import importlib
    import sys

    ensure_registered()
    sys.exit(importlib.import_module(sys.argv[1] + ".cli").main(sys.argv[2:]))
