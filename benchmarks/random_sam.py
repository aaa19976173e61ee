"""Random-weight SAM-family models saved with their processor (no downloads), for the benchmark and tests.

A saved directory loads back through `MaskModel.load` exactly as a hub id does. The cost of a forward pass
does not depend on weight values, so the full-size architectures serve speed work.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import Sam2Config, Sam2Model, SamConfig, SamModel, SamProcessor, SamVisionConfig
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

# ImageNet statistics: what every SAM-family processor normalises with.
IMAGE_MEAN = [0.485, 0.456, 0.406]
IMAGE_STD = [0.229, 0.224, 0.225]


def sam_processor(image_size: int):
    """SAM's (and SAM-HQ's) processor: longest side resized to `image_size`, padded to a square. PIL only."""
    image_processor = SamImageProcessorPil(
        size={"longest_edge": image_size}, pad_size={"height": image_size, "width": image_size}
    )
    return SamProcessor(image_processor=image_processor)


def save_sam2_processor(out_dir: Path, image_size: int, video: bool = False) -> None:
    """SAM 2's processor (resize to a square, no padding); `video`: the Sam2VideoProcessor the hub's SAM 2
    / 2.1 checkpoints carry (same image path). transformers only has a torchvision build of them: without
    torchvision the processor_config.json is written by hand, so that loading the directory fails the way
    a hub checkpoint does on such a machine."""
    processor_class = "Sam2VideoProcessor" if video else "Sam2Processor"
    try:
        import torchvision  # noqa: F401
    except Exception:
        config = {
            "processor_class": processor_class,
            "point_pad_value": -10,
            "target_size": image_size,
            "image_processor": {
                "image_processor_type": "Sam2ImageProcessor",
                "processor_class": processor_class,
                "do_convert_rgb": True,
                "do_normalize": True,
                "do_rescale": True,
                "do_resize": True,
                "image_mean": IMAGE_MEAN,
                "image_std": IMAGE_STD,
                "rescale_factor": 1 / 255,
                "resample": 2,
                "size": {"height": image_size, "width": image_size},
                "mask_size": {"height": 256, "width": 256},
            },
        }
        (out_dir / "processor_config.json").write_text(json.dumps(config, indent=2))
        return
    from transformers import Sam2ImageProcessor, Sam2Processor, Sam2VideoProcessor, Sam2VideoVideoProcessor

    image_processor = Sam2ImageProcessor(size={"height": image_size, "width": image_size})
    if video:
        video_processor = Sam2VideoVideoProcessor(size={"height": image_size, "width": image_size})
        processor = Sam2VideoProcessor(image_processor=image_processor, video_processor=video_processor, target_size=image_size)
    else:
        processor = Sam2Processor(image_processor=image_processor, target_size=image_size)
    processor.save_pretrained(out_dir)


def input_size(config) -> int:
    """The square input side the model's image encoder expects."""
    if config.model_type in ("sam2", "sam2_video"):
        size = config.vision_config.backbone_config.image_size
        return int(size[0] if isinstance(size, (list, tuple)) else size)
    return int(config.vision_config.image_size)


def save_mask_model(model, out_dir: Path) -> Path:
    """Save a SAM-family model with the processor that matches its input size."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    size = input_size(model.config)
    if model.config.model_type in ("sam2", "sam2_video"):
        save_sam2_processor(out_dir, size, video=model.config.model_type == "sam2_video")
    else:
        sam_processor(size).save_pretrained(out_dir)
    return out_dir


def build_full_size_sam(out_dir: Path, model_type: str = "sam", seed: int = 0) -> Path:
    """A family's default architecture with random weights, 1024x1024 input: SAM ViT-B (`sam`), SAM 2.1
    Hiera-Tiny (`sam2`), or `sam-small`: SAM with a 4-layer, 256-wide ViT and the full prompt encoder and
    decoder (a quick stand-in: about 1/20 of ViT-B's encoder cost). For speed work only."""
    torch.manual_seed(seed)
    if model_type == "sam":
        model = SamModel(SamConfig())
    elif model_type == "sam-small":
        vision = SamVisionConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, mlp_dim=1024, global_attn_indexes=[1, 3])
        model = SamModel(SamConfig(vision_config=vision))
    elif model_type == "sam2":
        model = Sam2Model(Sam2Config())
    else:
        raise ValueError(f"unknown model type {model_type!r}: use sam, sam-small or sam2")
    return save_mask_model(model.eval(), out_dir)
