"""Label Studio's smart tools: the clicks and boxes of a `smart="true"` `<KeyPointLabels>` or
`<RectangleLabels>` in an interactive `/predict` context -> one SAM prompt per image, answered with a mask
in the image's `<BrushLabels>` or `<PolygonLabels>`, with the label the user picked.

Label Studio sends the smart regions as ordinary results in `params.context.result`: a click as a
`keypointlabels` result (x, y in percent of the image, `is_positive` false for an Alt-click on the
background), a drawn box as a `rectanglelabels` result (x, y, width, height in percent). As Label Studio's
SAM examples do, every click and the last box on an image make one prompt, and the label is the last
region's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .label_sets import LabelMapping, LabelSet


class SmartPromptError(ValueError):
    """A smart-tool context that cannot be answered; the message says what to change."""


@dataclass(frozen=True)
class SmartPrompt:
    """One image's clicks and box, and where the answer goes."""

    mask_set: LabelSet  # the mask control answering (brush or polygon)
    label: str  # emitted in the answer: the mask control's label
    points: tuple[tuple[float, float], ...]  # percent of the image as displayed
    point_labels: tuple[int, ...]  # 1: on the object, 0: background
    box: tuple[float, float, float, float] | None  # percent, x0 y0 x1 y1

    @property
    def to_name(self) -> str:
        return self.mask_set.to_name

    @property
    def data_key(self) -> str:
        return self.mask_set.data_key

    def in_pixels(self, size: tuple[int, int]) -> tuple[list[list[float]], list[int], list[float] | None]:
        """(points, point labels, box) in pixels of an image of (width, height) `size`."""
        width, height = size
        points = [[x / 100 * width, y / 100 * height] for x, y in self.points]
        box = None if self.box is None else [v / 100 * s for v, s in zip(self.box, (width, height) * 2)]
        return points, list(self.point_labels), box


def smart_prompts(mapping: LabelMapping, context: dict | None) -> tuple[SmartPrompt, ...]:
    """The smart-tool prompts of an interactive context, one per image; () when it holds none."""
    if not mapping.smart_tools or not isinstance(context, dict) or not isinstance(context.get("result"), list):
        return ()
    tools = {(t.from_name, t.to_name): t for t in mapping.smart_tools}
    by_image: dict[str, list[dict]] = {}
    for item in context["result"]:
        if isinstance(item, dict) and (item.get("from_name"), item.get("to_name")) in tools:
            by_image.setdefault(item["to_name"], []).append(item)
    return tuple(_prompt(mapping, image, items) for image, items in by_image.items())


def _prompt(mapping: LabelMapping, image: str, items: list[dict]) -> SmartPrompt:
    points, point_labels, box, label = [], [], None, None
    for item in items:
        kind = str(item.get("type", "")).lower()
        value = item.get("value") if isinstance(item.get("value"), dict) else {}
        labels = value.get(kind) or value.get("keypointlabels") or value.get("rectanglelabels")
        if not labels or not isinstance(labels[0], str):
            raise SmartPromptError(f"a smart {kind or 'tool'} region on {image!r} has no label: pick a label first")
        label = labels[0]
        x, y = _number(value, "x"), _number(value, "y")
        if kind == "keypointlabels":
            points.append((x, y))
            point_labels.append(0 if item.get("is_positive") is False else 1)
        elif kind == "rectanglelabels":
            x1, y1 = x + _number(value, "width"), y + _number(value, "height")
            box = (min(x, x1), min(y, y1), max(x, x1), max(y, y1))
        else:
            raise SmartPromptError(f"a smart tool sent a {kind or 'typeless'} region; only clicks (keypointlabels) "
                                   "and boxes (rectanglelabels) can prompt the mask model")
    if box is None and 1 not in point_labels:
        raise SmartPromptError("a smart prompt needs a click on the object or a box, not only background clicks")
    mask_set, emitted = _answering_control(mapping, image, label)
    return SmartPrompt(mask_set, emitted, tuple(points), tuple(point_labels), box)


def _answering_control(mapping: LabelMapping, image: str, label: str) -> tuple[LabelSet, str]:
    """The image's first mask control with the picked label, and that label as the control emits it."""
    candidates = mapping.mask_sets(image)
    for mask_set in candidates:
        for label_class in mask_set.classes:
            if label_class.matches(label):
                return mask_set, label_class.label
    names = " or ".join(f'<{s.tag} name="{s.from_name}">' for s in candidates)
    raise SmartPromptError(f"the smart tool's label {label!r} is not a label of {names}: add "
                           f'<Label value="{label}"/> there, so that the mask can carry it')


def _number(value: dict, key: str) -> float:
    number = value.get(key)
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
        raise SmartPromptError(f"a smart region's value.{key} must be a number (percent of the image), got {number!r}")
    return min(100.0, max(0.0, float(number)))


# ----- "find all like this": a smart box as an example (models that take example boxes: SAM 3) -------------


@dataclass(frozen=True)
class ExemplarPrompt:
    """One image's example box (and negative boxes), the picked label, and the controls that answer."""

    to_name: str
    data_key: str
    label: str  # as the labeller picked it (each answering control emits its own form of it)
    positive: tuple[float, float, float, float]  # percent, x0 y0 x1 y1
    negatives: tuple[tuple[float, float, float, float], ...]
    answer_sets: tuple[LabelSet, ...]  # boxes in <RectangleLabels>, masks in <BrushLabels>/<PolygonLabels>

    def in_pixels(self, size: tuple[int, int]) -> tuple[list[float], list[list[float]]]:
        """(positive, negatives) as xyxy pixels of an image of (width, height) `size`."""
        scale = size * 2
        return ([v / 100 * s for v, s in zip(self.positive, scale)],
                [[v / 100 * s for v, s in zip(box, scale)] for box in self.negatives])

    def emitted(self, label_set: LabelSet) -> str:
        """The picked label as `label_set` emits it."""
        return next(c.label for c in label_set.classes if c.matches(self.label))


def exemplar_prompts(mapping: LabelMapping, context: dict | None) -> tuple[ExemplarPrompt, ...]:
    """The "find all like this" prompts of an interactive context: per image the last positive box drawn with
    an exemplar tool (`mapping.exemplar_tools`) and every negative one (`is_positive: false`); () when none."""
    if not mapping.exemplar_tools or not isinstance(context, dict) or not isinstance(context.get("result"), list):
        return ()
    tools = {(t.from_name, t.to_name) for t in mapping.exemplar_tools}
    by_image: dict[str, list[dict]] = {}
    for item in context["result"]:
        if (isinstance(item, dict) and (item.get("from_name"), item.get("to_name")) in tools
                and str(item.get("type", "")).lower() == "rectanglelabels"):
            by_image.setdefault(item["to_name"], []).append(item)
    return tuple(_exemplar(mapping, image, items) for image, items in by_image.items())


def _exemplar(mapping: LabelMapping, image: str, items: list[dict]) -> ExemplarPrompt:
    positive, negatives, label, tool = None, [], None, None
    for item in items:
        value = item.get("value") if isinstance(item.get("value"), dict) else {}
        x, y = _number(value, "x"), _number(value, "y")
        x1, y1 = min(100.0, x + _number(value, "width")), min(100.0, y + _number(value, "height"))
        box = (min(x, x1), min(y, y1), max(x, x1), max(y, y1))
        if item.get("is_positive") is False:
            negatives.append(box)
            continue
        labels = value.get("rectanglelabels")
        if not labels or not isinstance(labels[0], str):
            raise SmartPromptError(f"a smart box on {image!r} has no label: pick a label first, then draw the example")
        positive, label, tool = box, labels[0], item.get("from_name")
    if positive is None:
        raise SmartPromptError(f"only negative example boxes on {image!r}: draw one box around an example to find")
    if positive[2] <= positive[0] or positive[3] <= positive[1]:
        raise SmartPromptError(f"the example box on {image!r} has no area: draw it around the object")
    return ExemplarPrompt(image, mapping.images[image], label, positive, tuple(negatives),
                          _answer_sets(mapping, image, label, tool))


def _answer_sets(mapping: LabelMapping, image: str, label: str, tool: str | None) -> tuple[LabelSet, ...]:
    """The image's controls with the picked label (not model_skip ones); else the smart control itself."""
    labelled = [s for s in mapping.label_sets if s.to_name == image and s.is_labelled
                and any(c.matches(label) for c in s.classes)]
    chosen = [s for s in labelled if not s.skip] or [s for s in labelled if s.from_name == tool]
    if not chosen:
        raise SmartPromptError(f"the smart box's label {label!r} is not a label of a <RectangleLabels>, <BrushLabels> "
                               f'or <PolygonLabels> on "{image}": add <Label value="{label}"/> to the control that '
                               "should receive the instances found")
    return tuple(chosen)
