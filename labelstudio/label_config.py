"""Label Studio label config -> label sets (what to prompt, which label to emit), with label-studio-sdk.

- Every `<RectangleLabels>`, `<BrushLabels>` and `<PolygonLabels>` bound to an `<Image>` is a label set
  (boxes; masks as brush RLE or polygons); each `<Label>` one output class whose phrases are its
  `predicted_values="a, b"` or else its value made into words (`TrafficLight` -> "traffic light"). The
  emitted label is the Label's `alias` if set, else its `value`.
- `<Rectangle>` controls bound to an image emit unlabeled `rectangle` boxes; their phrases come from the
  control's own `predicted_values` or from a TextArea prompt.
- `model_score_threshold` overrides the box threshold per control, `model_skip="true"` skips it.
- A `<TextArea>` bound to an image is a free-text prompt (resolved in `text_prompts.py`).
- A `<KeyPointLabels>` or `<RectangleLabels>` with `smart="true"` is a smart tool: a click or a drawn box
  becomes a SAM prompt answered in the mask control of its image (`SmartTool`, labelstudio/smart_tools.py). A
  smart `<RectangleLabels>` is also a label set like any other (`model_skip="true"` keeps it a tool only).
  With a model that takes example boxes (SAM 3), a smart box is "find all like this" (`exemplar_tools`),
  unless its control says `model_smart="one"` (the mask of this one object, as above).
- What cannot be served (a blank, wordless or repeated label, a control bound to no image, a bad
  threshold, a `<Brush>`, `<Polygon>` or other control without labels to prompt with) is skipped and
  listed in `LabelMapping.skipped` with its reason; only a config with nothing usable is refused
  (LabelConfigError lists every reason).

Over ~400 lines on purpose: one parser, whose control kinds, label sets, smart tools and skips share its
private helpers; the interactive side (typed prompts) lives in `text_prompts.py`.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Sequence

from lxml import etree

from detection.phrases import class_phrases, split_list, to_words
from detection.prompt import normalise_phrase


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
_LABELLED_TAGS = ("RectangleLabels", "BrushLabels", "PolygonLabels")


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
            raise LabelConfigError(_nothing_usable(skipped, has_box_control=True))
        return LabelMapping(tuple(label_sets), self.text_prompts, self.images, skipped, self.smart_tools,
                            self.exemplar_tools)


_TRUE = {"true", "1", "yes", "on"}
_FORBIDDEN = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_BOX_TAGS = (ControlKind.RECTANGLE_LABELS, ControlKind.RECTANGLE, ControlKind.BRUSH_LABELS,
             ControlKind.POLYGON_LABELS)
_SMART_TAGS = (ControlKind.KEYPOINT_LABELS, ControlKind.RECTANGLE_LABELS)
SERVED = "<RectangleLabels>, <Rectangle>, <BrushLabels> and <PolygonLabels>"


class _Unusable(Exception):
    """A control or label that is skipped; carries the reason."""


def model_version_hash(mapping: LabelMapping, extra: dict) -> str:
    payload = json.dumps({"mapping": mapping.fingerprint(), **extra}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:8]


@functools.lru_cache(maxsize=64)
def parse_label_config(config: str) -> LabelMapping:
    """Parse with label-studio-sdk's LabelInterface; serve what is usable and list the rest in `skipped`.

    Raises LabelConfigError, with a message saying what to change, when the config cannot be read or
    nothing in it can be predicted (then the message lists every skipped item and why).
    """
    if not isinstance(config, str) or not config.strip():
        raise LabelConfigError("the label config is empty: send the project's labeling config XML")
    if _FORBIDDEN.search(config):
        raise LabelConfigError("the label config contains a DOCTYPE or ENTITY declaration, which is not allowed")
    raw_labels = _raw_labels(config)

    from label_studio_sdk.label_interface import LabelInterface

    try:
        interface = LabelInterface(config)
    except Exception as exc:  # LabelStudioXMLSyntaxError*, lxml errors, pydantic errors of odd tags
        raise LabelConfigError(f"the label config is not valid XML: {exc}") from None

    images = {}
    for obj in interface.objects:
        if obj.tag.lower() == "image":
            value = (obj.attr or {}).get("value") or ""
            if value.startswith("$") and len(value) > 1:
                images[obj.name] = value[1:]
    if not images:
        raise LabelConfigError('the label config has no <Image name="..." value="$key"/> tag to detect objects in')

    label_sets, prompts, skipped, smart = [], [], [], []
    has_box_control = False
    for control in interface.controls:
        tag = control.tag.lower()
        targets = [t for t in (control.to_name or []) if t in images]
        if tag in _SMART_TAGS and _is_smart(control, raw_labels.get(control.name, [])):
            mode = str((control.attr or {}).get("model_smart") or "").strip().lower()
            if mode and mode not in SMART_MODES:
                skipped.append(SkippedItem(control.name, None, f'model_smart="{mode}" is not "all" (find all like '
                                           'this) or "one" (the mask of this one object); its smart boxes answer as '
                                           'if it were not set', control.tag))
                mode = ""
            smart.extend(SmartTool(control.name, t, tag, mode) for t in targets)
        if tag == "textarea":
            prompts.extend(TextPromptControl(control.name, t) for t in targets)
        elif tag in _BOX_TAGS:
            has_box_control = has_box_control or bool(targets)
            sets, reasons = _box_control(control, images, raw_labels.get(control.name, []))
            label_sets.extend(sets)
            skipped.extend(reasons)
        elif tag == "keypointlabels" and smart and smart[-1].from_name == control.name:
            continue  # a prompt tool, checked below
        elif targets and not _is_true((control.attr or {}).get("model_skip")):
            reason = f"this backend predicts {SERVED}, not <{control.tag}>"
            skipped.append(SkippedItem(control.name, None, reason, control.tag))
    exemplar = tuple(t for t in smart if t.kind == "rectanglelabels" and t.mode != "one")
    smart, smart_skips = _answerable(smart, label_sets)
    skipped.extend(smart_skips)
    if not label_sets:
        raise LabelConfigError(_nothing_usable(skipped, has_box_control))
    return LabelMapping(tuple(label_sets), tuple(prompts), images, tuple(skipped), tuple(smart), exemplar)


def _is_smart(control, raw: Sequence["_RawLabel"]) -> bool:
    """`smart="true"` (or `smartOnly`) on the control, or on one of its `<Label>`s (Label Studio shows the
    smart tool for either)."""
    attr = control.attr or {}
    return _is_true(attr.get("smart")) or _is_true(attr.get("smartOnly")) or any(label.smart for label in raw)


def _answerable(tools: list[SmartTool], label_sets: list[LabelSet]) -> tuple[list[SmartTool], list[SkippedItem]]:
    """The smart tools with a mask control on their image to answer in; the others skipped (a smart
    `<RectangleLabels>` without one is still a plain label set)."""
    kept, skipped = [], []
    for tool in tools:
        if any(s.to_name == tool.to_name and s.is_mask for s in label_sets):
            kept.append(tool)
        elif tool.kind == ControlKind.KEYPOINT_LABELS:
            skipped.append(SkippedItem(tool.from_name, None, f'its smart clicks are answered with a mask, but no '
                                       f'<BrushLabels> or <PolygonLabels> is bound to "{tool.to_name}"; add one',
                                       "KeyPointLabels"))
    return kept, skipped


def _box_control(control, images: dict[str, str], raw: Sequence[_RawLabel]) -> tuple[list[LabelSet], list[SkippedItem]]:
    """The label sets of one `<RectangleLabels>`/`<Rectangle>` (one per image it is bound to), and what of
    it is skipped."""
    tag, attr = control.tag.lower(), control.attr or {}
    bound = list(control.to_name or [])
    skipped = []
    strays = [t for t in bound if t not in images]
    if strays or not bound:
        where = f'toName="{",".join(strays)}" is not an <Image> of this config' if bound else "it has no toName"
        skipped.append(SkippedItem(control.name, None, f"{where}; bind it to {' or '.join(images)}", control.tag))
    targets = [t for t in bound if t in images]
    if not targets:
        return [], skipped
    try:
        threshold = _threshold(attr.get("model_score_threshold"))
    except _Unusable as exc:
        return [], skipped + [SkippedItem(control.name, None, str(exc), control.tag)]
    if tag != ControlKind.RECTANGLE:
        classes, label_skips = _label_classes(control.name, raw, control.tag)
        if not raw:
            label_skips = [SkippedItem(control.name, None, 'it has no <Label value="..."/>; add at least one label',
                                       control.tag)]
        skipped += label_skips
        if not classes:
            return [], skipped
    else:
        classes, phrase_skips = _rectangle_classes(control.name, attr.get("predicted_values"))
        skipped += phrase_skips
    skip = _is_true(attr.get("model_skip"))
    return [LabelSet(control.name, t, images[t], tag, classes, threshold, skip) for t in targets], skipped


def _is_true(value) -> bool:
    return str(value or "").strip().lower() in _TRUE


def _nothing_usable(skipped: Sequence[SkippedItem], has_box_control: bool) -> str:
    reasons = " | ".join(item.describe() for item in skipped)
    if not has_box_control:
        message = (
            "the label config has no <RectangleLabels>, <BrushLabels> or <PolygonLabels> (or <Rectangle>) control "
            "bound to an <Image>: add e.g. <RectangleLabels name=\"label\" toName=\"image\"><Label value=\"Car\"/>"
            "</RectangleLabels>"
        )
        return f"{message} | {reasons}" if reasons else message
    return f"nothing in the label config can be predicted: {reasons}"


def _threshold(value) -> float | None:
    if value is None or str(value).strip() == "":
        return None
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not 0.0 <= number <= 1.0:
        raise _Unusable(f'model_score_threshold="{value}" must be a number in 0..1')
    return number


@dataclass(frozen=True)
class _RawLabel:
    value: str
    alias: str | None
    predicted_values: str | None
    smart: bool = False


def _label_classes(control: str, raw: Sequence[_RawLabel],
                   tag: str = "RectangleLabels") -> tuple[tuple[LabelClass, ...], list[SkippedItem]]:
    """The usable labels of one labelled control, and the others with their reasons."""
    classes, skipped, names = [], [], set()
    for label in raw:
        try:
            if not label.value.strip():
                raise _Unusable("the value is blank; give it a name")
            predicted = split_list(label.predicted_values)
            phrases = class_phrases(label.value, label.predicted_values)
            if not any(normalise_phrase(p) for p in phrases):
                raise _Unusable('it gives no phrase to prompt with; set predicted_values="..." to the words to look for')
            own = {label.value, label.alias or label.value}
            taken = sorted(own & names)
            if taken:
                raise _Unusable(
                    f'"{taken[0]}" is already a label of this control (the value or alias of an earlier <Label>); '
                    "rename or remove this one"
                )
        except _Unusable as exc:
            skipped.append(SkippedItem(control, label.value, str(exc), tag))
            continue
        names |= own
        classes.append(LabelClass(label.alias or label.value, label.value, label.alias, phrases, predicted))
    return tuple(classes), skipped


def _rectangle_classes(control: str, predicted_values: str | None) -> tuple[tuple[LabelClass, ...], list[SkippedItem]]:
    """A `<Rectangle>`'s predicted_values, one unlabeled class each; those without words skipped."""
    classes, skipped = [], []
    for phrase in split_list(predicted_values):
        if normalise_phrase(to_words(phrase)):
            classes.append(LabelClass(phrase, phrase, None, (to_words(phrase),)))
        else:
            skipped.append(SkippedItem(control, phrase, "it has no words to prompt with; remove it from predicted_values",
                                       "Rectangle"))
    return tuple(classes), skipped


def _raw_labels(config: str) -> dict[str, list[_RawLabel]]:
    """The Labels per labelled control name (RectangleLabels, BrushLabels, PolygonLabels, KeyPointLabels)
    as written, blank and duplicate ones kept (LabelInterface drops a `<Label>` without value and folds
    duplicates)."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        root = etree.fromstring(config.encode(), parser)
    except etree.XMLSyntaxError as exc:
        raise LabelConfigError(f"the label config is not valid XML: {exc}") from None
    out: dict[str, list[_RawLabel]] = {}
    for element in root.iter(*_LABELLED_TAGS, "KeyPointLabels"):
        out.setdefault(element.get("name") or "", []).extend(
            _RawLabel(child.get("value", ""), child.get("alias") or None, child.get("predicted_values"),
                      _is_true(child.get("smart")))
            for child in element.iter("Label")
        )
    return out
