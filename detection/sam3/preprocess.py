"""Image -> SAM 3's `pixel_values`, equal to transformers' Sam3ImageProcessor, without torchvision.

transformers 5 has Sam3ImageProcessor only as a torchvision build (it imports torchvision at import
time), and torchvision cannot be loaded beside the CPU torch on some machines. Its pipeline, on the CPU
where it runs (`device=None`), is:

1. the PIL image as a uint8 (3, H, W) tensor;
2. `torchvision.transforms.v2.functional.resize` to the checkpoint's square `size` (1008x1008 for
   facebook/sam3; no aspect ratio kept, no padding), bilinear, antialias=True. On a CPU with AVX2/AVX512
   (or aarch64) torchvision hands the uint8 tensor straight to `torch.nn.functional.interpolate(...,
   mode="bilinear", align_corners=False, antialias=True)` (torch's native uint8 kernel); elsewhere it
   interpolates in float32 and rounds back to uint8. Both are reproduced here, chosen by the same test;
3. rescale and normalise fused: float32 `(x - mean * 255) / (std * 255)` with mean/std of the checkpoint
   (0.5/0.5 for facebook/sam3), `mean * (1 / rescale_factor)` computed as transformers computes it.

docs/sam3.md records the comparison against the real processor (torchvision 0.29.1): bit-identical.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..family import ModelLoadError
from ..images import to_rgb

BILINEAR = 2  # PIL's resample code, what SAM 3's processor config stores


@dataclass(frozen=True)
class Sam3Batch:
    """A batch of images as SAM 3's inputs, with the sizes its outputs are mapped back to."""

    pixel_values: torch.Tensor  # (B, 3, S, S) float32, normalised
    sizes: list[tuple[int, int]]  # per image its original (width, height)

    def to(self, device: torch.device) -> "Sam3Batch":
        return Sam3Batch(self.pixel_values.to(device), self.sizes)


@dataclass(frozen=True)
class Sam3Preprocessing:
    """Resize to a `size` x `size` square, rescale, normalise: Sam3ImageProcessor's defaults are facebook/sam3's."""

    size: int = 1008
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    rescale_factor: float = 1 / 255

    @classmethod
    def from_config(cls, config: dict, checkpoint: str = "the checkpoint") -> "Sam3Preprocessing":
        """The preprocessing a checkpoint's image processor config (processor_config.json) asks for;
        ModelLoadError for a config this pipeline does not follow."""
        size = config.get("size") or {"height": 1008, "width": 1008}
        height, width = size.get("height"), size.get("width")
        unsupported = []
        if height is None or width is None or height != width:
            unsupported.append(f"size {size} is not a square height x width")
        for flag in ("do_resize", "do_rescale", "do_normalize"):
            if not config.get(flag, True):
                unsupported.append(f"{flag} is off")
        if config.get("resample", BILINEAR) != BILINEAR:
            unsupported.append(f"resample {config.get('resample')} is not bilinear (2)")
        if unsupported:
            raise ModelLoadError(
                f"{checkpoint}: its image processor config is not SAM 3's preprocessing ({'; '.join(unsupported)}); "
                "the core resizes to a square (bilinear, antialiased), rescales and normalises"
            )
        mean = tuple(float(v) for v in config.get("image_mean", cls.mean))
        std = tuple(float(v) for v in config.get("image_std", cls.std))
        return cls(int(height), mean, std, float(config.get("rescale_factor", 1 / 255)))

    @property
    def name(self) -> str:
        """What metrics.json and /status record: the pipeline and its settings."""
        return (
            f"SAM 3 processor: resize to {self.size}x{self.size} (bilinear, antialias, uint8), "
            f"Normalize(mean={list(self.mean)}, std={list(self.std)})"
        )

    def image_tensor(self, image: Image.Image) -> torch.Tensor:
        """One image -> (3, size, size) float32, as Sam3ImageProcessor makes it on the CPU."""
        if image.mode != "RGB":
            image = to_rgb(image)
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()
        resized = resize_uint8(pixels[None], self.size, self.size)[0]
        # Fused rescale + normalise: mean and std scaled by 1 / rescale_factor, in float32.
        mean = torch.tensor(self.mean) * (1.0 / self.rescale_factor)
        std = torch.tensor(self.std) * (1.0 / self.rescale_factor)
        return resized.to(torch.float32).sub_(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))

    def __call__(self, images: Sequence[Image.Image]) -> Sam3Batch:
        if not images:
            raise ValueError("no images to run the model on")
        return Sam3Batch(torch.stack([self.image_tensor(im) for im in images]), [im.size for im in images])


def native_uint8_resize() -> bool:
    """torchvision's test (`_do_native_uint8_resize_on_cpu`) for handing uint8 to torch's bilinear kernel."""
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") or platform.machine() in ("aarch64", "arm64")


def resize_uint8(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 3, h, w) uint8 -> (N, 3, height, width) uint8: torchvision's bilinear antialiased tensor resize on the CPU."""
    if tuple(pixels.shape[-2:]) == (height, width):
        return pixels  # torchvision returns the image untouched
    if native_uint8_resize():
        return F.interpolate(pixels, size=[height, width], mode="bilinear", align_corners=False, antialias=True)
    resized = F.interpolate(pixels.to(torch.float32), size=[height, width], mode="bilinear", align_corners=False, antialias=True)
    return resized.round_().to(torch.uint8)
