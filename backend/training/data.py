"""Training data: a COCO-format dataset whose categories are the classes, prompted as at prediction time.

A category's phrases follow the label -> phrase rule of the detection core (``class_phrases``): its
name made into words, or its ``synonyms`` (a comma-separated string, an extension of COCO written for
Label Studio labels with ``predicted_values``). Images load as the evaluation loads them
(``evaluation.runner.run.load_image``: EXIF applied unless the JSON declares the stored frame).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detection import class_phrases
from evaluation.coco.dataset import CocoDataset, load_dataset
from evaluation.runner.run import load_image
from runtime.errors import InputError

from .errors import TrainingError


@dataclass(frozen=True)
class TrainingClass:
    name: str
    phrases: tuple[str, ...]


@dataclass(frozen=True)
class Target:
    """One ground-truth box: its class index (category file order) and [x, y, w, h] in pixels."""

    class_index: int
    bbox: tuple[float, float, float, float]


@dataclass(frozen=True)
class Split:
    train: tuple[int, ...]  # image ids
    heldout: tuple[int, ...]


@dataclass
class TrainingData:
    dataset: CocoDataset
    classes: tuple[TrainingClass, ...]
    targets: dict[int, tuple[Target, ...]]  # image id -> boxes; crowd regions left out

    @property
    def image_ids(self) -> list[int]:
        return list(self.dataset.image_ids)

    @property
    def class_phrases(self) -> list[list[str]]:
        return [list(c.phrases) for c in self.classes]

    def load_image(self, image_id: int):
        return load_image(self.dataset, image_id)

    def split(self, heldout_fraction: float, seed: int) -> Split:
        """A seeded random split of the images: ``heldout_fraction`` of them (at least one) held out."""
        if not 0 <= heldout_fraction < 1:
            raise TrainingError(f"--val-fraction must be in [0, 1), got {heldout_fraction}")
        ids = np.array(self.image_ids)
        order = np.random.default_rng(seed).permutation(len(ids))
        n_heldout = 0 if heldout_fraction == 0 else min(len(ids) - 1, max(1, round(heldout_fraction * len(ids))))
        if len(ids) - n_heldout < 1:
            raise TrainingError(f"{self.dataset.ann_path} has {len(ids)} image(s): too few to train on")
        heldout = sorted(int(i) for i in ids[order[:n_heldout]])
        train = sorted(int(i) for i in ids[order[n_heldout:]])
        return Split(tuple(train), tuple(heldout))


def load_training_data(ann: str | Path, images: str | Path) -> TrainingData:
    """Read and check a COCO-format dataset (``InputError``/``TrainingError`` name what is wrong)."""
    dataset = load_dataset(Path(ann).expanduser(), Path(images).expanduser())
    classes = []
    for c in dataset.categories:
        synonyms = c.get("synonyms")
        if synonyms is not None and not isinstance(synonyms, str):
            raise InputError(f"{dataset.ann_path}: category {c['name']!r} has 'synonyms' {synonyms!r}; "
                             "write them as one comma-separated string, e.g. \"car, truck\"")
        classes.append(TrainingClass(c["name"], class_phrases(c["name"], synonyms)))
    index = {int(c["id"]): k for k, c in enumerate(dataset.categories)}
    targets: dict[int, list[Target]] = {i: [] for i in dataset.image_ids}
    for a in dataset.data["annotations"]:
        if a.get("iscrowd"):
            continue
        image_id, cat = int(a["image_id"]), int(a["category_id"])
        if image_id not in targets:
            raise InputError(f"{dataset.ann_path}: annotation {a.get('id')} is on image {image_id}, "
                             "which the 'images' list does not have")
        if cat not in index:
            raise InputError(f"{dataset.ann_path}: annotation {a.get('id')} has category_id {cat}, "
                             "which the 'categories' list does not have")
        targets[image_id].append(Target(index[cat], tuple(float(v) for v in a["bbox"])))
    return TrainingData(dataset, tuple(classes), {i: tuple(t) for i, t in targets.items()})
