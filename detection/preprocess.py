"""Image -> `pixel_values`/`pixel_mask`, bit for bit as the official Grounding DINO transforms.

The official evaluation (IDEA-Research/GroundingDINO, `groundingdino/datasets/transforms.py`) runs
`RandomResize([800], max_size=1333)`, `ToTensor()`, `Normalize(ImageNet mean, std)` on a PIL RGB image:

- size rule (`get_size_with_aspect_ratio`): when the long side would exceed `max_size`, the short side
  becomes `int(round(max_size * short / long))` first (Python's round, half to even), and the long side is
  then `int(short_target * long / short)` from that *rounded* short side. Hugging Face's processor computes
  the long side from the unrounded value, so 640×320 becomes 666×1333 there and 666×1332 here;
- resize: torchvision's `F.resize` on a PIL image is PIL's `Image.resize((w, h), BILINEAR)` on the uint8
  image (with torchvision installed transformers resizes float tensors instead, another result);
- `ToTensor`: uint8 HWC -> float32 CHW divided by 255; `Normalize`: float32 `(x - mean) / std`.

This module does the same with PIL, numpy and torch only (no torchvision), so the pixels are the official
ones whether or not torchvision is installed. A batch is zero-padded at the bottom/right to its largest
height and width, with `pixel_mask` 1 on real pixels and 0 on padding, as Hugging Face's processor (and
the official `nested_tensor_from_tensor_list`) do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .family import ModelLoadError
from .images import to_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def official_output_size(width: int, height: int, size: int, max_size: int | None) -> tuple[int, int]:
    """(height, width) after the official resize: `get_size_with_aspect_ratio`, operation for operation."""
    w, h = width, height
    if max_size is not None:
        min_original_size = float(min((w, h)))
        max_original_size = float(max((w, h)))
        if max_original_size / min_original_size * size > max_size:
            size = int(round(max_size * min_original_size / max_original_size))
    if (w <= h and w == size) or (h <= w and h == size):
        return (h, w)
    if w < h:
        ow = size
        oh = int(size * h / w)
    else:
        oh = size
        ow = int(size * w / h)
    return (oh, ow)


@dataclass(frozen=True)
class PixelBatch:
    """A batch of images as the model's inputs."""

    pixel_values: torch.Tensor  # (B, 3, H, W) float32, normalised, zero-padded bottom/right
    pixel_mask: torch.Tensor  # (B, H, W) int64: 1 on real pixels, 0 on padding

    def to(self, device: torch.device) -> "PixelBatch":
        return PixelBatch(self.pixel_values.to(device), self.pixel_mask.to(device))


@dataclass(frozen=True)
class OfficialPreprocessing:
    """The official transforms at a given input size (the model processor's `shortest_edge`/`longest_edge`)."""

    shortest_edge: int = 800
    longest_edge: int | None = 1333
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def from_image_processor(cls, image_processor, checkpoint: str = "the checkpoint") -> "OfficialPreprocessing":
        """The size and normalisation a checkpoint's processor config asks for, in the official pipeline."""
        size = image_processor.size
        field = (lambda name: size.get(name)) if isinstance(size, dict) else (lambda name: getattr(size, name, None))
        shortest, longest = field("shortest_edge"), field("longest_edge")
        unsupported = []
        if shortest is None:
            unsupported.append(f"size {dict(size) if isinstance(size, dict) else size} has no shortest_edge")
        if not getattr(image_processor, "do_resize", True):
            unsupported.append("do_resize is off")
        if not getattr(image_processor, "do_rescale", True) or abs(float(getattr(image_processor, "rescale_factor", 1 / 255)) - 1 / 255) > 1e-12:
            unsupported.append("pixels are not rescaled by 1/255")
        if not getattr(image_processor, "do_normalize", True):
            unsupported.append("do_normalize is off")
        if unsupported:
            raise ModelLoadError(
                f"{checkpoint}: its image processor config is not the Grounding DINO preprocessing "
                f"({'; '.join(unsupported)}); the core resizes the short side to shortest_edge with the "
                "long side capped at longest_edge, rescales by 1/255 and normalises"
            )
        mean = tuple(float(v) for v in getattr(image_processor, "image_mean", IMAGENET_MEAN))
        std = tuple(float(v) for v in getattr(image_processor, "image_std", IMAGENET_STD))
        return cls(int(shortest), None if longest is None else int(longest), mean, std)

    @property
    def name(self) -> str:
        """What metrics.json and /status record: the pipeline and its settings."""
        norm = "ImageNet" if (self.mean, self.std) == (IMAGENET_MEAN, IMAGENET_STD) else f"mean={self.mean}, std={self.std}"
        cap = f", max_size={self.longest_edge}" if self.longest_edge is not None else ""
        return (
            f"official GroundingDINO transforms: RandomResize([{self.shortest_edge}]{cap}) (official size rule), "
            f"PIL bilinear on uint8, ToTensor, Normalize({norm})"
        )

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(height, width) of an image of `width`×`height` after the resize."""
        return official_output_size(width, height, self.shortest_edge, self.longest_edge)

    def image_tensor(self, image: Image.Image) -> torch.Tensor:
        """One image -> (3, h, w) float32, resized, ToTensor'd and normalised as the official transforms."""
        if image.mode != "RGB":
            image = to_rgb(image)
        height, width = self.output_size(*image.size)
        if (width, height) != image.size:
            image = image.resize((width, height), Image.BILINEAR)
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()
        tensor = pixels.to(dtype=torch.float32).div(255)  # ToTensor: a division, not a multiplication
        mean = torch.as_tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
        return tensor.sub_(mean).div_(std)  # Normalize: torchvision's order of operations

    def __call__(self, images: Sequence[Image.Image]) -> PixelBatch:
        tensors = [self.image_tensor(image) for image in images]
        height = max(t.shape[1] for t in tensors)
        width = max(t.shape[2] for t in tensors)
        values = torch.zeros((len(tensors), 3, height, width), dtype=torch.float32)
        mask = torch.zeros((len(tensors), height, width), dtype=torch.long)
        for i, t in enumerate(tensors):
            values[i, :, : t.shape[1], : t.shape[2]] = t
            mask[i, : t.shape[1], : t.shape[2]] = 1
        return PixelBatch(values, mask)
