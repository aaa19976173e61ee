"""Small random-weight SAM, SAM-HQ and SAM 2 (image and hub-style video) models for tests, built at run time (no downloads).

Each is saved with its processor by `save_pretrained` and loaded back by directory, as a user loads a hub
id. Input 256x256 (image embedding 16x16), a few hundred thousand parameters: a forward pass takes
milliseconds.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers.image_processing_utils import ImageProcessingMixin

from detection.masks import has_torchvision  # noqa: F401  (the tests ask it here)
from benchmarks.random_sam import IMAGE_MEAN, IMAGE_STD, save_mask_model

IMAGE_SIZE = 256
PATCH = 16  # image embedding = IMAGE_SIZE / PATCH per side


def _decoder_kwargs() -> dict:
    return dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_dim=64, iou_head_hidden_dim=32)


def tiny_sam_config():
    from transformers import SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig

    # num_pos_feats must be half the prompt encoder's hidden size, or box prompts fail with a shape error.
    vision = SamVisionConfig(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=2, mlp_dim=96, output_channels=32,
        global_attn_indexes=[1], window_size=4, num_pos_feats=16, image_size=IMAGE_SIZE, patch_size=PATCH,
    )
    prompt = SamPromptEncoderConfig(hidden_size=32, image_size=IMAGE_SIZE, patch_size=PATCH)
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=SamMaskDecoderConfig(**_decoder_kwargs()))


def tiny_sam_hq_config():
    from transformers import SamHQConfig, SamHQMaskDecoderConfig, SamHQPromptEncoderConfig, SamHQVisionConfig

    vision = SamHQVisionConfig(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=2, mlp_dim=96, output_channels=32,
        global_attn_indexes=[1], window_size=4, num_pos_feats=16, image_size=IMAGE_SIZE, patch_size=PATCH,
    )
    prompt = SamHQPromptEncoderConfig(hidden_size=32, image_size=IMAGE_SIZE, patch_size=PATCH)
    decoder = SamHQMaskDecoderConfig(vit_dim=48, **_decoder_kwargs())
    return SamHQConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def tiny_sam2_config():
    from transformers import Sam2Config, Sam2HieraDetConfig, Sam2MaskDecoderConfig, Sam2PromptEncoderConfig, Sam2VisionConfig

    # Four Hiera stages at strides 4..32 of a 256 input; the global-attention block must not be the first
    # block of a stage (transformers' query-pooling block then divides by a window size of 0).
    backbone = Sam2HieraDetConfig(
        hidden_size=16, num_attention_heads=1, image_size=[IMAGE_SIZE, IMAGE_SIZE], blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[16, 32, 64, 128], num_attention_heads_per_stage=[1, 1, 2, 2],
        window_size_per_stage=[8, 4, 4, 4], global_attention_blocks=[3], window_positional_embedding_background_size=[4, 4],
    )
    side = IMAGE_SIZE // 4
    vision = Sam2VisionConfig(
        backbone_config=backbone, backbone_channel_list=[128, 64, 32, 16],
        backbone_feature_sizes=[[side, side], [side // 2, side // 2], [side // 4, side // 4]], fpn_hidden_size=32,
    )
    prompt = Sam2PromptEncoderConfig(hidden_size=32, image_size=IMAGE_SIZE, patch_size=PATCH)
    return Sam2Config(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=Sam2MaskDecoderConfig(**_decoder_kwargs()))


def tiny_sam2_video_config():
    """SAM 2 as the hub ships SAM 2 / 2.1 (model type `sam2_video`: the image model plus video memory)."""
    from transformers import Sam2VideoConfig

    image = tiny_sam2_config()
    return Sam2VideoConfig(
        vision_config=image.vision_config, prompt_encoder_config=image.prompt_encoder_config,
        mask_decoder_config=image.mask_decoder_config, image_size=IMAGE_SIZE, memory_attention_hidden_size=32,
        memory_attention_num_layers=1, memory_attention_feed_forward_hidden_size=64, memory_encoder_hidden_size=32,
        memory_encoder_output_channels=16, mask_downsampler_embed_dim=32, memory_fuser_embed_dim=32,
        memory_fuser_intermediate_dim=64,
    )


CONFIGS = {"sam": tiny_sam_config, "sam_hq": tiny_sam_hq_config, "sam2": tiny_sam2_config, "sam2_video": tiny_sam2_video_config}


def tiny_mask_model(model_type: str, seed: int = 0):
    from transformers import AutoModelForMaskGeneration, Sam2VideoModel

    torch.manual_seed(seed)
    config = CONFIGS[model_type]()
    # The hub's sam2_video checkpoints are saved from the video model (memory weights included).
    model = Sam2VideoModel(config) if model_type == "sam2_video" else AutoModelForMaskGeneration.from_config(config)
    return model.eval()


def build_tiny_mask_model(out_dir: Path, model_type: str = "sam", seed: int = 0) -> Path:
    """Save a tiny random `sam`, `sam_hq`, `sam2` or `sam2_video` model with its processor into `out_dir`."""
    return save_mask_model(tiny_mask_model(model_type, seed), out_dir)


class Sam2ImageProcessorStandIn(ImageProcessingMixin):
    """Test double for transformers' Sam2ImageProcessor where torchvision (which it needs) is not installed.

    Its contract as Sam2Processor and MaskModel use it: pixel_values resized to a square without padding
    and ImageNet-normalised, `original_sizes` as (h, w); `post_process_masks` upsamples logits to each
    original size and thresholds at 0. Wrapped in the real Sam2Processor (which normalises the prompts);
    with torchvision installed the tests use the real image processor instead.
    """

    def __init__(self, image_size: int = IMAGE_SIZE, **kwargs):
        super().__init__(**kwargs)
        self.size = {"height": image_size, "width": image_size}

    def __call__(self, images, segmentation_maps=None, return_tensors=None, **kwargs):
        import numpy as np
        from transformers import BatchFeature

        images = images if isinstance(images, (list, tuple)) else [images]
        side = self.size["height"]
        mean, std = torch.tensor(IMAGE_MEAN).view(3, 1, 1), torch.tensor(IMAGE_STD).view(3, 1, 1)
        pixels = []
        for image in images:
            array = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
            resized = F.interpolate(array[None], size=(side, side), mode="bilinear", antialias=True)[0]
            pixels.append((resized - mean) / std)
        sizes = torch.tensor([[im.size[1], im.size[0]] for im in images])
        return BatchFeature({"pixel_values": torch.stack(pixels), "original_sizes": sizes}, tensor_type=return_tensors)

    def post_process_masks(
        self, masks, original_sizes, mask_threshold=0.0, binarize=True, max_hole_area=0.0, max_sprinkle_area=0.0,
        apply_non_overlapping_constraints=False, **kwargs,
    ):  # Sam2ImageProcessor's signature; the hole/sprinkle/overlap options are off (their defaults) here
        sizes = original_sizes.tolist() if hasattr(original_sizes, "tolist") else original_sizes
        out = []
        for i, size in enumerate(sizes):
            upsampled = F.interpolate(masks[i], tuple(int(v) for v in size), mode="bilinear", align_corners=False)
            out.append(upsampled > mask_threshold if binarize else upsampled)
        return out


def sam2_processor(image_size: int = IMAGE_SIZE):
    """transformers' Sam2Processor: with its real image processor where torchvision is installed, else
    around the stand-in."""
    from transformers import Sam2Processor

    if has_torchvision():
        from transformers import Sam2ImageProcessor

        image_processor = Sam2ImageProcessor(size={"height": image_size, "width": image_size})
    else:
        image_processor = Sam2ImageProcessorStandIn(image_size)
    return Sam2Processor(image_processor=image_processor, target_size=image_size)
