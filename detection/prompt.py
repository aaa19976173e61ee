"""Phrases -> caption -> positive map, exactly as the official Grounding DINO evaluation.

The official code (IDEA-Research/GroundingDINO `demo/test_ap_on_coco.py` with
`groundingdino/util/vl_utils.py`) builds the caption word by word, records a character span per
word, and maps each span to its tokens with `char_to_token` fallbacks. We do the same, and extend it
with *phrase groups*: one output class may be prompted by several phrases (a Label Studio label with
synonyms); its score is the max over its phrases.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

MAX_TEXT_LEN = 256  # the model's text length; the original truncates silently beyond it.


class PromptError(ValueError):
    """A label set that cannot be turned into a prompt (empty, a phrase too long, ...)."""


def normalise_phrase(phrase: str) -> str:
    """Lowercase and collapse whitespace; '.' is the caption's separator so it may not appear."""
    words = phrase.lower().replace(".", " ").split()
    return " ".join(words)


@dataclass(frozen=True)
class Caption:
    """A caption string and, per phrase, the character spans [start, end) of its words."""

    text: str
    phrase_spans: tuple[tuple[tuple[int, int], ...], ...]


def caption_for(phrases: Sequence[str]) -> Caption:
    """`"person . bicycle . … . toothbrush ."` with per-word spans, as the official evaluation."""
    text = ""
    all_spans = []
    for phrase in phrases:
        words = normalise_phrase(phrase).split(" ")
        if words == [""]:
            raise PromptError(f"empty phrase {phrase!r}")
        spans = []
        for i, word in enumerate(words):
            if i > 0:
                text += " "
            spans.append((len(text), len(text) + len(word)))
            text += word
        text += " ."
        all_spans.append(tuple(spans))
        text += " "
    return Caption(text=text.rstrip(" "), phrase_spans=tuple(all_spans))


def positive_map(encoding, phrase_spans, max_text_len: int = MAX_TEXT_LEN) -> torch.Tensor:
    """(num_phrases, max_text_len) map from phrases to their tokens, rows normalised.

    `encoding` is a fast tokenizer's `BatchEncoding` for one caption (it must offer `char_to_token`).
    """
    pmap = torch.zeros((len(phrase_spans), max_text_len), dtype=torch.float32)
    for j, spans in enumerate(phrase_spans):
        for beg, end in spans:
            t0 = _first_token(encoding, (beg, beg + 1, beg + 2))
            t1 = _first_token(encoding, (end - 1, end - 2, end - 3))
            if t0 is None or t1 is None:
                continue
            pmap[j, t0 : t1 + 1] = 1.0
    return pmap / (pmap.sum(-1, keepdim=True) + 1e-6)


def _first_token(encoding, char_positions):
    for pos in char_positions:
        try:
            token = encoding.char_to_token(pos)
        except Exception:  # out of range positions raise in some tokenizer versions
            token = None
        if token is not None:
            return token
    return None


@dataclass(frozen=True)
class PhraseGroup:
    """One output class and the phrases that prompt it."""

    phrases: tuple[str, ...]


@dataclass
class PromptChunk:
    """One model prompt: a caption covering a contiguous range of classes."""

    class_offset: int  # index of this chunk's first class in the full label set
    num_classes: int
    caption: Caption
    input_ids: torch.Tensor  # (1, L)
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    phrase_map: torch.Tensor  # (num_phrases, 256) positive map, one row per phrase
    phrase_to_class: torch.Tensor  # (num_phrases,) local class index of each phrase
    cache: dict = field(default_factory=dict, repr=False)  # per-device copies, text features

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[1])


@dataclass
class Prompt:
    """A whole label set, split into chunks that each fit in the model's 256 text tokens."""

    groups: tuple[PhraseGroup, ...]
    chunks: list[PromptChunk]

    @property
    def num_classes(self) -> int:
        return len(self.groups)


def phrase_groups(classes: Sequence[str | Sequence[str]]) -> tuple[PhraseGroup, ...]:
    """Accept `["cat", "dog"]` or `[["car", "truck"], ["person"]]` (synonyms per class)."""
    groups = []
    for i, cls in enumerate(classes):
        phrases = (cls,) if isinstance(cls, str) else tuple(cls)
        cleaned = tuple(p for p in (normalise_phrase(p) for p in phrases) if p)
        if not cleaned:
            raise PromptError(f"class {i} ({cls!r}) has no usable phrase")
        groups.append(PhraseGroup(cleaned))
    if not groups:
        raise PromptError("the label set is empty: give at least one class")
    return tuple(groups)


def build_prompt(
    tokenizer,
    classes: Sequence[str | Sequence[str]],
    chunk_size: int | None = None,
    max_text_len: int = MAX_TEXT_LEN,
) -> Prompt:
    """Split classes into chunks whose captions fit in `max_text_len` tokens, never splitting a class.

    With `chunk_size` (classes per chunk, as mmdetection's `chunked_size`) chunks are fixed-size,
    and a chunk that does not fit is an error; without it chunks are filled greedily.
    """
    groups = phrase_groups(classes)
    if chunk_size is not None and chunk_size < 1:
        raise PromptError(f"chunk size must be >= 1, got {chunk_size}")
    chunks: list[PromptChunk] = []
    start = 0
    while start < len(groups):
        if chunk_size is not None:
            end = min(start + chunk_size, len(groups))
            chunk = _make_chunk(tokenizer, groups, start, end, max_text_len)
            if chunk is None:
                raise PromptError(
                    f"classes {start}..{end - 1} do not fit in {max_text_len} tokens; "
                    f"use a smaller chunk size than {chunk_size}"
                )
        else:
            chunk, end = _greedy_chunk(tokenizer, groups, start, max_text_len)
        chunks.append(chunk)
        start = end
    return Prompt(groups=groups, chunks=chunks)


def _count_tokens(tokenizer, groups: Sequence[PhraseGroup]) -> int:
    caption = caption_for([p for g in groups for p in g.phrases])
    return len(tokenizer(caption.text)["input_ids"])


def _greedy_chunk(tokenizer, groups, start, max_text_len):
    # Token counts are additive per class up to a constant ([CLS]/[SEP]), so estimate with a
    # running sum and confirm with one real tokenization; binary-search down if the estimate is off.
    if _count_tokens(tokenizer, groups[start : start + 1]) > max_text_len:
        raise PromptError(
            f"class {start} ({', '.join(groups[start].phrases)!r}) alone needs more than "
            f"{max_text_len} tokens: shorten it or give it fewer synonyms"
        )
    lo, hi = start + 1, len(groups)  # lo always fits
    if _count_tokens(tokenizer, groups[start:hi]) <= max_text_len:
        lo = hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _count_tokens(tokenizer, groups[start:mid]) <= max_text_len:
            lo = mid
        else:
            hi = mid - 1
    chunk = _make_chunk(tokenizer, groups, start, lo, max_text_len)
    assert chunk is not None
    return chunk, lo


def _make_chunk(tokenizer, groups, start, end, max_text_len):
    chunk_groups = groups[start:end]
    phrases, owners = [], []
    for local, g in enumerate(chunk_groups):
        for p in g.phrases:
            phrases.append(p)
            owners.append(local)
    caption = caption_for(phrases)
    encoding = tokenizer(caption.text, return_tensors="pt")
    if encoding["input_ids"].shape[1] > max_text_len:
        return None
    token_type_ids = encoding.get("token_type_ids")
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(encoding["input_ids"])
    return PromptChunk(
        class_offset=start,
        num_classes=end - start,
        caption=caption,
        input_ids=encoding["input_ids"],
        attention_mask=encoding["attention_mask"],
        token_type_ids=token_type_ids,
        phrase_map=positive_map(encoding, caption.phrase_spans, max_text_len),
        phrase_to_class=torch.tensor(owners, dtype=torch.long),
    )
