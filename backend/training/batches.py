"""Model inputs for training: the prediction-time prompt, targets for transformers' loss, a seeded schedule.

- The caption is the detection core's (``build_prompt``: the same phrases, order and chunks as at
  prediction), so the model learns the prompt it will be asked with.
- transformers' Grounding DINO loss finds its classes by splitting the caption's tokens at ``.``
  (``build_label_maps``): class label k there is the k-th phrase of the caption. A class is supervised
  through its first phrase; its synonyms are checked to split as the core split them.
- Every batch holds images of one prompt chunk only: the loss's one-hot targets offset each image's
  class labels as if every image had the first image's caption (transformers 5 ``_get_target_classes_one_hot``),
  which is right only when they all share it.
- Boxes are normalised cx, cy, w, h relative to each image's own size, the frame the model predicts in
  (its reference points use the valid, unpadded area) and the one post-processing scales back from.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers.models.grounding_dino.modeling_grounding_dino import build_label_maps

from detection import Prompt, PromptChunk

from .data import Target
from .errors import TrainingError


@dataclass(frozen=True)
class ChunkLabels:
    """For one prompt chunk: the caption phrase index that supervises each class of the chunk."""

    chunk: PromptChunk
    phrase_of_class: tuple[int, ...]  # local class index -> phrase index in the caption

    @classmethod
    def of(cls, chunk: PromptChunk) -> "ChunkLabels":
        owners = chunk.phrase_to_class.tolist()
        label_maps = build_label_maps(torch.zeros(1, 1, chunk.num_tokens), chunk.input_ids)[0]
        if label_maps.shape[0] != len(owners):
            raise TrainingError(
                f"the caption {chunk.caption.text!r} splits into {label_maps.shape[0]} phrases for the loss but "
                f"has {len(owners)}: a phrase holds a '?' (a separator for Grounding DINO); rename that class")
        return cls(chunk, tuple(owners.index(k) for k in range(chunk.num_classes)))

    def targets(self, boxes: tuple[Target, ...], size: tuple[int, int]) -> dict:
        """``{"class_labels", "boxes"}`` for one image: this chunk's boxes, clipped, in normalised cxcywh."""
        width, height = size
        labels, out = [], []
        lo, hi = self.chunk.class_offset, self.chunk.class_offset + self.chunk.num_classes
        for t in boxes:
            if not lo <= t.class_index < hi:
                continue
            x, y, w, h = t.bbox
            x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
            x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
            if x1 - x0 < 1e-3 or y1 - y0 < 1e-3:  # nothing of it inside the image
                continue
            labels.append(self.phrase_of_class[t.class_index - lo])
            out.append([(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height])
        return {"class_labels": torch.tensor(labels, dtype=torch.long),
                "boxes": torch.tensor(out, dtype=torch.float32).reshape(-1, 4)}


class BatchBuilder:
    """Images + boxes of one chunk -> the keyword arguments of the model's ``forward``.

    Pixels come from the detection core's preprocessing (``OfficialPreprocessing``, images -> PixelBatch),
    the one the detector predicts with, at the training size.
    """

    def __init__(self, preprocess, prompt: Prompt):
        self.preprocess = preprocess
        self.chunks = [ChunkLabels.of(c) for c in prompt.chunks]

    def build(self, images: list, boxes: list[tuple[Target, ...]], chunk_index: int, device) -> dict:
        chunk = self.chunks[chunk_index]
        pixels = self.preprocess(list(images)).to(device)
        text = {name: getattr(chunk.chunk, name).expand(len(images), -1).to(device)
                for name in ("input_ids", "attention_mask", "token_type_ids")}
        labels = [{k: v.to(device) for k, v in chunk.targets(b, im.size).items()} for im, b in zip(images, boxes)]
        return {"pixel_values": pixels.pixel_values, "pixel_mask": pixels.pixel_mask, **text, "labels": labels}


class BatchSchedule:
    """Which images make the batch of each step: a pure function of (seed, step), so a resumed run
    and a run split over N processes see exactly the batches of an uninterrupted single process.

    An epoch visits every (image, chunk) pair once: per chunk a seeded permutation cut into batches of
    ``batch_size`` (a short remainder is dropped; a chunk with fewer images makes one smaller batch),
    and the batches of all chunks in a seeded order.
    """

    def __init__(self, image_ids, num_chunks: int, batch_size: int, seed: int):
        if batch_size < 1:
            raise TrainingError(f"--batch-size must be at least 1, got {batch_size}")
        self.image_ids = sorted(int(i) for i in image_ids)
        if not self.image_ids:
            raise TrainingError("no images to train on")
        self.num_chunks, self.seed = num_chunks, seed
        self.batch_size = min(batch_size, len(self.image_ids))
        self.batches_per_epoch = num_chunks * (len(self.image_ids) // self.batch_size)

    def batch(self, step: int) -> tuple[int, list[int]]:
        """(chunk index, image ids) of the global batch of ``step`` (0-based)."""
        epoch, index = divmod(step, self.batches_per_epoch)
        rng = np.random.default_rng([self.seed, epoch])
        batches = []
        for chunk in range(self.num_chunks):
            order = rng.permutation(len(self.image_ids))
            for b in range(len(order) // self.batch_size):
                ids = order[b * self.batch_size : (b + 1) * self.batch_size]
                batches.append((chunk, [self.image_ids[i] for i in ids]))
        chunk, ids = batches[int(rng.permutation(len(batches))[index])]
        return chunk, ids
