"""Load a Grounding DINO family model once, run it on batches of images, return detections in either mode."""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, replace
from typing import Iterable, Iterator, Literal, Sequence

import torch
from PIL import Image

from runtime.allocator import thp_allocation_status
from .backbone_reuse import BackboneReuse
from .families import Capabilities, DetectorFamily, register
from .family import Architecture, ModelLoadError, architecture_of, load_checkpoint
from .levers import install_levers, lever_warnings
from .postprocess import Detections, class_nms, label_detections, merge_labelled, rank_detections
from .preprocess import OfficialPreprocessing, PixelBatch
from .prompt import MAX_TEXT_LEN, Prompt, PromptChunk, build_prompt
from .text_cache import TextFeatureCache

log = logging.getLogger(__name__)

DEFAULT_MODEL = "IDEA-Research/grounding-dino-tiny"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class DetectorConfig:
    model: str = DEFAULT_MODEL  # hub id or local directory (model type grounding-dino or mm-grounding-dino)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    revision: str | None = None
    # Speed levers (levers.py), each exact; switching one off is for measuring it.
    cache_text_features: bool = True  # run BERT once per distinct prompt
    # Multi-scale deformable attention as one embedding_bag (deformable.py): same sums as transformers'
    # grid_sample path up to float summation order; on CUDA the hub's compiled kernel when available.
    fast_deformable_attention: bool = True
    # The encoder's image-text fusion attention with its projections reassociated (fusion.py): never
    # projects the ~18k image tokens into the 1024-wide attention space; same sums up to float order.
    fast_fusion_attention: bool = True
    inplace_relu: bool = True  # the FFN ReLUs rectify fc1's output in place (inplace_relu.py): bit-identical
    reuse_backbone: bool = True  # one vision-backbone run per image batch for all prompt chunks: identical

    def enabled_levers(self) -> dict[str, bool]:
        """{lever name (levers.py): on?}."""
        return {name: getattr(self, field) for name, field in LEVER_FIELDS.items()}

    def with_levers(self, names: Iterable[str]) -> "DetectorConfig":
        """This config with exactly the named levers on (`with_levers(())`: the plain transformers model)."""
        names = set(names)
        unknown = names - set(LEVER_FIELDS)
        if unknown:
            raise ValueError(f"unknown speed lever(s) {sorted(unknown)}: choose from {', '.join(LEVER_FIELDS)}")
        return replace(self, **{field: name in names for name, field in LEVER_FIELDS.items()})


# Lever name (levers.py, the lever report) -> the DetectorConfig field that switches it.
LEVER_FIELDS = {
    "text_cache": "cache_text_features",
    "backbone_reuse": "reuse_backbone",
    "fusion": "fast_fusion_attention",
    "deformable": "fast_deformable_attention",
    "inplace_relu": "inplace_relu",
}


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


# The Grounding DINO family (families.py): GD, MM-Grounding-DINO and LLMDet checkpoints, this module's Detector.
GROUNDING_DINO = register(DetectorFamily(
    name="grounding-dino",
    title="Grounding DINO",
    model_types=("grounding-dino", "mm-grounding-dino"),
    default_box_threshold=0.35,
    capabilities=Capabilities(own_masks=False, exemplar_prompts=False, fine_tuning=True, phrases_per_class="several"),
    load=lambda config: Detector.load(config),
))


class Detector:
    """One loaded model + processor. Thread-compatible: callers serialise forward passes.

    The Grounding DINO family's `FamilyDetector` (families.py).

    `lever_report` says which speed levers are active ({name: "active" | "off" | "not installed: why"},
    JSON-able: the backend's /status and the evaluation's metrics.json show it); `preprocessing` names how
    images become pixels (the official transforms, for both the backend and the evaluation).
    """

    def __init__(self, model, processor, config: DetectorConfig):
        self.config = config
        self.architecture: Architecture = architecture_of(model)
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_processor = processor.image_processor
        self.preprocessor = OfficialPreprocessing.from_image_processor(self.image_processor, repr(config.model))
        self.model = model.to(self.device).eval()
        self.max_text_len = int(getattr(model.config, "max_text_len", MAX_TEXT_LEN))
        self._levers = install_levers(self.model, self.architecture, self.device, config.enabled_levers())
        self.text_cache = TextFeatureCache.of(self.model)
        # Reuse acts only inside the sessions this Detector opens: its switch holds on a shared, patched model.
        self.backbone_reuse = BackboneReuse.of(self.model) if config.reuse_backbone else None
        self._prompts: dict = {}
        self._batch: tuple[list[Image.Image], PixelBatch] | None = None

    @classmethod
    def load(cls, config: DetectorConfig = DetectorConfig()) -> "Detector":
        # Validate device/dtype before spending time on a multi-hundred-MB download.
        resolve_dtype(config.dtype, resolve_device(config.device))
        model, processor = load_checkpoint(config.model, config.revision)
        detector = cls(model, processor, config)
        log.info(
            "loaded %s (%s) on %s (%s); speed levers: %s", config.model, detector.architecture.model_type,
            detector.device, config.dtype, ", ".join(f"{k} {v}" for k, v in detector.lever_report.items()),
        )
        return detector

    family = GROUNDING_DINO

    @property
    def model_revision(self) -> str | None:
        return getattr(self.model.config, "_commit_hash", None) or self.config.revision

    @property
    def model_type(self) -> str:
        """`grounding-dino` or `mm-grounding-dino`."""
        return self.architecture.model_type

    @property
    def lever_report(self) -> dict[str, str]:
        """{lever: "active" | "off" | "not installed: <reason>"}: the model's levers and the process's THP lever."""
        return {**self._levers, "thp_allocation": thp_allocation_status()}

    @property
    def warnings(self) -> list[str]:
        """What the start-up log warned about (levers that found nothing to patch), for /status."""
        return lever_warnings(self._levers, self.architecture.model_type)

    @property
    def preprocessing(self) -> str:
        """How images become `pixel_values` (the evaluation records it in metrics.json)."""
        return self.preprocessor.name

    def prompt(self, classes: Sequence[str | Sequence[str]], chunk_size: int | None = None) -> Prompt:
        """Build (and memoise) the chunked prompt for a label set."""
        key = (tuple(c if isinstance(c, str) else tuple(c) for c in classes), chunk_size)
        if key not in self._prompts:
            if len(self._prompts) > 256:
                self._prompts.clear()
            self._prompts[key] = build_prompt(self.tokenizer, classes, chunk_size, self.max_text_len)
        return self._prompts[key]

    def describe_prompt(self, prompt: Prompt) -> dict:
        """The prompt's chunks for metrics.json: how many, their token counts and captions."""
        return {"num_chunks": len(prompt.chunks), "chunk_tokens": [c.num_tokens for c in prompt.chunks],
                "captions": [c.caption.text for c in prompt.chunks]}

    def pixels(self, images: Sequence[Image.Image]) -> PixelBatch:
        """The model's pixel inputs for RGB images, on the model's device (official preprocessing)."""
        if not images:
            raise ValueError("no images to run the model on")
        return self.preprocessor(images).to(self.device)

    def forward(self, images: Sequence[Image.Image], chunk: PromptChunk) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw (logits (B, Q, 256), pred_boxes (B, Q, 4)) for RGB images of any sizes, one prompt chunk.

        Inside `rank`/`detect` the images' pixels are computed once for all chunks (and, with the
        backbone_reuse lever, so are the backbone's features); called alone it does both itself.
        """
        batch = self._batch
        pixels = batch[1] if batch is not None and batch[0] is images else self.pixels(images)
        size = pixels.pixel_values.shape[0]
        text = {
            name: getattr(chunk, name).to(self.device).expand(size, -1)
            for name in ("input_ids", "attention_mask", "token_type_ids")
        }
        autocast = self.dtype != torch.float32
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.dtype, enabled=autocast):
            outputs = self.model(pixel_values=pixels.pixel_values, pixel_mask=pixels.pixel_mask, **text)
        # The model's own logits: each architecture's class head (MM-GDINO's scale and bias) as trained.
        return outputs.logits.float(), outputs.pred_boxes.float()

    @contextlib.contextmanager
    def _image_batch(self, images: list[Image.Image]) -> Iterator[None]:
        """For the chunks of one call: pixels computed once; the backbone run once when the lever is on."""
        self._batch = (images, self.pixels(images))
        reuse = self.backbone_reuse.session() if self.backbone_reuse is not None else contextlib.nullcontext()
        try:
            with reuse:
                yield
        finally:
            self._batch = None

    def _per_chunk(self, images: Sequence[Image.Image], prompt: Prompt, decode) -> list[list[Detections]]:
        """The prompt's chunks over the images (pixels once for all chunks): per image, each chunk's
        `decode(logits, boxes, chunk, sizes)` detections, in chunk order."""
        images = list(images)
        sizes = [im.size for im in images]
        per_image: list[list[Detections]] = [[] for _ in images]
        with self._image_batch(images):
            for chunk in prompt.chunks:
                logits, boxes = self.forward(images, chunk)
                for i, dets in enumerate(decode(logits, boxes, chunk, sizes)):
                    per_image[i].append(dets)
        return per_image

    def rank(self, images: Sequence[Image.Image], prompt: Prompt, num_select: int = 300) -> list[Detections]:
        """Evaluation mode: per chunk the official top-`num_select`, concatenated across chunks."""
        per_image = self._per_chunk(images, prompt, lambda logits, boxes, chunk, sizes: rank_detections(
            logits, boxes, chunk, sizes, num_select))
        return [Detections.concat(parts) for parts in per_image]

    def detect(
        self,
        images: Sequence[Image.Image],
        prompt: Prompt,
        box_threshold: float,
        nms_iou: float | None = None,
    ) -> list[Detections]:
        """Labelling mode: boxes over the threshold with their best class across all chunks."""
        per_image = self._per_chunk(images, prompt, lambda logits, boxes, chunk, sizes: label_detections(
            logits, boxes, chunk, sizes, box_threshold))
        merged = [merge_labelled(parts) for parts in per_image]
        if nms_iou is not None:
            merged = [class_nms(d, nms_iou) for d in merged]
        return merged
