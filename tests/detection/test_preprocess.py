"""Image -> pixels as the official Grounding DINO transforms: sizes for every shape, pixels bit for bit."""
from __future__ import annotations

from fractions import Fraction
from math import floor

import numpy as np
import pytest
import torch
from PIL import Image

from detection import Detector, DetectorConfig, OfficialPreprocessing
from tests.detection.scenes import scene


def official_size_rule(width: int, height: int, size: int = 800, max_size: int = 1333) -> tuple[int, int]:
    """The official rule in exact arithmetic: (height, width) after `RandomResize([size], max_size)`.

    The short side goes to `size`; if the long side would then pass `max_size`, the short side becomes
    round(max_size * short / long) (half to even, as Python's round) and the long side is computed from
    that rounded short side, truncated.
    """
    short, long = min(width, height), max(width, height)
    if Fraction(long, short) * size > max_size:
        size = round(Fraction(max_size * short, long))
    if short == size:
        return height, width
    long_out = floor(Fraction(size * long, short))
    return (long_out, size) if width < height else (size, long_out)


LONG_SIDE_640 = [(640, s) for s in range(1, 641)] + [(s, 640) for s in range(1, 641)]


def test_output_size_is_the_official_rule_for_every_image_with_long_side_640():
    preprocessing = OfficialPreprocessing()
    wrong = [(w, h) for w, h in LONG_SIDE_640 if preprocessing.output_size(w, h) != official_size_rule(w, h)]
    assert wrong == []
    # The examples of issue 15: COCO's 640×320 is 666×1332 officially (Hugging Face: 666×1333).
    assert preprocessing.output_size(640, 320) == (666, 1332)
    assert preprocessing.output_size(320, 640) == (1332, 666)
    assert preprocessing.output_size(640, 480) == (800, 1066)
    assert preprocessing.output_size(800, 600) == (800, 1066)
    assert preprocessing.output_size(1066, 800) == (800, 1066)  # short side already 800: kept as it is


def test_hugging_face_resize_differs_where_the_long_side_is_capped(tiny_detector):
    """Why the core does not use the processor: it rounds the long side from the unrounded short side."""
    image = scene((640, 320))
    hf = tiny_detector.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    assert tuple(hf.shape[-2:]) == (666, 1333)
    assert tuple(tiny_detector.pixels([image]).pixel_values.shape[-2:]) == (666, 1332)


def reference_pixels(image: Image.Image, height: int, width: int) -> torch.Tensor:
    """PIL bilinear on the uint8 image, /255, (x - mean) / std in float32: the official transforms' steps."""
    resized = image.resize((width, height), Image.BILINEAR) if image.size != (width, height) else image
    array = np.asarray(resized, dtype=np.uint8).astype(np.float32) / np.float32(255)
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
    return torch.from_numpy(((array - mean) / std).transpose(2, 0, 1).copy())


@pytest.mark.parametrize("width,height", [(640, 480), (480, 640), (640, 320), (320, 640), (640, 359), (640, 1),
                                          (1, 640), (640, 640), (613, 640), (1066, 800), (1500, 900)])
def test_pixels_equal_pil_bilinear_on_uint8_then_to_tensor_and_normalize(width, height):
    rng = np.random.RandomState(width * 1000 + height)
    image = Image.fromarray((rng.rand(height, width, 3) * 255).astype(np.uint8))
    preprocessing = OfficialPreprocessing()
    got = preprocessing.image_tensor(image)
    out_height, out_width = official_size_rule(width, height)
    assert tuple(got.shape) == (3, out_height, out_width)
    assert got.dtype == torch.float32
    assert torch.equal(got, reference_pixels(image, out_height, out_width))


def test_a_batch_is_zero_padded_bottom_right_with_a_pixel_mask():
    images = [scene((640, 480)), scene((320, 640))]
    preprocessing = OfficialPreprocessing(shortest_edge=200, longest_edge=333)
    batch = preprocessing(images)
    sizes = [preprocessing.output_size(*im.size) for im in images]  # (150, 200) ... as the rule gives
    height, width = max(h for h, _ in sizes), max(w for _, w in sizes)
    assert tuple(batch.pixel_values.shape) == (2, 3, height, width)
    assert tuple(batch.pixel_mask.shape) == (2, height, width) and batch.pixel_mask.dtype == torch.long
    for i, (image, (h, w)) in enumerate(zip(images, sizes)):
        assert torch.equal(batch.pixel_values[i, :, :h, :w], preprocessing.image_tensor(image))
        assert int(batch.pixel_values[i, :, h:, :].abs().sum()) == 0 and int(batch.pixel_values[i, :, :, w:].abs().sum()) == 0
        assert int(batch.pixel_mask[i].sum()) == h * w and int(batch.pixel_mask[i, :h, :w].min()) == 1


def test_the_detector_honours_the_processor_size_and_never_calls_the_processor(small_family_model_dir, monkeypatch):
    detector = Detector.load(DetectorConfig(model=str(small_family_model_dir), device="cpu"))
    assert (detector.preprocessor.shortest_edge, detector.preprocessor.longest_edge) == (320, 533)
    assert detector.preprocessing == (
        "official GroundingDINO transforms: RandomResize([320], max_size=533) (official size rule), "
        "PIL bilinear on uint8, ToTensor, Normalize(ImageNet)"
    )

    def refuse(*args, **kwargs):
        raise AssertionError("the image processor was called")

    monkeypatch.setattr(type(detector.image_processor), "__call__", refuse)
    monkeypatch.setattr(type(detector.image_processor), "preprocess", refuse)
    image = scene((640, 320))
    assert tuple(detector.pixels([image]).pixel_values.shape) == (1, 3, 266, 532)  # 533·320/640 = 266.5 -> 266
    assert len(detector.rank([image], detector.prompt(["red square"]), num_select=5)[0]) == 5


def test_a_processor_config_the_pipeline_cannot_follow_is_refused(tiny_detector):
    from types import SimpleNamespace

    from detection import ModelLoadError

    fixed = SimpleNamespace(size={"height": 512, "width": 512}, do_resize=True, do_rescale=True,
                            rescale_factor=1 / 255, do_normalize=True)
    with pytest.raises(ModelLoadError, match="'ckpt': its image processor config is not .*has no shortest_edge"):
        OfficialPreprocessing.from_image_processor(fixed, "'ckpt'")
    assert OfficialPreprocessing.from_image_processor(tiny_detector.image_processor) == OfficialPreprocessing()


def test_outputs_equal_the_processor_path_wherever_both_resize_to_the_same_size(small_family_model_dir):
    """Before this module the Detector fed the processor's pixels; the model's outputs are unchanged
    bit for bit where both pipelines pick the same size (the PIL processor resizes the same way)."""
    detector = Detector.load(DetectorConfig(model=str(small_family_model_dir), device="cpu").with_levers(()))
    image = Image.fromarray((np.random.RandomState(3).rand(480, 640, 3) * 255).astype(np.uint8))
    chunk = detector.prompt(["person", "car"]).chunks[0]
    hf = detector.image_processor(images=[image], return_tensors="pt")
    assert torch.equal(hf["pixel_values"], detector.pixels([image]).pixel_values)
    with torch.inference_mode():
        reference = detector.model(pixel_values=hf["pixel_values"], pixel_mask=hf["pixel_mask"], input_ids=chunk.input_ids,
                                   attention_mask=chunk.attention_mask, token_type_ids=chunk.token_type_ids)
    logits, boxes = detector.forward([image], chunk)
    assert torch.equal(logits, reference.logits) and torch.equal(boxes, reference.pred_boxes)
