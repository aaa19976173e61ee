"""What a Label Studio label config means to this backend: label sets (control x image -> classes to
prompt and the label each emits), smart tools, typed-prompt controls and what is skipped, with why.

Plain values with no parsing in them: `labelstudio.label_config` builds them from a config's XML, the
predictor, the typed prompts, the smart tools, training and the region writers read them.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Sequence

from detection.phrases import to_words


class LabelConfigError(ValueError):
    """A label config the backend cannot use at all; the message says what to change."""


class TextPromptError(ValueError):
    """Typed prompt phrases none of which maps to a label; the message names the usable labels."""


class ControlKind(str, Enum):
    """A control tag this backend answers, named as Label Studio names a result's `type` (lower case)."""

    RECTANGLE_LABELS = "rectanglelabels"
    RECTANGLE = "rectangle"  # no labels: the phrases are `predicted_values` or the request's text prompt
    BRUSH_LABELS = "brushlabels"
    POLYGON_LABELS = "polygonlabels"
    KEYPOINT_LABELS = "keypointlabels"  # only as a smart tool (clicks)

    def __str__(self) -> str:  # in messages, JSON and version fingerprints: the plain value
        return self.value

    @property
    def tag(self) -> str:
        """The tag as written in a label config, e.g. `RectangleLabels`."""
        return _TAGS[self]


@dataclass(frozen=True)
class SkippedItem:
    """A control, or one `<Label>` of it, that the backend does not predict, and why."""

    control: str  # the control's name
    label: str | None  # the <Label value> as written; None when the whole control is skipped
    reason: str  # what is wrong and what to change
    tag: str = "RectangleLabels"  # the control's tag as written in the config

    def describe(self) -> str:
        """One line for people: `RectangleLabels "label": label "  " skipped: the value is blank; ...`."""
        where = f'{self.tag} "{self.control}"'
        if self.label is None:
            return f"{where} skipped: {self.reason}"
        return f'{where}: label "{self.label}" skipped: {self.reason}'


@dataclass(frozen=True)
class LabelClass:
    label: str  # emitted in results: alias if set, else value
    value: str
    alias: str | None
    phrases: tuple[str, ...]
    predicted_values: tuple[str, ...] = ()

    def matches(self, text: str) -> bool:
        key = text.strip().lower()
        names = {self.value.lower(), self.label.lower(), to_words(self.value)}
        if self.alias:
            names.add(self.alias.lower())
        names.update(p.lower() for p in self.predicted_values)
        return key in names or to_words(text) in names

    def describe(self) -> str:
        return f"{self.label} ({self.value})" if self.alias and self.alias != self.value else self.label


@dataclass(frozen=True)
class LabelSet:
    """One control bound to one image: the classes to prompt and how to emit boxes."""

    from_name: str
    to_name: str
    data_key: str  # task["data"][data_key] holds the image URL
    kind: ControlKind  # RECTANGLE_LABELS, RECTANGLE, BRUSH_LABELS or POLYGON_LABELS
    classes: tuple[LabelClass, ...]
    threshold: float | None = None  # model_score_threshold, None -> BOX_THRESHOLD
    skip: bool = False

    def __post_init__(self):
        object.__setattr__(self, "kind", ControlKind(self.kind))  # a kind given by name is the Enum's member

    @property
    def prompt_classes(self) -> list[list[str]]:
        return [list(c.phrases) for c in self.classes]

    @property
    def tag(self) -> str:
        return self.kind.tag

    @property
    def is_mask(self) -> bool:
        """Its regions are masks (brush or polygon), made from the detector's boxes by the mask model."""
        return self.kind in MASK_KINDS

    @property
    def is_labelled(self) -> bool:
        return self.kind != ControlKind.RECTANGLE

    def with_classes(self, classes: Sequence[LabelClass]) -> "LabelSet":
        return LabelSet(self.from_name, self.to_name, self.data_key, self.kind, tuple(classes), self.threshold, self.skip)


_TAGS = {ControlKind.RECTANGLE_LABELS: "RectangleLabels", ControlKind.RECTANGLE: "Rectangle",
         ControlKind.BRUSH_LABELS: "BrushLabels", ControlKind.POLYGON_LABELS: "PolygonLabels",
         ControlKind.KEYPOINT_LABELS: "KeyPointLabels"}
MASK_KINDS = (ControlKind.BRUSH_LABELS, ControlKind.POLYGON_LABELS)


@dataclass(frozen=True)
class SmartTool:
    """A `smart="true"` `<KeyPointLabels>` or `<RectangleLabels>` on an image: its clicks and boxes in an
    interactive request's context are SAM prompts."""

    from_name: str
    to_name: str
    kind: ControlKind  # KEYPOINT_LABELS or RECTANGLE_LABELS
    # The control's model_smart: "all" (find all like this, with a model that takes example boxes), "one"
    # (the mask of this one object), "" (not said: "all" where the model can, else "one").
    mode: str = ""

    def __post_init__(self):
        object.__setattr__(self, "kind", ControlKind(self.kind))


SMART_MODES = ("all", "one")


@dataclass(frozen=True)
class TextPromptControl:
    from_name: str
    to_name: str


@dataclass(frozen=True)
class LabelMapping:
    """Everything the backend needs from one label config, and what of it is not served."""

    label_sets: tuple[LabelSet, ...]
    text_prompts: tuple[TextPromptControl, ...] = ()
    images: dict = field(default_factory=dict)  # image name -> data key
    skipped: tuple[SkippedItem, ...] = ()
    smart_tools: tuple[SmartTool, ...] = ()  # answered with a mask of one object (a mask control on their image)
    # Smart <RectangleLabels> not set to model_smart="one": "find all like this" where the model takes example
    # boxes (answered in the image's controls with the picked label, boxes and/or masks), whatever else is bound.
    exemplar_tools: tuple[SmartTool, ...] = ()

    @property
    def active(self) -> tuple[LabelSet, ...]:
        return tuple(s for s in self.label_sets if not s.skip and s.classes)

    @property
    def needs_masks(self) -> bool:
        """A mask control is predicted, or a smart tool can ask for a mask: the mask model is needed."""
        return bool(self.smart_tools) or any(s.is_mask for s in self.active)

    def mask_sets(self, image: str) -> tuple[LabelSet, ...]:
        """The mask controls bound to `image`, skipped ones too (a smart tool answers in them)."""
        return tuple(s for s in self.label_sets if s.to_name == image and s.is_mask)

    def fingerprint(self) -> list:
        """What changes predictions, in a stable JSON-able form.

        `skipped` is left out: a skipped label predicts nothing, so a config with a blank label has
        the version of the same config without it.
        """
        return [
            [s.from_name, s.to_name, s.data_key, s.kind, s.threshold, s.skip,
             [[c.label, list(c.phrases)] for c in s.classes]]
            for s in self.label_sets
        ] + [["textarea", t.from_name, t.to_name] for t in self.text_prompts]

    def describe_skipped(self) -> tuple[str, ...]:
        return tuple(item.describe() for item in self.skipped)

    def without(self, from_name: str, label: str, reason: str) -> "LabelMapping":
        """This mapping less the class emitting `label` in the control `from_name` (on every image the
        control is bound to), recorded in `skipped` with `reason`.

        For what is only found unusable after tokenisation (a label whose phrase the tokenizer cannot
        use). A labelled control left without labels is dropped. Raises KeyError when the control
        has no such label, LabelConfigError (listing every reason) when nothing usable is left.
        """
        found: LabelClass | None = None
        tag = "RectangleLabels"
        label_sets = []
        for s in self.label_sets:
            if s.from_name != from_name:
                label_sets.append(s)
                continue
            kept = tuple(c for c in s.classes if c.label != label)
            if len(kept) != len(s.classes):
                found = next(c for c in s.classes if c.label == label)
                tag = s.tag
            if kept or s.kind == ControlKind.RECTANGLE:
                label_sets.append(s.with_classes(kept))
        if found is None:
            raise KeyError(f"the control {from_name!r} has no label {label!r}")
        skipped = self.skipped + (SkippedItem(from_name, found.value, reason, tag),)
        if not label_sets:
            raise LabelConfigError(nothing_usable(skipped, has_box_control=True))
        return LabelMapping(tuple(label_sets), self.text_prompts, self.images, skipped, self.smart_tools,
                            self.exemplar_tools)


def nothing_usable(skipped: Sequence[SkippedItem], has_box_control: bool) -> str:
    reasons = " | ".join(item.describe() for item in skipped)
    if not has_box_control:
        message = (
            "the label config has no <RectangleLabels>, <BrushLabels> or <PolygonLabels> (or <Rectangle>) control "
            "bound to an <Image>: add e.g. <RectangleLabels name=\"label\" toName=\"image\"><Label value=\"Car\"/>"
            "</RectangleLabels>"
        )
        return f"{message} | {reasons}" if reasons else message
    return f"nothing in the label config can be predicted: {reasons}"


def model_version_hash(mapping: LabelMapping, extra: dict) -> str:
    payload = json.dumps({"mapping": mapping.fingerprint(), **extra}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:8]
