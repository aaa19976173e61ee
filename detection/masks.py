"""Boxes -> masks with a SAM-family model (SAM, SAM-HQ, SAM 2 / 2.1) through transformers' classes.

One image embedding per image (the expensive part), then every box of that image prompted against it in
one decoder batch; masks come back at the image's own size. Callers pass images as displayed
(`open_image`: EXIF applied) and boxes in those pixels, as the detector returns them.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import torch
from PIL import Image

from .detector import resolve_device, resolve_dtype

log = logging.getLogger(__name__)

# SAM 2.1 Hiera-Tiny. Published: SAM 2 is "more accurate and 6x faster than SAM" on image segmentation
# (SAM 2 paper); 2.1 tiny has 38.9 M parameters (SAM ViT-B 93.7 M) and runs at 47.2 FPS vs 43.3 for 2.1
# small on an A100 with near-equal SA-V J&F, 76.5 vs 76.6 (facebookresearch/sam2 README). Measured here
# (random weights, 1024x1024, one CPU thread): one image embedding costs 6.3 s of CPU vs 21.7 s for SAM
# ViT-B. Its image processor needs torchvision; where that is missing, `facebook/sam-vit-base` (PIL only).
DEFAULT_SAM_MODEL = "facebook/sam2.1-hiera-tiny"

# Masks are cut to their box grown by this fraction of its side on each side (`clip_to_boxes`): the
# backend and the evaluation alike, so that a run's mask AP is what the backend would pre-label.
BOX_MARGIN = 0.1

# model_type -> family: how its image embeddings are fed back to the decoder (see `_image_inputs`). The
# hub's SAM 2 / 2.1 checkpoints are `sam2_video` (transformers' Auto class loads them as Sam2Model).
FAMILIES = {"sam": "sam", "sam_hq": "sam_hq", "sam2": "sam2", "sam2_video": "sam2"}


class MaskModelLoadError(RuntimeError):
    """The mask model or its processor could not be loaded; the message says what to do."""


@dataclass(frozen=True)
class MaskModelConfig:
    model: str = DEFAULT_SAM_MODEL  # hub id or local directory
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps (the detector's rules)
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    revision: str | None = None
    # Prompts per mask-decoder call. Only bounds memory: every box of a chunk is upsampled to the full
    # image at once (SAM pads to 1024x1024 first: 4 MB of float per box); results do not depend on it.
    boxes_per_call: int = 64


@dataclass(frozen=True)
class _Encoded:
    """A batch's image embeddings with, per image, its (h, w) and the (h, w) frame prompts are given in."""

    embeddings: object  # the family's `get_image_embeddings` output
    original_sizes: list[tuple[int, int]]
    frames: list[tuple[int, int]]
    padded: bool  # SAM: the frame is the resized image inside a padded square


class MaskModel:
    """One loaded SAM-family model + processor. Thread-compatible: callers serialise forward passes.

    Multimask output is off: a box is an unambiguous prompt, for which SAM's authors use the single-mask
    output (the three-mask head is for single clicks, where a part and the whole both fit); SAM 2's
    single-mask path also falls back to the best of its three masks by predicted IoU when the single mask
    is unstable. And it upsamples one mask per box instead of three.
    """

    def __init__(self, model, processor, config: MaskModelConfig):
        if config.boxes_per_call < 1:
            raise ValueError(f"boxes_per_call must be at least 1, got {config.boxes_per_call}")
        self.config = config
        self.model_type = _model_type(model, config.model)
        self.family = FAMILIES[self.model_type]
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.processor = processor
        self.model = model.to(self.device).eval()

    @classmethod
    def load(cls, config: MaskModelConfig = MaskModelConfig()) -> "MaskModel":
        from transformers import AutoModelForMaskGeneration, AutoProcessor

        # Validate device/dtype before spending time on a download.
        resolve_dtype(config.dtype, resolve_device(config.device))
        try:
            model = AutoModelForMaskGeneration.from_pretrained(config.model, revision=config.revision)
            processor = AutoProcessor.from_pretrained(config.model, revision=config.revision)
        except Exception as exc:  # OSError, HF hub errors, ValueError for a non-SAM architecture
            raise MaskModelLoadError(_load_hint(config.model, exc)) from exc
        log.info("loaded mask model %s on %s (%s)", config.model, config.device, config.dtype)
        return cls(model, processor, config)

    @property
    def model_revision(self) -> str | None:
        return getattr(self.model.config, "_commit_hash", None) or self.config.revision

    def masks_for_boxes(
        self, images: Sequence[Image.Image], boxes_per_image: Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        """Per image a bool tensor (N, H, W): the mask of each of its N boxes (xyxy pixels) at its size.

        The images are encoded in one batch (split the list to bound memory, as for the detector); images
        without boxes are not encoded.
        """
        if len(images) != len(boxes_per_image):
            raise ValueError(
                f"{len(images)} images but {len(boxes_per_image)} box lists: give one (N, 4) box tensor per image"
            )
        boxes = [_check_boxes(b, i) for i, b in enumerate(boxes_per_image)]
        out = [torch.zeros((0, im.size[1], im.size[0]), dtype=torch.bool) for im in images]
        todo = [i for i, b in enumerate(boxes) if len(b)]
        if not todo:
            return out
        encoded = self._encode([images[i] for i in todo])
        for j, i in enumerate(todo):
            out[i] = self._decode(encoded, j, boxes[i])
        return out

    def mask_for_prompt(
        self,
        image: Image.Image,
        points: Sequence[Sequence[float]] = (),
        point_labels: Sequence[int] = (),
        box: Sequence[float] | None = None,
    ) -> tuple[torch.Tensor, float]:
        """One (H, W) bool mask for an interactive prompt on one image, with the model's predicted IoU of
        it: clicks (x, y pixels of the image as displayed; label 1 on the object, 0 on the background)
        and/or a box (xyxy pixels).

        A lone click is ambiguous (a part, or the whole it belongs to): as SAM's authors recommend for it,
        the three-mask output is asked for and the mask with the highest predicted IoU kept. Any other
        prompt gives the single-mask output, as boxes do.
        """
        points_t = torch.as_tensor(points, dtype=torch.float32).reshape(-1, 2)
        labels_t = torch.as_tensor(point_labels, dtype=torch.long).reshape(-1)
        if len(points_t) != len(labels_t):
            raise ValueError(f"{len(points_t)} points but {len(labels_t)} point labels: give one label (1 or 0) per point")
        if not torch.isfinite(points_t).all():
            raise ValueError("prompt points contain NaN or infinite coordinates")
        box_t = _check_boxes([box], 0) if box is not None else None
        if not len(points_t) and box_t is None:
            raise ValueError("a prompt needs at least one point or a box")
        encoded = self._encode([image])
        (orig_h, orig_w), (frame_h, frame_w) = encoded.original_sizes[0], encoded.frames[0]
        scale = torch.tensor([frame_w / orig_w, frame_h / orig_h])
        prompt = {}
        if len(points_t):
            prompt["input_points"] = (points_t * scale)[None, None].to(self.device)  # (1 image, 1 object, n, 2)
            prompt["input_labels"] = labels_t[None, None].to(self.device)
        if box_t is not None:
            prompt["input_boxes"] = (box_t * scale.repeat(2))[None].to(self.device)  # (1 image, 1 box, 4)
        multimask = box_t is None and len(points_t) == 1
        with self._inference():
            outputs = self.model(multimask_output=multimask, **prompt, **self._image_inputs(encoded.embeddings, 0))
        logits = outputs.pred_masks.float()  # (1, 1, k, h, w)
        scores = outputs.iou_scores[0, 0].float().cpu()  # (k,)
        best = int(scores.argmax()) if multimask else 0
        mask = self._post_process(encoded, 0, logits[:, :, best : best + 1])[0, 0]
        return mask, float(scores[best])

    def _encode(self, images: Sequence[Image.Image]) -> "_Encoded":
        """The image embeddings of a batch, and the frames prompts are given in."""
        encoded = self.processor(images=list(images), return_tensors="pt")
        pixel_values = encoded["pixel_values"].to(self.device)
        original_sizes = _pairs(encoded["original_sizes"])
        # The frame the encoder saw, in which prompts are given: SAM pads a resized image (its resized
        # size is reported); SAM 2 resizes to the full input without padding.
        padded = "reshaped_input_sizes" in encoded
        if padded:
            frames = _pairs(encoded["reshaped_input_sizes"])
        else:
            frames = [tuple(pixel_values.shape[-2:])] * len(images)
        with self._inference():
            embeddings = self.model.get_image_embeddings(pixel_values)
        return _Encoded(embeddings, original_sizes, frames, padded)

    def _decode(self, encoded: "_Encoded", j: int, boxes: torch.Tensor) -> torch.Tensor:
        (orig_h, orig_w), (frame_h, frame_w) = encoded.original_sizes[j], encoded.frames[j]
        scale = torch.tensor([frame_w / orig_w, frame_h / orig_h] * 2)
        prompts = (boxes * scale).to(self.device)
        image_inputs = self._image_inputs(encoded.embeddings, j)
        parts = []
        for start in range(0, len(prompts), self.config.boxes_per_call):
            chunk = prompts[start : start + self.config.boxes_per_call][None]  # (1, n, 4): one image, n prompts
            with self._inference():
                outputs = self.model(input_boxes=chunk, multimask_output=False, **image_inputs)
                masks = self._post_process(encoded, j, outputs.pred_masks.float())  # (n, 1, H, W) bool
            parts.append(masks[:, 0])
        return torch.cat(parts)

    def _post_process(self, encoded: "_Encoded", j: int, logits: torch.Tensor) -> torch.Tensor:
        """(1, n, k, h, w) mask logits of image j -> (n, k, H, W) bool masks at the image's own size."""
        post = {"reshaped_input_sizes": [encoded.frames[j]]} if encoded.padded else {}
        with self._inference():
            masks = self.processor.post_process_masks(logits, original_sizes=[encoded.original_sizes[j]], **post)[0]
        return masks.to("cpu", torch.bool)

    def _image_inputs(self, embeddings, j: int) -> dict:
        """Image j's slice of `get_image_embeddings`' output, as the family's forward takes it back."""
        if self.family == "sam":  # one (B, C, h, w) tensor
            return {"image_embeddings": embeddings[j : j + 1]}
        if self.family == "sam_hq":  # (final embedding, the ViT's global-attention features)
            final, intermediate = embeddings
            return {
                "image_embeddings": final[j : j + 1],
                "intermediate_embeddings": [x[j : j + 1] for x in intermediate],
            }
        return {"image_embeddings": [level[j : j + 1] for level in embeddings]}  # sam2: one per FPN level

    @contextmanager
    def _inference(self):
        autocast = self.dtype != torch.float32
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.dtype, enabled=autocast):
            yield


def has_torchvision() -> bool:
    """Whether torchvision imports: transformers 5's SAM 2 image processor needs it."""
    try:
        import torchvision  # noqa: F401
    except Exception:  # absent, or a build that does not match torch (fails at import)
        return False
    return True


def _load_hint(name: str, exc: BaseException) -> str:
    missing = _missing_dependency(exc)
    if missing:  # transformers 5 has SAM 2's image processor only as a torchvision build
        return (
            f"could not load mask model {name!r}: its image processor needs {missing}, which is not installed. "
            f"Install the {missing} build that matches your torch (same version pairing and package index as "
            "torch), or point SAM_MODEL (backend) or --sam-model (evaluation) at a SAM checkpoint such as "
            "facebook/sam-vit-base, which needs only PIL"
        )
    local = Path(name).expanduser()
    hint = (
        f"the directory {local} has no loadable SAM-family model (config.json, weights and processor "
        "files saved with save_pretrained; supported: SAM, SAM-HQ, SAM 2 / 2.1)"
        if local.exists()
        else "if this machine is offline, download it where there is internet "
        f"(`hf download {name} --local-dir DIR`) and point SAM_MODEL (backend) or --sam-model (evaluation) at DIR"
    )
    return f"could not load mask model {name!r}: {hint}. ({_first_line(exc)})"


def _missing_dependency(exc: BaseException) -> str | None:
    """The optional package transformers reports missing (its ImportError, or the ValueError of
    AutoProcessor: "... Missing optional dependencies: torchvision. ..."), else None."""
    text = str(exc)
    marker = "Missing optional dependencies:"
    if marker in text:
        return text.split(marker, 1)[1].strip().split()[0].rstrip(".,")
    if isinstance(exc, ImportError):
        return "torchvision" if "torchvision" in text.lower() else (getattr(exc, "name", None) or "a package")
    return None


def _model_type(model, name: str) -> str:
    model_type = getattr(model.config, "model_type", None)
    if model_type not in FAMILIES:
        raise MaskModelLoadError(
            f"mask model {name!r} is a {model_type!r} model; supported are SAM-family checkpoints of type "
            f"{', '.join(FAMILIES)} (e.g. {DEFAULT_SAM_MODEL}, facebook/sam-vit-base)"
        )
    return model_type


def _check_boxes(boxes, index: int) -> torch.Tensor:
    tensor = torch.as_tensor(boxes, dtype=torch.float32).cpu()
    if tensor.numel() == 0:
        return tensor.reshape(0, 4)
    if tensor.ndim != 2 or tensor.shape[1] != 4:
        raise ValueError(
            f"boxes of image {index} must have shape (N, 4) as x0, y0, x1, y1 pixels, got {tuple(tensor.shape)}"
        )
    if not torch.isfinite(tensor).all():
        raise ValueError(f"boxes of image {index} contain NaN or infinite coordinates")
    return tensor


def _pairs(sizes) -> list[tuple[int, int]]:
    values = sizes.tolist() if hasattr(sizes, "tolist") else sizes
    return [(int(h), int(w)) for h, w in values]


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else 'no message'}"


def clip_to_boxes(masks: torch.Tensor, boxes: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """Each (H, W) mask of `masks` (N, H, W) cut to its xyxy pixel box grown by `margin` x the box's side
    on each side: a pixel is kept when its centre lies in the grown box.

    A box prompt asks for the object in the box; what SAM adds far outside it is a neighbour or the
    background bleeding in, while the margin leaves room for a detector box a little tighter than the
    object.
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4).cpu()
    if masks.ndim != 3 or len(masks) != len(boxes):
        raise ValueError(f"{tuple(masks.shape)} masks for {len(boxes)} boxes: give (N, H, W) masks, one per box")
    if margin < 0:
        raise ValueError(f"margin must be at least 0, got {margin}")
    height, width = masks.shape[-2:]
    grow = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0) * margin
    low, high = boxes[:, :2] - grow, boxes[:, 2:] + grow  # (N, 2) as x, y
    xs = torch.arange(width, dtype=torch.float32) + 0.5
    ys = torch.arange(height, dtype=torch.float32) + 0.5
    inside_x = (xs[None] >= low[:, :1]) & (xs[None] <= high[:, :1])  # (N, W)
    inside_y = (ys[None] >= low[:, 1:]) & (ys[None] <= high[:, 1:])  # (N, H)
    return masks.to(torch.bool) & inside_y[:, :, None] & inside_x[:, None, :]
