"""The SAM 3 family behind the core's detector-family interface (`detection/families.py`).

`Sam3FamilyDetector` answers the calls the products make of any family (`prompt`, `describe_prompt`,
`detect`, `rank`) with `Sam3Detector`, plus what only this family can do: masks of its own (`detect(...,
masks=True)`, no SAM stage) and exemplar prompts (`find_like`: "find all like this"). The checkpoints are
recognised by config.json's model_type (`sam3`, `sam3_video`, `sam3_lite_text`; `checkpoint.py`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from PIL import Image

from ..families import Capabilities, DetectorFamily, register
from ..postprocess import class_nms
from ..prompt import PromptError
from .checkpoint import SAM3_MODEL_TYPES
from .detector import DEFAULT_THRESHOLD, DEFAULT_TOP_K, Sam3Detector, Sam3DetectorConfig, class_phrase_list
from .postprocess import Sam3Detections


@dataclass(frozen=True)
class Sam3Prompt:
    """A label set as SAM 3 takes it: per class its phrases, each phrase one query (one text embedding)."""

    classes: tuple[tuple[str, ...], ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def phrases(self) -> list[tuple[int, str]]:
        """(class index, phrase) in query order."""
        return class_phrase_list(self.classes)


class Sam3FamilyDetector:
    """A loaded SAM 3 checkpoint as a `FamilyDetector` (and `ExemplarDetector`). `sam3` is the model code's
    own detector (`Sam3Detector`), for callers that need more of it (the benchmark, the evaluation)."""

    def __init__(self, sam3: Sam3Detector):
        self.sam3 = sam3
        self._prompts: dict = {}

    family: DetectorFamily  # set below, once the family is registered

    @classmethod
    def load(cls, config) -> "Sam3FamilyDetector":
        """From the core's DetectorConfig (model, device, dtype, revision; Grounding DINO's speed-lever
        switches do not apply to SAM 3)."""
        return cls(Sam3Detector.load(Sam3DetectorConfig(model=config.model, device=config.device, dtype=config.dtype,
                                                        revision=config.revision)))

    @property
    def model_type(self) -> str:
        return self.sam3.model_type

    @property
    def device(self):
        return self.sam3.device

    @property
    def model_revision(self) -> str | None:
        return self.sam3.model_revision

    @property
    def lever_report(self) -> dict[str, str]:
        return self.sam3.lever_report

    @property
    def warnings(self) -> list[str]:
        return []

    @property
    def preprocessing(self) -> str:
        return self.sam3.preprocessing

    def prompt(self, classes: Sequence[str | Sequence[str]], chunk_size: int | None = None) -> Sam3Prompt:
        """One query per phrase; each phrase tokenized now, so that a label SAM 3 cannot take (over 32
        tokens, no words) is a PromptError here, when Label Studio connects, not at the first image."""
        del chunk_size  # SAM 3 has no shared caption to split: every phrase is its own query
        key = tuple((c,) if isinstance(c, str) else tuple(c) for c in classes)
        if key not in self._prompts:
            pairs = class_phrase_list(key)
            for _, phrase in pairs:
                self.sam3.text.tokens(phrase)
            if len(self._prompts) > 256:
                self._prompts.clear()
            self._prompts[key] = Sam3Prompt(tuple(tuple(dict.fromkeys(p for c, p in pairs if c == i))
                                                  for i in range(len(key))))
        return self._prompts[key]

    def describe_prompt(self, prompt: Sam3Prompt) -> dict:
        phrases = [phrase for _, phrase in prompt.phrases]
        return {"num_queries": len(phrases), "phrases": phrases}

    def detect(self, images: Sequence[Image.Image], prompt: Sam3Prompt, box_threshold: float,
               nms_iou: float | None = None, masks: bool = False) -> list[Sam3Detections]:
        """Labelling mode: score > box_threshold, boxes clipped to the image, highest score first; masks
        at the image's size when asked (SAM 3's own, transformers' rule)."""
        found = self.sam3.detect(images, prompt.classes, threshold=box_threshold, masks=masks)
        return [class_nms(d, nms_iou) for d in found] if nms_iou is not None else found

    def rank(self, images: Sequence[Image.Image], prompt: Sam3Prompt, num_select: int = DEFAULT_TOP_K,
             masks: bool = False) -> list[Sam3Detections]:
        """Evaluation mode: per image the `num_select` best over all classes (SAM 3's evaluation: 100)."""
        return self.sam3.rank(images, prompt.classes, top_k=num_select, masks=masks)

    def find_like(self, image: Image.Image, positive: Sequence[float], negatives: Sequence[Sequence[float]] = (),
                  label: int = 0, threshold: float | None = None, masks: bool = True) -> Sam3Detections:
        """"Find all like this": every instance like the example box (xyxy pixels), unlike `negatives`."""
        return self.sam3.find_like(image, positive, negatives, label=label, masks=masks,
                                   threshold=DEFAULT_THRESHOLD if threshold is None else threshold)


SAM3 = register(DetectorFamily(
    name="sam3",
    title="SAM 3",
    model_types=tuple(SAM3_MODEL_TYPES),
    # SAM 3's own image predictor keeps detections with score > 0.5 (score = detection x presence).
    default_box_threshold=DEFAULT_THRESHOLD,
    # A class's several phrases (predicted_values) are each a query; per object the best one is kept.
    capabilities=Capabilities(own_masks=True, exemplar_prompts=True, fine_tuning=False, phrases_per_class="several"),
    load=Sam3FamilyDetector.load,
    version_prefix="sam3",
))
Sam3FamilyDetector.family = SAM3

__all__ = ["SAM3", "Sam3FamilyDetector", "Sam3Prompt", "PromptError"]
