"""Boxes -> masks with small random SAM, SAM-HQ and SAM 2 models: sizes, batching, EXIF, load errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from detection import open_image
from detection.masks import MaskModel, MaskModelConfig, MaskModelLoadError
from tests.detection.scenes import scene
from tests.sam_factory import build_tiny_mask_model, has_torchvision, sam2_processor

FAMILIES = ["sam", "sam_hq", "sam2", "sam2_video"]  # sam2_video: how the hub ships SAM 2 / 2.1
# Different sizes and aspects: SAM pads each to a square, SAM 2 stretches each to one.
IMAGES = [((200, 120), [[10, 10, 120, 90], [0, 0, 200, 120], [150, 20, 190, 110]]), ((90, 160), [[5, 30, 80, 150]]), ((64, 64), [])]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mask-models")
    return {family: build_tiny_mask_model(root / family, family) for family in FAMILIES}


def load(model_dir, family, **config) -> MaskModel:
    config = MaskModelConfig(model=str(model_dir), device="cpu", **config)
    if family.startswith("sam2") and not has_torchvision():  # transformers' SAM 2 image processor needs torchvision
        from transformers import AutoModelForMaskGeneration

        return MaskModel(AutoModelForMaskGeneration.from_pretrained(model_dir), sam2_processor(), config)
    return MaskModel.load(config)


@pytest.fixture(scope="module")
def models(model_dirs):
    return {family: load(model_dirs[family], family) for family in FAMILIES}


def images_and_boxes():
    images = [scene(size) for size, _ in IMAGES]
    boxes = [torch.tensor(b, dtype=torch.float32).reshape(-1, 4) for _, b in IMAGES]
    return images, boxes


@pytest.mark.parametrize("family", FAMILIES)
def test_one_bool_mask_per_box_at_each_images_size(models, family):
    images, boxes = images_and_boxes()
    masks = models[family].masks_for_boxes(images, boxes)
    assert [tuple(m.shape) for m in masks] == [(3, 120, 200), (1, 160, 90), (0, 64, 64)]
    assert all(m.dtype == torch.bool for m in masks)
    assert all(0 < int(m.sum()) < m.numel() for m in masks[:2])  # random weights, but neither empty nor full


@pytest.mark.parametrize("family", FAMILIES)
def test_one_embedding_per_image_equals_one_call_per_box(models, family, monkeypatch):
    model = models[family]
    images, boxes = images_and_boxes()
    calls = []
    embed = model.model.get_image_embeddings
    monkeypatch.setattr(model.model, "get_image_embeddings", lambda pixels: calls.append(len(pixels)) or embed(pixels))
    batched = model.masks_for_boxes(images, boxes)
    assert calls == [2]  # one encoder batch; the image without boxes is not encoded
    for image, image_boxes, image_masks in zip(images, boxes, batched):
        for box, mask in zip(image_boxes, image_masks):
            (single,) = model.masks_for_boxes([image], [box[None]])
            # Batching images and prompts changes float summation order only: a threshold flip at most.
            assert (single[0] != mask).float().mean() < 1e-3
    chunked = MaskModel(model.model, model.processor, MaskModelConfig(model="same", device="cpu", boxes_per_call=1))
    assert all(torch.equal(a, b) for a, b in zip(chunked.masks_for_boxes(images, boxes), batched))


@pytest.mark.parametrize("family", FAMILIES)
def test_matches_transformers_documented_one_call_pipeline(models, family):
    """Reference: processor(images, input_boxes) -> model(...) -> post_process_masks, as transformers'
    model cards do it; our prompt scaling and per-image decoding must give the same masks."""
    model = models[family]
    image, boxes = scene((200, 120)), [[10.0, 10.0, 120.0, 90.0], [150.0, 20.0, 190.0, 110.0]]
    inputs = model.processor(images=[image], input_boxes=[boxes], return_tensors="pt")
    post = {"reshaped_input_sizes": inputs.pop("reshaped_input_sizes")} if "reshaped_input_sizes" in inputs else {}
    original_sizes = inputs.pop("original_sizes")
    with torch.inference_mode():
        outputs = model.model(**inputs, multimask_output=False)
    expected = model.processor.post_process_masks(outputs.pred_masks, original_sizes=original_sizes, **post)[0][:, 0]
    (masks,) = model.masks_for_boxes([image], [torch.tensor(boxes)])
    assert torch.equal(masks, expected)


@pytest.mark.parametrize("family", ["sam", "sam2_video"])
def test_exif_rotated_file_is_masked_in_the_displayed_frame(models, family, tmp_path):
    displayed = scene((90, 160))  # what a browser shows: 90 wide, 160 tall
    stored = displayed.transpose(Image.Transpose.ROTATE_90)  # the sensor's frame: 160 wide, 90 tall
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.png"  # PNG keeps pixels exact
    stored.save(path, exif=exif)
    opened = open_image(path)
    assert opened.size == (90, 160) and np.array_equal(np.asarray(opened), np.asarray(displayed))
    boxes = torch.tensor([[5.0, 30.0, 80.0, 150.0]])
    (from_file,) = models[family].masks_for_boxes([opened], [boxes])
    (reference,) = models[family].masks_for_boxes([displayed], [boxes])
    assert from_file.shape == (1, 160, 90) and torch.equal(from_file, reference)


def test_no_boxes_anywhere_encodes_nothing(models, monkeypatch):
    model = models["sam"]
    monkeypatch.setattr(model.model, "get_image_embeddings", lambda pixels: pytest.fail("encoded an image without boxes"))
    masks = model.masks_for_boxes([scene((30, 20)), scene((10, 40))], [torch.zeros(0, 4), []])
    assert [tuple(m.shape) for m in masks] == [(0, 20, 30), (0, 40, 10)]
    assert model.masks_for_boxes([], []) == []


def test_bad_boxes_are_refused_clearly(models):
    model, image = models["sam"], scene((30, 20))
    with pytest.raises(ValueError, match="1 images but 2 box lists"):
        model.masks_for_boxes([image], [torch.zeros(0, 4), torch.zeros(0, 4)])
    with pytest.raises(ValueError, match=r"boxes of image 0 must have shape \(N, 4\).*got \(3,\)"):
        model.masks_for_boxes([image], [torch.tensor([1.0, 2.0, 3.0])])
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.masks_for_boxes([image], [torch.tensor([[0.0, 0.0, float("nan"), 5.0]])])


def test_bf16_runs_and_keeps_bool_masks_at_image_size(model_dirs):
    model = MaskModel.load(MaskModelConfig(model=str(model_dirs["sam"]), device="cpu", dtype="bf16"))
    (masks,) = model.masks_for_boxes([scene((50, 40))], [torch.tensor([[5.0, 5.0, 30.0, 30.0]])])
    assert masks.shape == (1, 40, 50) and masks.dtype == torch.bool


def test_load_errors_name_the_checkpoint_and_the_fix(tmp_path, model_dirs):
    with pytest.raises(MaskModelLoadError) as err:
        MaskModel.load(MaskModelConfig(model="nobody/no-such-sam", device="cpu"))
    assert "'nobody/no-such-sam'" in str(err.value) and "--local-dir" in str(err.value) and "SAM_MODEL" in str(err.value)
    with pytest.raises(MaskModelLoadError, match="has no loadable SAM-family model"):
        MaskModel.load(MaskModelConfig(model=str(tmp_path), device="cpu"))
    from transformers import BertConfig

    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8).save_pretrained(tmp_path / "bert")
    with pytest.raises(MaskModelLoadError, match="has no loadable SAM-family model"):
        MaskModel.load(MaskModelConfig(model=str(tmp_path / "bert"), device="cpu"))
    with pytest.raises(ValueError, match="fp16 is not supported on the CPU"):
        MaskModel.load(MaskModelConfig(model=str(model_dirs["sam"]), device="cpu", dtype="fp16"))


@pytest.mark.skipif(has_torchvision(), reason="torchvision is installed: SAM 2 loads")
@pytest.mark.parametrize("family", ["sam2", "sam2_video"])
def test_sam2_without_torchvision_says_what_to_install(model_dirs, family):
    with pytest.raises(MaskModelLoadError) as err:
        MaskModel.load(MaskModelConfig(model=str(model_dirs[family]), device="cpu"))
    message = str(err.value)
    assert "needs torchvision" in message and "facebook/sam-vit-base" in message and "Traceback" not in message


def test_a_model_outside_the_sam_family_is_refused():
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8))
    with pytest.raises(MaskModelLoadError, match="'dir' is a 'bert' model; supported are .* sam, sam_hq, sam2, sam2_video"):
        MaskModel(bert, None, MaskModelConfig(model="dir", device="cpu"))


def test_clip_to_boxes_keeps_pixels_whose_centre_is_in_the_grown_box():
    from detection.masks import clip_to_boxes

    full = torch.ones(2, 10, 10, dtype=torch.bool)
    boxes = torch.tensor([[2.0, 3.0, 5.0, 7.0], [2.0, 3.0, 5.0, 7.0]])
    exact = torch.zeros(10, 10, dtype=torch.bool)
    exact[3:7, 2:5] = True
    assert torch.equal(clip_to_boxes(full, boxes)[0], exact)
    # Margin 0.5: x grows by 1.5 (0.5 .. 6.5, closed: columns 0-6), y by 2 (1 .. 9: rows 1-8).
    grown = torch.zeros(10, 10, dtype=torch.bool)
    grown[1:9, 0:7] = True
    assert torch.equal(clip_to_boxes(full, boxes, 0.5)[1], grown)
    with pytest.raises(ValueError, match="one per box"):
        clip_to_boxes(full, boxes[:1])


@pytest.mark.parametrize("family", ["sam", "sam2_video"])
def test_a_click_gives_the_best_of_three_masks_as_transformers_pipeline_does(models, family):
    """Reference: processor(images, input_points, input_labels) -> model(multimask) -> the mask with the
    highest predicted IoU -> post_process_masks, as transformers' model cards prompt with a point."""
    model = models[family]
    image = scene((200, 120))
    inputs = model.processor(images=[image], input_points=[[[[60.0, 40.0]]]], input_labels=[[[1]]], return_tensors="pt")
    post = {"reshaped_input_sizes": inputs.pop("reshaped_input_sizes")} if "reshaped_input_sizes" in inputs else {}
    original_sizes = inputs.pop("original_sizes")
    with torch.inference_mode():
        outputs = model.model(**inputs, multimask_output=True)
    best = int(outputs.iou_scores[0, 0].argmax())
    expected = model.processor.post_process_masks(outputs.pred_masks[:, :, best : best + 1], original_sizes=original_sizes,
                                                  **post)[0][0, 0]
    mask, score = model.mask_for_prompt(image, [[60.0, 40.0]], [1])
    assert torch.equal(mask, expected) and score == pytest.approx(float(outputs.iou_scores[0, 0, best]), rel=1e-3)
    # A box (single-mask output) is what masks_for_boxes gives for it.
    box_mask, _ = model.mask_for_prompt(image, box=[10.0, 10.0, 120.0, 90.0])
    (batched,) = model.masks_for_boxes([image], [torch.tensor([[10.0, 10.0, 120.0, 90.0]])])
    assert torch.equal(box_mask, batched[0])
    with pytest.raises(ValueError, match="at least one point or a box"):
        model.mask_for_prompt(image)
    with pytest.raises(ValueError, match="one label"):
        model.mask_for_prompt(image, [[1.0, 2.0]], [1, 0])
