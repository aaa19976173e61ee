"""Load Grounding DINO once, run it on batches of images, return detections in either mode."""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

# Speed lever (CPU, exact: memory placement only): PyTorch backs large CPU tensors with transparent huge
# pages when THP_MEM_ALLOC_ENABLE=1, which cuts the page faults of the model's 100+ MB activations
# (~1.2x per forward on the benchmark machine). PyTorch reads the variable once, at its first
# allocation, so it only takes effect when this package is imported before torch (entry points: import
# `backend.detection` first); set THP_MEM_ALLOC_ENABLE=0 to turn it off.
THP_LEVER_ACTIVE = "torch" not in sys.modules and os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1") == "1"

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from .postprocess import Detections, class_nms, label_detections, merge_labelled, rank_detections  # noqa: E402
from .prompt import MAX_TEXT_LEN, Prompt, PromptChunk, build_prompt  # noqa: E402
from .text_cache import TextFeatureCache  # noqa: E402

log = logging.getLogger(__name__)

DEFAULT_MODEL = "IDEA-Research/grounding-dino-tiny"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class ModelLoadError(RuntimeError):
    """The weights or processor could not be loaded; the message says what to do."""


@dataclass(frozen=True)
class DetectorConfig:
    model: str = DEFAULT_MODEL  # hub id or local directory
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    revision: str | None = None
    cache_text_features: bool = True  # run BERT once per distinct prompt (speed lever, exact)
    # Multi-scale deformable attention as one embedding_bag (deformable.py): same sums as transformers'
    # grid_sample path up to float summation order; on CUDA the hub's compiled kernel when available.
    fast_deformable_attention: bool = True
    # The encoder's image-text fusion attention with its projections reassociated (fusion.py): never
    # projects the ~18k image tokens into the 1024-wide attention space; same sums up to float order.
    fast_fusion_attention: bool = True


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    if dtype == "fp16" and device.type == "cpu":
        raise ValueError("fp16 is not supported on the CPU: use fp32 (or bf16)")
    return DTYPES[dtype]


class Detector:
    """One loaded model + processor. Thread-compatible: callers serialise forward passes."""

    def __init__(self, model, processor, config: DetectorConfig):
        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_processor = processor.image_processor
        self.model = model.to(self.device).eval()
        self.max_text_len = int(getattr(model.config, "max_text_len", MAX_TEXT_LEN))
        self.text_cache = TextFeatureCache.install(self.model) if config.cache_text_features else None
        if config.fast_deformable_attention:
            from . import deformable

            deformable.install(self.model, self.device)
        if config.fast_fusion_attention:
            from . import fusion

            fusion.install(self.model)
        self._prompts: dict = {}

    @classmethod
    def load(cls, config: DetectorConfig = DetectorConfig()) -> "Detector":
        from transformers import AutoProcessor, GroundingDinoForObjectDetection

        # Validate device/dtype before spending time on a multi-hundred-MB download.
        resolve_dtype(config.dtype, resolve_device(config.device))
        try:
            processor = AutoProcessor.from_pretrained(config.model, revision=config.revision)
            model = GroundingDinoForObjectDetection.from_pretrained(config.model, revision=config.revision)
        except Exception as exc:  # OSError, HF hub errors, ValueError for a wrong architecture
            local = Path(config.model).expanduser()
            hint = (
                f"the directory {local} has no loadable Grounding DINO model (config.json, weights and "
                "processor files saved with save_pretrained)"
                if local.exists()
                else "if this machine is offline, download it where there is internet "
                f"(`hf download {config.model} --local-dir DIR`) and point GROUNDING_DINO_MODEL "
                "(backend) or --model (evaluation) at DIR"
            )
            raise ModelLoadError(f"could not load Grounding DINO model {config.model!r}: {hint}. ({exc})") from exc
        log.info("loaded %s on %s (%s)", config.model, config.device, config.dtype)
        return cls(model, processor, config)

    @property
    def model_revision(self) -> str | None:
        return getattr(self.model.config, "_commit_hash", None) or self.config.revision

    def prompt(self, classes: Sequence[str | Sequence[str]], chunk_size: int | None = None) -> Prompt:
        """Build (and memoise) the chunked prompt for a label set."""
        key = (tuple(c if isinstance(c, str) else tuple(c) for c in classes), chunk_size)
        if key not in self._prompts:
            if len(self._prompts) > 256:
                self._prompts.clear()
            self._prompts[key] = build_prompt(self.tokenizer, classes, chunk_size, self.max_text_len)
        return self._prompts[key]

    def forward(self, images: Sequence[Image.Image], chunk: PromptChunk) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw (logits (B, Q, 256), pred_boxes (B, Q, 4)) for RGB images of any sizes, one prompt."""
        inputs = self.image_processor(images=list(images), return_tensors="pt")
        batch = len(images)
        text = {
            name: getattr(chunk, name).to(self.device).expand(batch, -1)
            for name in ("input_ids", "attention_mask", "token_type_ids")
        }
        autocast = self.dtype != torch.float32
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.dtype, enabled=autocast):
            outputs = self.model(
                pixel_values=inputs["pixel_values"].to(self.device),
                pixel_mask=inputs["pixel_mask"].to(self.device),
                **text,
            )
        return outputs.logits.float(), outputs.pred_boxes.float()

    def rank(self, images: Sequence[Image.Image], prompt: Prompt, num_select: int = 300) -> list[Detections]:
        """Evaluation mode: per chunk the official top-`num_select`, concatenated across chunks."""
        sizes = [im.size for im in images]
        per_image: list[list[Detections]] = [[] for _ in images]
        for chunk in prompt.chunks:
            logits, boxes = self.forward(images, chunk)
            for i, dets in enumerate(rank_detections(logits, boxes, chunk, sizes, num_select)):
                per_image[i].append(dets)
        return [Detections.concat(parts) for parts in per_image]

    def detect(
        self,
        images: Sequence[Image.Image],
        prompt: Prompt,
        box_threshold: float,
        nms_iou: float | None = None,
    ) -> list[Detections]:
        """Labelling mode: boxes over the threshold with their best class across all chunks."""
        sizes = [im.size for im in images]
        per_image: list[list[Detections]] = [[] for _ in images]
        for chunk in prompt.chunks:
            logits, boxes = self.forward(images, chunk)
            for i, dets in enumerate(label_detections(logits, boxes, chunk, sizes, box_threshold)):
                per_image[i].append(dets)
        merged = [merge_labelled(parts) for parts in per_image]
        if nms_iou is not None:
            merged = [class_nms(d, nms_iou) for d in merged]
        return merged
