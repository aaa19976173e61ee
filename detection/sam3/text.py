"""One text embedding per phrase, computed once and reused for every image (SAM 3's text side).

SAM 3 takes one noun phrase per query, tokenized as Sam3Processor does (CLIP BPE, padded to 32 tokens).
`get_text_features(...).pooler_output` (the text encoder's states projected to the detector's width) and
the attention mask are all the detector needs of a phrase: `Sam3Model.forward(text_embeds=...)` takes them
back in place of `input_ids`. The cache keeps the last `max_entries` phrases' embeddings per device and
autocast dtype (an LVIS label set is 1,203 phrases: their embeddings are 1203 x 32 x 256 floats, 40 MB).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from ..prompt import PromptError

TEXT_LENGTH = 32  # Sam3Processor: padding="max_length", max_length=32
VISUAL = "visual"  # the text Sam3Processor gives a box-only (exemplar) prompt


@dataclass(frozen=True)
class PhraseEmbedding:
    """One phrase as the detector takes it: (1, L, D) features and the (1, L) attention mask."""

    features: torch.Tensor
    attention_mask: torch.Tensor

    def expand(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features.expand(batch, -1, -1), self.attention_mask.expand(batch, -1)


class PhraseEmbeddings:
    """Tokenize and encode phrases once; reuse the embedding for every image and later call."""

    def __init__(self, model, tokenizer, max_entries: int = 4096, text_length: int = TEXT_LENGTH):
        self.model = model
        self.tokenizer = tokenizer
        self.max_entries = max_entries
        self.text_length = text_length
        self.entries: OrderedDict = OrderedDict()
        self.hits = 0
        self.misses = 0

    def tokens(self, phrase: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask), each (1, 32), as Sam3Processor tokenizes `phrase`."""
        if not phrase or not phrase.strip():
            raise PromptError("an empty phrase cannot be a SAM 3 prompt: give each label a name or a predicted value")
        encoded = self.tokenizer([phrase], padding="max_length", max_length=self.text_length, return_tensors="pt")
        length = encoded["input_ids"].shape[1]
        if length > self.text_length:  # the processor pads but does not truncate: the model would fail
            raise PromptError(
                f"the phrase {phrase!r} is {length} tokens long; SAM 3 takes at most {self.text_length} "
                "(start and end included): shorten it"
            )
        return encoded["input_ids"], encoded["attention_mask"]

    def get(self, phrase: str, device: torch.device) -> PhraseEmbedding:
        autocast = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
        key = (phrase, str(device), autocast)
        entry = self.entries.get(key)
        if entry is not None:
            self.hits += 1
            self.entries.move_to_end(key)
            return entry
        self.misses += 1
        input_ids, attention_mask = self.tokens(phrase)
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        with torch.inference_mode():
            features = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        entry = PhraseEmbedding(features, attention_mask)
        self.entries[key] = entry
        if len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
        return entry

    def clear(self) -> None:
        self.entries.clear()
