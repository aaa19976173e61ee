"""Typed prompts: phrases a labeller types in a `<TextArea>` of the label config choose what to look for.

A phrase maps to the label whose value, alias or predicted value it equals (case-insensitive), or explicitly
as `red car -> Car`; phrases that map to no label are named with the usable labels. Split from
`label_config.py` (which parses the config into label sets) because this is the interactive request's side.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from detection.phrases import to_words
from detection.prompt import normalise_phrase

from .label_sets import ControlKind, LabelClass, LabelMapping, LabelSet, TextPromptError


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


@dataclass(frozen=True)
class TextPromptResolution:
    """The label sets of one interactive call, and what was typed that maps to nothing."""

    label_sets: tuple[LabelSet, ...]
    unknown_message: str | None = None  # None when every typed phrase mapped


def resolve_text_prompt(mapping: LabelMapping, texts_by_image: dict[str, list[str]]) -> TextPromptResolution:
    """The label sets for one call: on images with typed phrases, only the labels those phrases name.

    A phrase maps to a label when it equals (case-insensitively) the label's value, alias, words
    form or one of its predicted values, or explicitly as `red car -> Car`. Unmapped phrases become
    unlabeled boxes when a `<Rectangle>` control is bound to the image; otherwise they are left out
    and named in `unknown_message`. Raises TextPromptError when no typed phrase maps at all.
    """
    if not texts_by_image:
        return TextPromptResolution(mapping.active)
    out: list[LabelSet] = []
    problems: list[str] = []
    for image, texts in texts_by_image.items():
        sets = [s for s in mapping.label_sets if s.to_name == image and not s.skip]
        chosen, unknown, malformed = _choose_classes(sets, texts)
        problems.extend(malformed)
        if unknown:
            problems.append(_unknown_message(unknown, [s for s in sets if s.is_labelled]))
        for s, by_label in zip(sets, chosen):
            if by_label:
                out.append(s.with_classes(_typed_classes(s, by_label)))
    message = " | ".join(problems) or None
    if not out:
        raise TextPromptError(message or "the prompt names no label of this project")
    # Images without a typed prompt keep the config's own label sets.
    out.extend(s for s in mapping.active if s.to_name not in texts_by_image)
    return TextPromptResolution(tuple(out), message)


def _choose_classes(sets: list[LabelSet], texts: list[str]):
    """Per label set, emitted label -> typed phrases; plus the unknown and the malformed texts."""
    chosen: list[dict[str, list[str]]] = [{} for _ in sets]
    unknown: list[tuple[str, str]] = []  # (text, phrase)
    malformed: list[str] = []
    for text in texts:
        phrase, arrow, target = text.partition("->")
        phrase, target = phrase.strip(), target.strip()
        if arrow and (not phrase or not target):
            malformed.append(f"the prompt {text.strip()!r} is incomplete: write it as 'phrase -> Label'")
            continue
        words = to_words(phrase)
        if not normalise_phrase(words):
            malformed.append(f"the prompt {text.strip()!r} has no words to look for")
            continue
        hits = 0
        for i, s in enumerate(sets):
            if not s.is_labelled:
                continue
            for c in s.classes:
                if c.matches(target or phrase):
                    chosen[i].setdefault(c.label, []).append(words)
                    hits += 1
        if hits:
            continue
        rect = [i for i, s in enumerate(sets) if s.kind == ControlKind.RECTANGLE]
        if rect and not target:
            for i in rect:
                chosen[i].setdefault(words, []).append(words)
        else:
            unknown.append((text.strip(), phrase))
    return chosen, unknown, malformed


def _typed_classes(label_set: LabelSet, by_label: dict[str, list[str]]) -> list[LabelClass]:
    if label_set.kind == ControlKind.RECTANGLE:
        return [LabelClass(k, k, None, (k,)) for k in by_label]
    known = {c.label: c for c in label_set.classes}
    return [
        LabelClass(label, known[label].value, known[label].alias, tuple(dict.fromkeys(phrases)))
        for label, phrases in by_label.items()
    ]


def _unknown_message(unknown: list[tuple[str, str]], labelled: list[LabelSet]) -> str:
    usable = describe_labels(labelled) or "(none)"
    example_label = labelled[0].classes[0].label if labelled and labelled[0].classes else "Label"
    quoted = ", ".join(repr(text) for text, _ in unknown)
    verb = "matches" if len(unknown) == 1 else "match"
    noun = "prompt" if len(unknown) == 1 else "prompts"
    return (
        f"the {noun} {quoted} {verb} no label of this project; use one of: {usable}; "
        f"or map a phrase explicitly, e.g. '{unknown[0][1] or 'red car'} -> {example_label}'"
    )


def describe_labels(sets: Iterable[LabelSet]) -> str:
    return ", ".join(c.describe() for s in sets for c in s.classes)
