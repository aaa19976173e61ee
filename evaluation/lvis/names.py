"""LVIS category names -> the phrases mmdetection prompts them with (its `clean_label_name`).

`ball_(sports)` -> "ball", `monitor_(computer_equipment) computer_monitor` -> "monitor computer monitor".
The published LVIS figures were measured with this rule, so the LVIS evaluation keeps it for parity
(the backend's rule, detection.phrases.to_words, would also split `iPod` into "i pod" and
`yo-yo` into "yo yo": different tokens). Case and spacing are normalised by the prompt builder.
"""
from __future__ import annotations

import re

PHRASE_RULE = "mmdetection clean_label_name (drop '(...)', '_' -> ' '), for parity with the published LVIS figures"


def clean_name(name: str) -> str:
    name = re.sub(r"\(.*\)", "", name)
    name = re.sub(r"_", " ", name)
    return " ".join(name.split())
