"""Several prompt chunks on one image batch: the vision backbone runs once, and nothing changes.

An N-chunk rank/detect must equal each chunk run alone (its own one-chunk prompt, labels shifted by
the chunk's offset), exactly: the reused features are the very tensors a lone run computes.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from detection import Detections, Detector, DetectorConfig, merge_labelled

CLASSES = ["person", "bicycle", "car", "traffic light", "dog", "teddy bear", "red square"]
CHUNK = 3  # -> chunks of 3, 3 and 1 classes
NUM_SELECT = 50


def _images():
    rng = np.random.RandomState(7)
    return [Image.fromarray((rng.rand(h, w, 3) * 255).astype(np.uint8)) for w, h in [(640, 480), (480, 600)]]


@pytest.fixture(scope="module")
def detectors(small_family_model_dir):
    config = DetectorConfig(model=str(small_family_model_dir), device="cpu")
    reusing = Detector.load(config)
    return reusing, Detector(reusing.model, reusing.processor, DetectorConfig(model=config.model, device="cpu", reuse_backbone=False))


def _shifted(dets: Detections, offset: int) -> Detections:
    return Detections(dets.scores, dets.labels + offset, dets.boxes)


def _alone(detector, images, run):
    """Per image, one result per chunk: the chunk's classes prompted on their own."""
    prompt = detector.prompt(CLASSES, CHUNK)
    assert len(prompt.chunks) == 3
    per_chunk = []
    for chunk in prompt.chunks:
        classes = CLASSES[chunk.class_offset : chunk.class_offset + chunk.num_classes]
        per_chunk.append([_shifted(d, chunk.class_offset) for d in run(images, detector.prompt(classes))])
    return [[results[i] for results in per_chunk] for i in range(len(images))]


def _assert_equal(a: Detections, b: Detections):
    assert torch.equal(a.labels, b.labels) and torch.equal(a.scores, b.scores) and torch.equal(a.boxes, b.boxes)


def test_n_chunk_rank_equals_each_chunk_alone_with_one_backbone_run(detectors):
    detector, _ = detectors
    images = _images()
    alone = _alone(detector, images, lambda ims, prompt: detector.rank(ims, prompt, NUM_SELECT))
    runs, reuses = detector.backbone_reuse.runs, detector.backbone_reuse.reuses
    together = detector.rank(images, detector.prompt(CLASSES, CHUNK), NUM_SELECT)
    assert (detector.backbone_reuse.runs - runs, detector.backbone_reuse.reuses - reuses) == (1, 2)
    for got, parts in zip(together, alone):
        _assert_equal(got, Detections.concat(parts))


def test_n_chunk_detect_equals_each_chunk_alone_merged(detectors):
    detector, _ = detectors
    images = _images()
    threshold = 0.3
    alone = _alone(detector, images, lambda ims, prompt: detector.detect(ims, prompt, threshold))
    together = detector.detect(images, detector.prompt(CLASSES, CHUNK), threshold)
    assert sum(len(d) for d in together) > 0
    for got, parts in zip(together, alone):
        _assert_equal(got, merge_labelled(parts))


def test_without_the_lever_every_chunk_runs_the_backbone_and_results_are_the_same(detectors):
    reusing, plain = detectors
    assert plain.backbone_reuse is None and plain.lever_report["backbone_reuse"] == "off"
    images = _images()
    prompt = reusing.prompt(CLASSES, CHUNK)
    runs = reusing.backbone_reuse.runs
    expected = reusing.rank(images, prompt, NUM_SELECT)
    before = reusing.backbone_reuse.runs
    got = plain.rank(images, prompt, NUM_SELECT)  # no session: the wrapped backbone runs for each chunk
    assert reusing.backbone_reuse.runs - before == 3 and before - runs == 1
    for a, b in zip(got, expected):
        _assert_equal(a, b)


def test_reuse_only_serves_the_same_pixels_within_a_session(detectors):
    detector, _ = detectors
    reuse = detector.backbone_reuse
    a, b = detector.pixels(_images()[:1]), detector.pixels([_images()[1].resize((640, 480))])
    backbone = detector.model.model.backbone
    with torch.inference_mode():
        with reuse.session():
            first = backbone(a.pixel_values, a.pixel_mask)
            again = backbone(a.pixel_values, a.pixel_mask)
            other = backbone(b.pixel_values, b.pixel_mask)  # other pixels: computed, not served
            a.pixel_values.add_(0)  # written to in place: no longer the pixels the output was made from
            after_write = backbone(a.pixel_values, a.pixel_mask)
        outside = backbone(a.pixel_values, a.pixel_mask)
    assert again[0][0][0] is first[0][0][0]
    assert other[0][0][0] is not first[0][0][0] and not torch.equal(other[0][0][0], first[0][0][0])
    assert after_write[0][0][0] is not first[0][0][0] and torch.equal(after_write[0][0][0], first[0][0][0])
    assert outside[0][0][0] is not first[0][0][0]
    again[1].append("appended by the model")  # transformers appends the extra level's position embedding
    assert len(backbone(a.pixel_values, a.pixel_mask)[1]) == len(first[1])


def test_pixels_made_in_inference_mode_are_reused_too(detectors):
    detector, _ = detectors
    backbone = detector.model.model.backbone
    with torch.inference_mode(), detector.backbone_reuse.session():
        pixels = detector.pixels(_images()[:1])  # inference tensors carry no version counter
        first = backbone(pixels.pixel_values, pixels.pixel_mask)
        assert backbone(pixels.pixel_values, pixels.pixel_mask)[0][0][0] is first[0][0][0]
