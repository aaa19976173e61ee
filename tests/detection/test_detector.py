"""Batched inference, EXIF orientation, image modes, model loading and device/dtype errors.

Tests that run the model run on both family architectures (`family_detector`, tests/detection/conftest.py);
the EXIF test is about the image frame, not the model, and runs on Grounding DINO only.
"""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from detection import Detector, DetectorConfig, ImageError, ModelLoadError, open_image
from tests.detection.scenes import scene

NAMES = ["red square", "yellow circle", "sky", "person"]


def test_batch_of_different_sizes_matches_one_by_one(family_detector):
    detector = family_detector
    images = [scene((640, 480)), scene((480, 640)), scene((500, 375))]
    prompt = detector.prompt(NAMES)
    batched = detector.rank(images, prompt, num_select=100)
    for image, dets in zip(images, batched):
        single = detector.rank([image], prompt, num_select=100)[0]
        # Padding to the batch's largest size changes the backbone's features slightly (the official
        # evaluation runs batch 1 for this reason); boxes must still be in each image's own frame.
        assert dets.boxes[:, 0::2].max() <= image.size[0] * 1.5
        torch.testing.assert_close(dets.scores[:20], single.scores[:20], atol=0.05, rtol=0)
    # the image that needs no padding (largest in both dimensions? none here) - check exactness
    # where padding is nil: a batch of equal sizes equals one-by-one to float precision
    same = [scene((640, 480)), scene((640, 480)).transpose(Image.FLIP_LEFT_RIGHT)]
    for image, dets in zip(same, detector.rank(same, prompt, num_select=100)):
        single = detector.rank([image], prompt, num_select=100)[0]
        torch.testing.assert_close(dets.scores, single.scores, atol=1e-4, rtol=0)
        torch.testing.assert_close(dets.boxes, single.boxes, atol=1e-2, rtol=0)


def test_boxes_scaled_by_each_images_own_size(family_detector):
    detector = family_detector
    images = [scene((640, 480)), scene((320, 900))]
    logits, pred_boxes = detector.forward(images, detector.prompt(NAMES).chunks[0])
    dets = detector.rank(images, detector.prompt(NAMES), num_select=5)
    for i, (w, h) in enumerate(im.size for im in images):
        top = pred_boxes[i][torch.topk((logits[i].sigmoid() @ detector.prompt(NAMES).chunks[0].phrase_map.T).max(-1).values, 1).indices[0]]
        cx, cy, bw, bh = top.tolist()
        assert dets[i].boxes[0].tolist() == pytest.approx([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], abs=1e-2)


def _with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    image.save(buf, format="JPEG", exif=exif, quality=95)
    return buf.getvalue()


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_rotated_images_give_boxes_in_the_rotated_frame(tiny_detector, orientation):
    stored = scene((640, 480))
    data = _with_orientation(stored, orientation)
    shown = open_image(data)
    expected_size = (480, 640) if orientation in (6, 8) else (640, 480)
    assert shown.size == expected_size
    # the frame a browser shows: orientation 6 = rotate 90° clockwise to display
    raw = Image.open(io.BytesIO(data)).convert("RGB")
    manual = {1: raw, 3: raw.rotate(180), 6: raw.rotate(-90, expand=True), 8: raw.rotate(90, expand=True)}[orientation]
    assert np.array_equal(np.asarray(shown), np.asarray(manual))
    prompt = tiny_detector.prompt(NAMES)
    dets = tiny_detector.detect([shown], prompt, box_threshold=0.3)[0]
    ref = tiny_detector.detect([manual], prompt, box_threshold=0.3)[0]
    torch.testing.assert_close(dets.boxes, ref.boxes)
    assert (dets.boxes[:, 2] <= expected_size[0]).all() and (dets.boxes[:, 3] <= expected_size[1]).all()


def _encode(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_image_modes_become_rgb():
    gray16 = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert np.asarray(open_image(_encode(gray16))).tolist()[0][0] == [255, 255, 255]
    half16 = Image.fromarray(np.full((4, 4), 32896, dtype=np.uint16))  # 128 * 257
    assert np.asarray(open_image(_encode(half16)))[0, 0].tolist() == [128, 128, 128]
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red -> white background
    assert np.asarray(open_image(_encode(rgba)))[0, 0].tolist() == [255, 255, 255]
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.info["transparency"] = 0
    assert np.asarray(open_image(_encode(palette, transparency=0)))[0, 0].tolist() == [255, 255, 255]
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))
    assert np.asarray(open_image(_encode(cmyk, "JPEG")))[0, 0].tolist() == pytest.approx([255, 0, 0], abs=3)
    for mode in ("L", "LA", "1", "I", "F"):
        assert open_image(Image.new(mode, (3, 2))).mode == "RGB"


@pytest.mark.parametrize(
    "data, message",
    [(b"", "empty"), (b"hello, not an image", "not a readable image"), (None, "truncated")],
)
def test_bad_image_bytes_give_a_reason(data, message):
    if data is None:
        data = _encode(scene(), "JPEG")[:2000]
    with pytest.raises(ImageError, match=message):
        open_image(data)


def test_pixel_limit_refuses_decompression_bombs():
    with pytest.raises(ImageError, match="exceeds the limit"):
        open_image(_encode(Image.new("L", (2000, 2000))), max_pixels=1_000_000)


def test_missing_model_names_the_id_and_the_local_directory_way(tmp_path):
    with pytest.raises(ModelLoadError) as err:
        Detector.load(DetectorConfig(model="nobody/no-such-model"))
    assert "'nobody/no-such-model'" in str(err.value) and "--local-dir" in str(err.value)
    with pytest.raises(ModelLoadError, match="has no loadable Grounding DINO model"):
        Detector.load(DetectorConfig(model=str(tmp_path)))


def test_device_and_dtype_errors_are_clear():
    with pytest.raises(ValueError, match="fp16 is not supported on the CPU"):
        Detector.load(DetectorConfig(device="cpu", dtype="fp16"))
    with pytest.raises(ValueError, match="unknown dtype"):
        Detector.load(DetectorConfig(dtype="int4"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            Detector.load(DetectorConfig(device="cuda"))


def test_text_feature_cache_changes_nothing(small_family_model_dir):
    images = [scene((640, 480)), scene((500, 375))]
    cached = Detector.load(DetectorConfig(model=str(small_family_model_dir), device="cpu", cache_text_features=True))
    plain = Detector.load(DetectorConfig(model=str(small_family_model_dir), device="cpu", cache_text_features=False))
    for _ in range(2):  # second round is served from the cache
        a = cached.forward(images, cached.prompt(NAMES).chunks[0])
        b = plain.forward(images, plain.prompt(NAMES).chunks[0])
        torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(a[1], b[1], atol=1e-5, rtol=0)
    assert cached.text_cache.hits >= 1 and cached.text_cache.misses == 1
