"""The label -> phrase rule, shared by the backend, the evaluation and the benchmark.

A class name is prompted as words: `TrafficLight`, `traffic_light` and `traffic-light` all become
"traffic light" (Grounding DINO was trained on natural-language phrases, and BERT's word pieces of
"trafficlight" mean nothing to it). A class may carry explicit synonyms (Label Studio's
`predicted_values="car, truck"`), which replace the made-up phrase.
"""
from __future__ import annotations

import re


def to_words(value: str) -> str:
    """`TrafficLight` / `traffic_light` / `traffic-light` -> "traffic light"."""
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", value)
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", text)
    text = re.sub(r"[_\-\s]+", " ", text)
    return " ".join(text.lower().split())


def split_list(value: str | None) -> tuple[str, ...]:
    """`"car, truck"` -> ("car", "truck"); blanks dropped."""
    if not value:
        return ()
    return tuple(p.strip() for p in value.split(",") if p.strip())


def class_phrases(name: str, synonyms: str | None = None) -> tuple[str, ...]:
    """The phrases a class is prompted with: its synonyms when given, else its name made into words."""
    return split_list(synonyms) or (to_words(name),)
