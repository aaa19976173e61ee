"""Targets for transformers' loss, the seeded batch schedule, and the loss of a batch as the sum of its images'."""
from __future__ import annotations

import pytest
import torch

from detection import build_prompt
from backend.training.batches import BatchBuilder, BatchSchedule, ChunkLabels
from backend.training.data import Target
from backend.training.errors import TrainingError
from tests.model_factory import make_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def test_targets_are_caption_phrases_and_normalised_boxes(tokenizer):
    # class 0 has two phrases, so class 1 is the caption's third phrase for the loss
    prompt = build_prompt(tokenizer, [["car", "truck"], ["traffic light"], ["hair drier"]])
    labels = ChunkLabels.of(prompt.chunks[0])
    assert labels.phrase_of_class == (0, 2, 3)
    boxes = (Target(1, (10, 20, 40, 20)), Target(0, (-10, 50, 30, 100)), Target(2, (300, 0, 5, 5)))
    t = labels.targets(boxes, (200, 100))
    assert t["class_labels"].tolist() == [2, 0]  # the box wholly outside the image is not a target
    # [10, 20, 50, 40] -> cx .15, cy .3, w .2, h .2;  [-10, 50, 20, 150] clipped to [0, 50, 20, 100]
    torch.testing.assert_close(t["boxes"], torch.tensor([[0.15, 0.3, 0.2, 0.2], [0.05, 0.75, 0.1, 0.5]]))


def test_each_chunk_supervises_only_its_own_classes(tokenizer):
    prompt = build_prompt(tokenizer, ["cat", "dog", "bird"], chunk_size=2)
    first, second = (ChunkLabels.of(c) for c in prompt.chunks)
    boxes = (Target(0, (0, 0, 10, 10)), Target(2, (20, 20, 10, 10)), Target(1, (40, 40, 10, 10)))
    assert first.targets(boxes, (100, 100))["class_labels"].tolist() == [0, 1]
    assert second.targets(boxes, (100, 100))["class_labels"].tolist() == [0]


def test_a_phrase_the_loss_would_split_is_refused(tokenizer):
    prompt = build_prompt(tokenizer, ["what? sign", "dog"])
    with pytest.raises(TrainingError, match=r"'\?'"):
        ChunkLabels.of(prompt.chunks[0])


def test_schedule_is_a_function_of_seed_and_step_and_never_mixes_chunks():
    ids = list(range(10, 23))  # 13 images
    a, b = BatchSchedule(ids, 2, 4, seed=7), BatchSchedule(list(reversed(ids)), 2, 4, seed=7)
    assert a.batches_per_epoch == 2 * 3  # per chunk 3 full batches, the remainder dropped
    steps = [a.batch(s) for s in range(3 * a.batches_per_epoch)]
    assert steps == [b.batch(s) for s in range(len(steps))]
    assert steps != [BatchSchedule(ids, 2, 4, seed=8).batch(s) for s in range(len(steps))]
    for epoch in range(3):
        batches = steps[epoch * 6 : (epoch + 1) * 6]
        for chunk in (0, 1):
            seen = [i for c, batch in batches if c == chunk for i in batch]
            assert len(seen) == 12 and len(set(seen)) == 12 and set(seen) <= set(ids)
    assert all(len(batch) == 4 for _, batch in steps)
    small = BatchSchedule(ids[:3], 1, 4, seed=0)  # fewer images than a batch: one batch of all of them
    assert small.batch_size == 3 and sorted(small.batch(5)[1]) == ids[:3]


@pytest.mark.slow
def test_loss_of_a_one_caption_batch_is_the_box_weighted_sum_of_its_images(tiny_model_dir):
    """What the per-image offset in transformers' one-hot targets and the torchrun loss scaling rely on."""
    from PIL import Image, ImageDraw
    from detection import OfficialPreprocessing, load_checkpoint

    model, processor = load_checkpoint(str(tiny_model_dir))
    model.eval()  # no dropout noise
    prompt = build_prompt(processor.tokenizer, ["square", ["disk", "ball"], "triangle"])
    builder = BatchBuilder(OfficialPreprocessing(96, 96), prompt)
    images, boxes = [], []
    for k, targets in enumerate([(Target(0, (5, 5, 20, 20)),),
                                 (Target(1, (30, 10, 25, 25)), Target(2, (2, 30, 20, 20)), Target(0, (40, 40, 9, 9))),
                                 ()]):  # an image without boxes: a negative
        image = Image.new("RGB", (96, 96), (10 * k, 90, 160))
        draw = ImageDraw.Draw(image)
        for t in targets:
            x, y, w, h = t.bbox
            draw.rectangle([x, y, x + w, y + h], fill=(200, 40 * t.class_index, 30))
        images.append(image)
        boxes.append(targets)
    with torch.no_grad():
        whole = model(**builder.build(images, boxes, 0, "cpu")).loss * 4  # 4 boxes in the batch
        parts = [model(**builder.build([im], [b], 0, "cpu")).loss * max(1, len(b)) for im, b in zip(images, boxes)]
    torch.testing.assert_close(whole, sum(parts), rtol=1e-4, atol=1e-3)
