"""SAM 3's detect/rank/find_like equal separate full forwards of transformers' Sam3Model, post-processed here
independently (sigmoid x presence, boxes x size, masks: sigmoid, bilinear resize, > 0.5)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from detection.prompt import PromptError
from detection.sam3 import Sam3Detector, Sam3DetectorConfig
from tests.sam3_factory import tiny_sam3_dir

SIZES = [(53, 37), (67, 101), (56, 56)]  # (width, height): odd sizes, and one at the model's own size
CLASSES = ["cat", "red car", "traffic light"]
# Our text embedding is computed for one row and expanded; the full forward encodes the text once per image
# of the batch: matrix products of other shapes, which may round the last float bit otherwise (seen: 3e-8).
EXACT = dict(rtol=0, atol=1e-6)
NEAR_HALF = 1e-5  # mask pixels whose probability is this close to the 0.5 threshold may flip with that bit


def images(seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in SIZES]


@pytest.fixture(scope="module", params=["sam3", "sam3_lite_text"])
def detector(request) -> Sam3Detector:
    return Sam3Detector.load(Sam3DetectorConfig(model=str(tiny_sam3_dir(request.param)), device="cpu"))


def full_forward(detector: Sam3Detector, batch, phrase: str, boxes=None, box_labels=None):
    """transformers' one-call path on a batch of images: pixels and token ids in, everything computed again."""
    batch = [batch] if isinstance(batch, Image.Image) else batch
    pixels = detector.preprocessor(batch).pixel_values
    tokens = detector.checkpoint.tokenizer([phrase] * len(batch), padding="max_length", max_length=32, return_tensors="pt")
    extra = {} if boxes is None else {"input_boxes": boxes, "input_boxes_labels": box_labels}
    with torch.inference_mode():
        return detector.model(pixel_values=pixels, input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], **extra)


def reference(outputs, image: Image.Image, threshold: float | None, i: int = 0):
    """(scores, boxes, masks) of image i's queries over the threshold, re-derived from the raw outputs."""
    width, height = image.size
    scores = torch.sigmoid(outputs.pred_logits[i]) * torch.sigmoid(outputs.presence_logits[i, 0])
    keep = scores > threshold if threshold is not None else torch.ones_like(scores, dtype=torch.bool)
    boxes = outputs.pred_boxes[i][keep] * torch.tensor([width, height, width, height], dtype=torch.float32)
    probs = torch.sigmoid(outputs.pred_masks[i][keep])
    probs = F.interpolate(probs[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    return scores[keep], boxes, probs


def assert_same(ours, scores, labels, boxes, probs):
    """Our detections equal the reference's, in score order; masks equal `probs > 0.5` on every pixel not
    within NEAR_HALF of the threshold (at most 0.1% of them are that close)."""
    order = torch.argsort(scores, descending=True, stable=True)
    torch.testing.assert_close(ours.scores, scores[order], **EXACT)
    torch.testing.assert_close(ours.boxes, boxes[order], **EXACT)
    assert torch.equal(ours.labels, labels[order])
    if probs is not None:
        probs = probs[order]
        decided = (probs - 0.5).abs() > NEAR_HALF
        assert torch.equal(ours.masks[decided], (probs > 0.5)[decided])
        assert int((~decided).sum()) <= max(5, decided.numel() // 1000)


def test_one_image_embedding_for_all_phrases_equals_a_full_forward_per_phrase(detector):
    batch = images()
    ours = detector.detect(batch, CLASSES, threshold=0.2, masks=True)
    forwards = [full_forward(detector, batch, phrase) for phrase in CLASSES]  # the same batch: same rounding
    for i, (image, got) in enumerate(zip(batch, ours)):
        parts = [reference(outputs, image, 0.2, i) for outputs in forwards]
        labels = torch.cat([torch.full((len(p[0]),), c) for c, p in enumerate(parts)])
        scores, boxes, probs = (torch.cat([p[k] for p in parts]) for k in range(3))
        width, height = image.size
        boxes = torch.stack([boxes[:, 0].clamp(0, width), boxes[:, 1].clamp(0, height),
                             boxes[:, 2].clamp(0, width), boxes[:, 3].clamp(0, height)], dim=-1)
        assert len(scores) > 0 and len(scores) < 3 * 20  # the threshold keeps some, not all
        assert_same(got, scores, labels, boxes, probs)
        assert got.masks.shape == (len(scores), height, width) and got.masks.dtype == torch.bool


def test_text_is_encoded_once_per_phrase_across_images_and_calls(detector):
    detector.text.clear()
    misses = detector.text.misses
    detector.detect(images(0), CLASSES, threshold=0.2)
    detector.detect(images(1)[:1], CLASSES, threshold=0.2)
    assert detector.text.misses - misses == len(CLASSES)
    assert len(detector.text.entries) == len(CLASSES)


def test_ranking_keeps_the_top_k_over_all_classes_without_a_threshold(detector):
    image = images()[1]
    ours = detector.rank([image], CLASSES, top_k=25, masks=True, mask_rule="transformers")[0]
    parts = [reference(full_forward(detector, image, phrase), image, None) for phrase in CLASSES]
    scores = torch.cat([p[0] for p in parts])
    labels = torch.cat([torch.full((len(p[0]),), c) for c, p in enumerate(parts)])
    boxes, probs = torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts])
    top = torch.argsort(scores, descending=True, stable=True)[:25]
    assert len(ours) == 25
    assert_same(ours, scores[top], labels[top], boxes[top], probs[top])


def test_sam3_eval_masks_threshold_the_resized_logits(detector):
    image = images()[0]
    ours = detector.rank([image], ["cat"], top_k=5, masks=True)[0]  # the evaluation's default rule
    outputs = full_forward(detector, image, "cat")
    scores = torch.sigmoid(outputs.pred_logits[0]) * torch.sigmoid(outputs.presence_logits[0, 0])
    top = torch.argsort(scores, descending=True, stable=True)[:5]
    width, height = image.size
    logits = F.interpolate(outputs.pred_masks[0][top][:, None], size=(height, width), mode="bilinear", align_corners=False)
    assert torch.equal(ours.masks, (torch.sigmoid(logits) > 0.5)[:, 0])


def test_several_phrases_of_a_class_keep_per_object_the_best_phrase(detector):
    image = images()[2]
    ours = detector.detect([image], [["cat", "red car"]], threshold=0.2)[0]
    parts = [reference(full_forward(detector, image, phrase), image, 0.2) for phrase in ("cat", "red car")]
    # Independent greedy: highest score first, drop a box of the other phrase with IoU >= 0.7 to a kept one.
    pool = [(float(s), p, b) for p, part in enumerate(parts) for s, b in zip(part[0], part[1])]
    pool.sort(key=lambda x: -x[0])
    kept = []
    for score, phrase, box in pool:
        if all(not (other != phrase and _iou(box, kbox) >= 0.7) for _, other, kbox in kept):
            kept.append((score, phrase, box))
    assert len(kept) < len(pool)  # the two phrases found some objects twice
    torch.testing.assert_close(ours.scores, torch.tensor([k[0] for k in kept]), **EXACT)
    assert torch.equal(ours.labels, torch.zeros(len(kept), dtype=torch.long))


def _iou(a, b) -> float:
    lt = torch.maximum(a[:2], b[:2])
    rb = torch.minimum(a[2:], b[2:])
    inter = float((rb - lt).clamp(min=0).prod())
    area = lambda x: float((x[2] - x[0]).clamp(min=0) * (x[3] - x[1]).clamp(min=0))  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.mark.parametrize("phrase", [None, "red car"])
def test_find_like_returns_what_the_model_returns_for_the_example(detector, phrase):
    image = images()[1]  # 67 x 101
    positive, negative = [10.0, 20.0, 40.0, 60.0], [0.0, 0.0, 8.0, 9.0]
    ours = detector.find_like(image, positive, negatives=[negative], phrase=phrase, label=4, threshold=0.2)
    # Sam3Processor's normalisation: xyxy / (width, height), then (cx, cy, w, h).
    boxes = torch.tensor([positive, negative]) / torch.tensor([67.0, 101.0, 67.0, 101.0])
    cxcywh = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                          boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], dim=-1)
    outputs = full_forward(detector, image, phrase or "visual", cxcywh[None], torch.tensor([[1, 0]]))
    scores, ref_boxes, probs = reference(outputs, image, 0.2)
    ref_boxes = torch.stack([ref_boxes[:, 0].clamp(0, 67), ref_boxes[:, 1].clamp(0, 101),
                             ref_boxes[:, 2].clamp(0, 67), ref_boxes[:, 3].clamp(0, 101)], dim=-1)
    assert len(scores) > 0
    assert_same(ours, scores, torch.full((len(scores),), 4), ref_boxes, probs)
    # The example changes the answer: the same phrase without boxes scores otherwise.
    plain = reference(full_forward(detector, image, phrase or "visual"), image, None)[0]
    all_scores = torch.sigmoid(outputs.pred_logits[0]) * torch.sigmoid(outputs.presence_logits[0, 0])
    assert not torch.allclose(plain, all_scores)


def test_bad_prompts_are_refused_with_a_reason(detector):
    image = images()[0]
    with pytest.raises(PromptError, match="class 1 has no phrase"):
        detector.detect([image], ["cat", "  "])
    with pytest.raises(PromptError, match=r"the phrase 'cat cat .*' is \d+ tokens long; SAM 3 takes at most 32"):
        detector.detect([image], [" ".join(["cat"] * 40)])
    with pytest.raises(ValueError, match="an example box needs x1 > x0 and y1 > y0"):
        detector.find_like(image, [10, 10, 5, 20])
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        detector.rank([image], ["cat"], top_k=0)
