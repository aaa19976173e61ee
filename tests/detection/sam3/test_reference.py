"""Opt-in: the core's SAM 3 pieces against transformers' Sam3Processor and torchvision themselves.

torchvision cannot be imported beside this project's CPU torch, so the reference runs in a separate venv
(torch 2.14.1 + torchvision 0.29.1 + the same transformers), given by SAM3_REFERENCE_VENV; when that path
has no Python yet it is created (`python -m venv`, then pip install: ~90 s and 5.7 GB where pip finds the
wheels on local disk). Skipped without the variable. tests/detection/sam3/reference_script.py runs there on
images and a tiny checkpoint written here; this test compares (docs/sam3.md records the differences).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detection.sam3 import Sam3Detector, Sam3DetectorConfig, Sam3Preprocessing, instance_results, roi_align
from tests.sam3_factory import build_tiny_sam3

pytestmark = pytest.mark.slow
VENV = os.environ.get("SAM3_REFERENCE_VENV")
REFERENCE_PACKAGES = ["torch==2.14.1", "torchvision==0.29.1", "transformers==5.24.0", "pillow", "numpy"]
SCRIPT = Path(__file__).with_name("reference_script.py")
IMAGE_SIZES = [(37, 53), (101, 67), (480, 641)]  # (height, width): odd sizes, one larger than 1008 / 2


def reference_python() -> Path:
    if not VENV:
        pytest.skip("set SAM3_REFERENCE_VENV to a venv path with torch 2.14.1 + torchvision 0.29.1 (created if missing) "
                    "to compare against transformers' Sam3Processor and torchvision's roi_align")
    python = Path(VENV) / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *REFERENCE_PACKAGES], check=True, timeout=1800)
    return python


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    python = reference_python()
    work = tmp_path_factory.mktemp("sam3-reference")
    (work / "images").mkdir()
    rng = np.random.default_rng(5)
    for i, (h, w) in enumerate(IMAGE_SIZES):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(work / "images" / f"{i}.png")
    model_dir = build_tiny_sam3(work / "model")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}  # its own packages only
    done = subprocess.run([str(python), str(SCRIPT), str(model_dir), str(work)], env=env, cwd=work,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    images = [Image.open(p).convert("RGB") for p in sorted((work / "images").glob("*.png"))]
    return torch.load(work / "reference.pt", weights_only=False), images, model_dir


def test_pixels_equal_sam3_image_processor_bit_for_bit(reference):
    ref, images, _ = reference
    assert torch.equal(Sam3Preprocessing(size=56)(images).pixel_values, ref["pixels"])
    assert torch.equal(Sam3Preprocessing(size=1008)(images).pixel_values, ref["pixels_1008"])


def test_roi_align_equals_torchvision_bit_for_bit(reference):
    ref = reference[0]
    features, boxes = ref["roi_inputs"]["features"], ref["roi_inputs"]["boxes"]
    for key, expected in ref["roi"].items():
        aligned, ratio = key.split("-", 1)
        got = roi_align(features, boxes, 7, 0.5, int(ratio), aligned == "True")
        assert torch.equal(got, expected), key


def test_post_processing_equals_transformers_on_the_same_outputs(reference):
    ref, images, _ = reference
    sizes = [im.size for im in images]
    for phrase, entry in ref["text"].items():
        raw = entry["raw"]
        ours = instance_results(raw["pred_logits"], raw["pred_boxes"], raw["presence_logits"], raw["pred_masks"], sizes, 0.2)
        for got, expected in zip(ours, entry["results"]):
            assert torch.equal(got.scores, expected["scores"]), phrase
            assert torch.equal(got.boxes, expected["boxes"]), phrase
            assert torch.equal(got.masks, expected["masks"].bool()), phrase


def _assert_detections_match(got, expected, label: int = 0):
    """Ours (score order, clipped) against transformers' results (query order, unclipped)."""
    order = torch.argsort(expected["scores"], descending=True, stable=True)
    width, height = got.masks.shape[2], got.masks.shape[1]
    boxes = expected["boxes"][order]
    boxes = torch.stack([boxes[:, 0].clamp(0, width), boxes[:, 1].clamp(0, height),
                         boxes[:, 2].clamp(0, width), boxes[:, 3].clamp(0, height)], dim=-1)
    torch.testing.assert_close(got.scores, expected["scores"][order], rtol=0, atol=1e-6)
    torch.testing.assert_close(got.boxes, boxes, rtol=0, atol=1e-4)
    assert torch.equal(got.labels, torch.full((len(order),), label))
    assert (got.masks != expected["masks"][order].bool()).float().mean() < 1e-3


def test_the_detector_end_to_end_matches_transformers_processor_model_and_post_processing(reference):
    ref, images, model_dir = reference
    detector = Sam3Detector.load(Sam3DetectorConfig(model=str(model_dir), device="cpu"))
    for label, phrase in enumerate(ref["text"]):
        ours = detector.detect(images, [phrase], threshold=0.2, masks=True, mask_rule="transformers")
        for got, expected in zip(ours, ref["text"][phrase]["results"]):
            assert len(got) == len(expected["scores"]) > 0
            _assert_detections_match(got, expected)


def test_find_like_matches_the_processors_exemplar_prompt(reference):
    ref, images, model_dir = reference
    detector = Sam3Detector.load(Sam3DetectorConfig(model=str(model_dir), device="cpu"))
    for phrase, entry in ref["exemplar"].items():
        got = detector.find_like(images[1], [10.0, 20.0, 40.0, 60.0], negatives=[[0.0, 0.0, 8.0, 9.0]],
                                 phrase=None if phrase == "None" else phrase, label=3, threshold=0.2)
        assert len(got) == len(entry["results"][0]["scores"]) > 0
        _assert_detections_match(got, entry["results"][0], label=3)
