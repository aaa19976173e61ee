"""Label Studio label config -> label sets (what to prompt, which label to emit), with label-studio-sdk.

- Every `<RectangleLabels>` bound to an `<Image>` is a label set; each `<Label>` one output class whose
  phrases are its `predicted_values="a, b"` or else its value made into words (`TrafficLight` ->
  "traffic light"). The emitted label is the Label's `alias` if set, else its `value`.
- `<Rectangle>` controls bound to an image emit unlabeled `rectangle` boxes; their phrases come from the
  control's own `predicted_values` or from a TextArea prompt.
- `model_score_threshold` overrides the box threshold per control, `model_skip="true"` skips it.
- A `<TextArea>` bound to an image is a free-text prompt (see `resolve_text_prompt`).
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from lxml import etree

from .detection.phrases import split_list, to_words


class LabelConfigError(ValueError):
    """A label config the backend cannot use; the message says what to change."""


class TextPromptError(ValueError):
    """A typed prompt phrase that maps to no label; the message names the usable labels."""


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
    kind: str  # "rectanglelabels" | "rectangle"
    classes: tuple[LabelClass, ...]
    threshold: float | None = None  # model_score_threshold, None -> BOX_THRESHOLD
    skip: bool = False

    @property
    def prompt_classes(self) -> list[list[str]]:
        return [list(c.phrases) for c in self.classes]

    def with_classes(self, classes: Sequence[LabelClass]) -> "LabelSet":
        return LabelSet(self.from_name, self.to_name, self.data_key, self.kind, tuple(classes), self.threshold, self.skip)


@dataclass(frozen=True)
class TextPromptControl:
    from_name: str
    to_name: str


@dataclass(frozen=True)
class LabelMapping:
    """Everything the backend needs from one label config."""

    label_sets: tuple[LabelSet, ...]
    text_prompts: tuple[TextPromptControl, ...] = ()
    images: dict = field(default_factory=dict)  # image name -> data key

    @property
    def active(self) -> tuple[LabelSet, ...]:
        return tuple(s for s in self.label_sets if not s.skip and s.classes)

    def fingerprint(self) -> list:
        """What changes predictions, in a stable JSON-able form."""
        return [
            [s.from_name, s.to_name, s.data_key, s.kind, s.threshold, s.skip,
             [[c.label, list(c.phrases)] for c in s.classes]]
            for s in self.label_sets
        ] + [["textarea", t.from_name, t.to_name] for t in self.text_prompts]


_TRUE = {"true", "1", "yes", "on"}
_FORBIDDEN = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def model_version_hash(mapping: LabelMapping, extra: dict) -> str:
    payload = json.dumps({"mapping": mapping.fingerprint(), **extra}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:8]


@functools.lru_cache(maxsize=64)
def parse_label_config(config: str) -> LabelMapping:
    """Parse with label-studio-sdk's LabelInterface; raise LabelConfigError with a clear message."""
    if not isinstance(config, str) or not config.strip():
        raise LabelConfigError("the label config is empty: send the project's labeling config XML")
    if _FORBIDDEN.search(config):
        raise LabelConfigError("the label config contains a DOCTYPE or ENTITY declaration, which is not allowed")
    raw_labels = _raw_label_values(config)

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

    label_sets, prompts, rect_controls = [], [], []
    for control in interface.controls:
        tag = control.tag.lower()
        targets = [t for t in (control.to_name or []) if t in images]
        if tag == "textarea":
            prompts.extend(TextPromptControl(control.name, t) for t in targets)
            continue
        if tag not in ("rectanglelabels", "rectangle"):
            continue
        if not targets:
            raise LabelConfigError(
                f'<{control.tag} name="{control.name}"> has toName="{",".join(control.to_name or [])}", '
                f"which is not an <Image> of this config"
            )
        attr = control.attr or {}
        threshold = _threshold(control.name, attr.get("model_score_threshold"))
        skip = str(attr.get("model_skip", "")).strip().lower() in _TRUE
        if tag == "rectanglelabels":
            classes = _label_classes(control, raw_labels.get(control.name, []))
            kind = "rectanglelabels"
        else:
            phrases = split_list(attr.get("predicted_values"))
            classes = tuple(LabelClass(p, p, None, (to_words(p),)) for p in phrases)
            kind = "rectangle"
            rect_controls.append(control.name)
        for target in targets:
            label_sets.append(LabelSet(control.name, target, images[target], kind, classes, threshold, skip))
    if not label_sets:
        raise LabelConfigError(
            "the label config has no <RectangleLabels> (or <Rectangle>) control bound to an <Image>: "
            "add e.g. <RectangleLabels name=\"label\" toName=\"image\"><Label value=\"Car\"/></RectangleLabels>"
        )
    return LabelMapping(tuple(label_sets), tuple(prompts), images)


def _threshold(name: str, value) -> float | None:
    if value is None or str(value).strip() == "":
        return None
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not 0.0 <= number <= 1.0:
        raise LabelConfigError(f'<RectangleLabels name="{name}"> model_score_threshold="{value}" must be a number in 0..1')
    return number


def _label_classes(control, raw_values: list) -> tuple[LabelClass, ...]:
    if not raw_values:
        raise LabelConfigError(f'<RectangleLabels name="{control.name}"> has no <Label value="..."/>: add at least one label')
    if any(not value.strip() for value, _ in raw_values):
        raise LabelConfigError(f'<RectangleLabels name="{control.name}"> has a <Label> without a value: give each label value="..."')
    seen, dups = set(), []
    for value, alias in raw_values:
        for name in {value, alias or value}:
            if name in seen:
                dups.append(name)
            seen.add(name)
    if dups:
        raise LabelConfigError(
            f'<RectangleLabels name="{control.name}"> defines the label(s) {", ".join(sorted(set(dups)))} more than once'
        )
    classes, emitted = [], set()
    for key, tag in (control.labels_attrs or {}).items():
        attr = tag.attr or {}
        value = attr.get("value") or key
        alias = attr.get("alias") or None
        label = alias or value
        if label in emitted:
            raise LabelConfigError(f'<RectangleLabels name="{control.name}"> emits the label {label!r} more than once')
        emitted.add(label)
        predicted = split_list(attr.get("predicted_values"))
        phrases = predicted or (to_words(value),)
        if not any(p.strip(" .") for p in phrases):
            raise LabelConfigError(f'<Label value="{value}"> gives no phrase to prompt with: set predicted_values')
        classes.append(LabelClass(label, value, alias, tuple(phrases), predicted))
    if len(classes) != len(raw_values):
        raise LabelConfigError(f'<RectangleLabels name="{control.name}"> has labels whose value and alias collide')
    return tuple(classes)


def _raw_label_values(config: str) -> dict[str, list[tuple[str, str | None]]]:
    """(value, alias) of the Labels per RectangleLabels name, duplicates kept (LabelInterface folds them)."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        root = etree.fromstring(config.encode(), parser)
    except etree.XMLSyntaxError as exc:
        raise LabelConfigError(f"the label config is not valid XML: {exc}") from None
    out: dict[str, list[str]] = {}
    for element in root.iter("RectangleLabels"):
        name = element.get("name") or ""
        out.setdefault(name, []).extend(
            (child.get("value", ""), child.get("alias")) for child in element.iter("Label")
        )
    return out


# ----- free-text prompts --------------------------------------------------------------------------


def prompt_texts(mapping: LabelMapping, context: dict | None) -> dict[str, list[str]]:
    """Texts typed in TextArea prompt controls, per image name, from an interactive `context`."""
    if not mapping.text_prompts or not isinstance(context, dict):
        return {}
    results = context.get("result")
    if not isinstance(results, list):
        return {}
    controls = {(t.from_name, t.to_name) for t in mapping.text_prompts}
    by_image: dict[str, list[str]] = {}
    for item in results:
        if not isinstance(item, dict) or str(item.get("type", "")).lower() != "textarea":
            continue
        key = (item.get("from_name"), item.get("to_name"))
        if key not in controls:
            continue
        value = item.get("value") or {}
        texts = value.get("text") if isinstance(value, dict) else None
        if isinstance(texts, str):
            texts = [texts]
        for text in texts or []:
            if isinstance(text, str):
                by_image.setdefault(key[1], []).extend(split_phrases(text))
    return {k: v for k, v in by_image.items() if v}


def split_phrases(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"[,;\n]+", text) if p.strip()]


def resolve_text_prompt(mapping: LabelMapping, texts_by_image: dict[str, list[str]]) -> tuple[LabelSet, ...]:
    """The label sets for one call: on images with typed phrases, only the labels those phrases name.

    A phrase maps to a label when it equals (case-insensitively) the label's value, alias, words
    form or one of its predicted values, or explicitly as `red car -> Car`. Unmapped phrases become
    unlabeled boxes when a `<Rectangle>` control is bound to the image, else TextPromptError.
    """
    if not texts_by_image:
        return mapping.active
    out: list[LabelSet] = []
    for image, texts in texts_by_image.items():
        sets = [s for s in mapping.label_sets if s.to_name == image and not s.skip]
        labelled = [s for s in sets if s.kind == "rectanglelabels"]
        chosen: dict[int, dict[str, list[str]]] = {i: {} for i in range(len(sets))}
        for text in texts:
            phrase, _, target = text.partition("->")
            phrase, target = phrase.strip(), target.strip()
            if "->" in text and (not phrase or not target):
                raise TextPromptError(f"prompt {text!r}: write it as 'phrase -> Label'")
            words = to_words(phrase)
            hits = 0
            for i, s in enumerate(sets):
                if s.kind != "rectanglelabels":
                    continue
                for c in s.classes:
                    if c.matches(target or phrase):
                        chosen[i].setdefault(c.label, []).append(words)
                        hits += 1
            if hits == 0:
                rect = [i for i, s in enumerate(sets) if s.kind == "rectangle"]
                if rect and not target:
                    for i in rect:
                        chosen[i].setdefault(words, []).append(words)
                    continue
                usable = ", ".join(c.describe() for s in labelled for c in s.classes) or "(none)"
                raise TextPromptError(
                    f"the prompt {text.strip()!r} matches no label of this project; use one of: {usable}; "
                    f"or map a phrase explicitly, e.g. '{phrase or 'red car'} -> "
                    f"{labelled[0].classes[0].label if labelled and labelled[0].classes else 'Label'}'"
                )
        for i, s in enumerate(sets):
            if not chosen[i]:
                continue
            if s.kind == "rectangle":
                classes = [LabelClass(k, k, None, (k,)) for k in chosen[i]]
            else:
                by_label = {c.label: c for c in s.classes}
                classes = [
                    LabelClass(label, by_label[label].value, by_label[label].alias, tuple(dict.fromkeys(phrases)))
                    for label, phrases in chosen[i].items()
                ]
            out.append(s.with_classes(classes))
    # Images without a typed prompt keep the config's own label sets.
    out.extend(s for s in mapping.active if s.to_name not in texts_by_image)
    return tuple(out)


def describe_labels(sets: Iterable[LabelSet]) -> str:
    return ", ".join(c.describe() for s in sets for c in s.classes)
