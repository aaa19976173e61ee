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

The values it builds (LabelMapping, LabelSet, ControlKind, ...) live in `label_sets.py`; the interactive
side (typed prompts) in `text_prompts.py`.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Sequence

from lxml import etree

from detection.phrases import class_phrases, split_list, to_words
from detection.prompt import normalise_phrase

from .label_sets import (
    SMART_MODES, ControlKind, LabelClass, LabelConfigError, LabelMapping, LabelSet, SkippedItem, SmartTool,
    TextPromptControl, nothing_usable,
)

_LABELLED_TAGS = ("RectangleLabels", "BrushLabels", "PolygonLabels")
_TRUE = {"true", "1", "yes", "on"}
_FORBIDDEN = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_BOX_TAGS = (ControlKind.RECTANGLE_LABELS, ControlKind.RECTANGLE, ControlKind.BRUSH_LABELS,
             ControlKind.POLYGON_LABELS)
_SMART_TAGS = (ControlKind.KEYPOINT_LABELS, ControlKind.RECTANGLE_LABELS)
SERVED = "<RectangleLabels>, <Rectangle>, <BrushLabels> and <PolygonLabels>"


class _Unusable(Exception):
    """A control or label that is skipped; carries the reason."""


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
        raise LabelConfigError(nothing_usable(skipped, has_box_control))
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
