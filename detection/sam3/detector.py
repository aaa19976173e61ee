"""SAM 3 in the detection core: a batch of images and phrases per class in, boxes, scores, classes and masks out.

Per call: the images' pixels and the image embedding (`get_vision_features` -> `vision_embeds`) once per
image batch; per phrase its text embedding once per process (`text.PhraseEmbeddings`), then one detector
pass (DETR encoder, decoder, mask head) per phrase over the whole image batch, with the cached embeddings.
That is what `Sam3Model(pixel_values=..., input_ids=...)` computes for each phrase, without re-encoding the
image or the text (tests/detection/sam3/test_detector.py checks the equality).

Two modes, as for Grounding DINO:
- `detect` (labelling): score > threshold (`DEFAULT_THRESHOLD`), boxes clipped to the image;
- `rank` (evaluation): no threshold; per image the `top_k` best over all classes (SAM 3's evaluation keeps
  every query of every prompt, then the top `maxdets` per image: 100 in its released COCO-style configs).
A class with several phrases (`predicted_values` aliases) is the union of its phrases' detections, where
a detection that another phrase of the same class found with a higher score (box IoU >= `PHRASE_MERGE_IOU`)
is dropped: per object, the max over the class's phrases.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Iterator, Literal, Sequence

import torch
from PIL import Image

from ..boxes import box_iou, clip_to_image
from ..detector import DTYPES, resolve_device, resolve_dtype
from ..family import ModelLoadError
from ..prompt import PromptError
from . import roi_align
from .checkpoint import Sam3Checkpoint, load_sam3
from .postprocess import MaskRule, Sam3Detections, boxes_to_pixels, masks_to_image, query_scores
from .text import VISUAL, PhraseEmbeddings

log = logging.getLogger(__name__)

DEFAULT_MODEL = "facebook/sam3"
# SAM 3's own image predictor keeps detections with score > 0.5 (its Sam3Processor's confidence_threshold).
DEFAULT_THRESHOLD = 0.5
# SAM 3's released COCO-style evaluation configs keep the top 100 detections per image (maxdets: 100).
DEFAULT_TOP_K = 100
PHRASE_MERGE_IOU = 0.7


@dataclass(frozen=True)
class Sam3DetectorConfig:
    model: str = DEFAULT_MODEL  # hub id or local directory (model type sam3, sam3_video or sam3_lite_text)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    revision: str | None = None


@dataclass
class _Found:
    """Per image, the queries one phrase kept, before masks are upsampled."""

    scores: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor
    phrase: torch.Tensor  # which phrase found it (index into the call's phrases)
    query: torch.Tensor  # which of the model's queries
    mask_logits: torch.Tensor | None  # (N, h, w) low-resolution logits

    @classmethod
    def concat(cls, parts: Sequence["_Found"]) -> "_Found":
        masks = [p.mask_logits for p in parts]
        return cls(
            torch.cat([p.scores for p in parts]), torch.cat([p.labels for p in parts]), torch.cat([p.boxes for p in parts]),
            torch.cat([p.phrase for p in parts]), torch.cat([p.query for p in parts]), None if any(m is None for m in masks) else torch.cat(masks),
        )

    def select(self, index: torch.Tensor) -> "_Found":
        masks = None if self.mask_logits is None else self.mask_logits[index]
        return _Found(self.scores[index], self.labels[index], self.boxes[index], self.phrase[index], self.query[index], masks)


class Sam3Detector:
    """One loaded SAM 3 checkpoint. Thread-compatible: callers serialise forward passes."""

    def __init__(self, checkpoint: Sam3Checkpoint, config: Sam3DetectorConfig):
        self.config = config
        self.checkpoint = checkpoint
        self.model_type = checkpoint.model_type
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.preprocessor = checkpoint.preprocessing
        self.model = checkpoint.model.to(self.device).eval()
        self.text = PhraseEmbeddings(self.model, checkpoint.tokenizer)
        self._roi_align = roi_align.install().status

    @classmethod
    def load(cls, config: Sam3DetectorConfig = Sam3DetectorConfig()) -> "Sam3Detector":
        resolve_dtype(config.dtype, resolve_device(config.device))  # before a multi-GB download
        detector = cls(load_sam3(config.model, config.revision), config)
        log.info("loaded %s (%s) on %s (%s); pure-torch roi_align: %s", config.model, detector.model_type,
                 detector.device, config.dtype, detector._roi_align)
        return detector

    @property
    def lever_report(self) -> dict[str, str]:
        """{name: "active" | "not installed: why"}: the text-embedding cache, and the pure-torch roi_align
        exemplar prompts need where torchvision is missing."""
        return {"text_cache": "active", "roi_align": self._roi_align}

    @property
    def preprocessing(self) -> str:
        return self.preprocessor.name

    @property
    def model_revision(self) -> str | None:
        return getattr(self.model.config, "_commit_hash", None) or self.config.revision

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        autocast = self.dtype != torch.float32
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.dtype, enabled=autocast):
            yield

    def vision(self, images: Sequence[Image.Image]):
        """The image embedding of every image (one batch), reused by every prompt on these images."""
        batch = self.preprocessor(list(images)).to(self.device)
        with self._inference():
            return self.model.get_vision_features(pixel_values=batch.pixel_values)

    def forward(self, vision_embeds, phrase: str, boxes: torch.Tensor | None = None, box_labels: torch.Tensor | None = None):
        """SAM 3's outputs for one phrase on the embedded images (plus, optionally, exemplar boxes:
        (B, n, 4) normalised cxcywh with labels (B, n), 1 positive, 0 negative)."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        size = vision_embeds.fpn_hidden_states[0].shape[0]
        with self._inference():
            features, attention_mask = self.text.get(phrase, self.device).expand(size)
            extra = {} if boxes is None else {"input_boxes": boxes.to(self.device), "input_boxes_labels": box_labels.to(self.device)}
            return self.model(
                vision_embeds=vision_embeds, text_embeds=BaseModelOutputWithPooling(pooler_output=features),
                attention_mask=attention_mask, **extra,
            )

    def detect(
        self,
        images: Sequence[Image.Image],
        classes: Sequence[str | Sequence[str]],
        threshold: float = DEFAULT_THRESHOLD,
        masks: bool = False,
        mask_rule: MaskRule = "transformers",
    ) -> list[Sam3Detections]:
        """Labelling mode: per image the detections with score > threshold, boxes clipped to the image,
        highest score first; `masks`: each detection's mask (bool, image size)."""
        _, _, found = self._find(images, classes, threshold, masks)
        out = []
        for image, f in zip(images, found):
            f.boxes, area_ok = clip_to_image(f.boxes, *image.size)
            out.append(_finish(f.select(area_ok), image.size, mask_rule))
        return out

    def rank(
        self,
        images: Sequence[Image.Image],
        classes: Sequence[str | Sequence[str]],
        top_k: int = DEFAULT_TOP_K,
        masks: bool = False,
        mask_rule: MaskRule = "sam3-eval",
    ) -> list[Sam3Detections]:
        """Evaluation mode: no threshold; per image the `top_k` highest-scoring detections over all classes
        (boxes as the model gives them, not clipped); masks by SAM 3's evaluation rule unless told."""
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        # Masks of every query of every phrase would not fit in memory (LVIS: 1,203 phrases x 200 queries):
        # rank on scores first, then run again the phrases whose detections were kept, for their masks.
        vision, phrases, found = self._find(images, classes, None, masks=False)
        found = [f.select(torch.argsort(f.scores, descending=True, stable=True)[:top_k]) for f in found]
        if masks:
            self._attach_masks(vision, phrases, found)
        return [_finish(f, image.size, mask_rule) for image, f in zip(images, found)]

    def find_like(
        self,
        image: Image.Image,
        positive: Sequence[float],
        negatives: Sequence[Sequence[float]] = (),
        phrase: str | None = None,
        label: int = 0,
        threshold: float = DEFAULT_THRESHOLD,
        masks: bool = True,
        mask_rule: MaskRule = "transformers",
    ) -> Sam3Detections:
        """"Find all like this": every instance SAM 3 finds for an example box (xyxy pixels of `image`),
        optionally with negative example boxes and a phrase (box-only prompts use the text "visual", as
        Sam3Processor does). Detections carry `label`; score > threshold; highest score first."""
        prompt_boxes = [positive, *negatives]
        tensor = torch.as_tensor(prompt_boxes, dtype=torch.float32).reshape(-1, 4)
        if not torch.isfinite(tensor).all():
            raise ValueError("example boxes contain NaN or infinite coordinates")
        if ((tensor[:, 2] <= tensor[:, 0]) | (tensor[:, 3] <= tensor[:, 1])).any():
            raise ValueError("an example box needs x1 > x0 and y1 > y0 (pixels of the image, xyxy)")
        width, height = image.size
        normalised = tensor / torch.tensor([width, height, width, height], dtype=torch.float32)
        cxcywh = torch.stack([(normalised[:, 0] + normalised[:, 2]) / 2, (normalised[:, 1] + normalised[:, 3]) / 2,
                              normalised[:, 2] - normalised[:, 0], normalised[:, 3] - normalised[:, 1]], dim=-1)
        box_labels = torch.tensor([[1] + [0] * len(negatives)], dtype=torch.long)
        text = " ".join(phrase.split()) if phrase and phrase.strip() else VISUAL
        vision = self.vision([image])
        outputs = self.forward(vision, text, cxcywh[None], box_labels)
        found = _kept(outputs, [image.size], threshold, label, 0, masks)[0]
        return _finish(found, image.size, mask_rule)

    def _attach_masks(self, vision, phrases: list[tuple[int, str]], found: list[_Found]) -> None:
        """Give each image's detections their low-resolution mask logits, one forward per phrase needed
        (the same deterministic pass that scored them)."""
        for f in found:
            f.mask_logits = torch.zeros((len(f.scores), 0, 0))
        needed = sorted({int(p) for f in found for p in f.phrase})
        for index in needed:
            outputs = self.forward(vision, phrases[index][1])
            for i, f in enumerate(found):
                rows = (f.phrase == index).nonzero().flatten()
                if not len(rows):
                    continue
                logits = outputs.pred_masks[i][f.query[rows].to(outputs.pred_masks.device)].float().cpu()
                if f.mask_logits.shape[1:] != logits.shape[1:]:
                    f.mask_logits = torch.zeros((len(f.scores), *logits.shape[1:]))
                f.mask_logits[rows] = logits

    def _find(self, images, classes, threshold: float | None, masks: bool):
        images = list(images)
        phrases = class_phrase_list(classes)
        vision = self.vision(images)
        sizes = [im.size for im in images]
        per_image: list[list[_Found]] = [[] for _ in images]
        for index, (label, phrase) in enumerate(phrases):
            outputs = self.forward(vision, phrase)
            for i, f in enumerate(_kept(outputs, sizes, threshold, label, index, masks)):
                per_image[i].append(f)
        merged = [_Found.concat(parts) for parts in per_image]
        if any(sum(1 for c, _ in phrases if c == label) > 1 for label, _ in phrases):
            merged = [merge_phrases(f) for f in merged]
        return vision, phrases, merged


def class_phrase_list(classes: Sequence[str | Sequence[str]]) -> list[tuple[int, str]]:
    """(class index, phrase) for every phrase of every class, whitespace collapsed; PromptError if none."""
    pairs = []
    for index, entry in enumerate(classes):
        phrases = [entry] if isinstance(entry, str) else list(entry)
        cleaned = [" ".join(str(p).split()) for p in phrases if str(p).strip()]
        if not cleaned:
            raise PromptError(f"class {index} has no phrase: give each label a name or predicted values")
        pairs += [(index, p) for p in dict.fromkeys(cleaned)]
    if not pairs:
        raise PromptError("no classes to detect: the label set is empty")
    return pairs


def _kept(outputs, sizes, threshold: float | None, label: int, phrase: int, masks: bool) -> list[_Found]:
    """Per image the queries over the threshold (all when None), with their low-resolution mask logits."""
    presence = outputs.presence_logits
    scores = query_scores(outputs.pred_logits.float(), None if presence is None else presence.float())
    boxes = boxes_to_pixels(outputs.pred_boxes.float(), sizes)
    out = []
    for i in range(len(sizes)):
        keep = scores[i] > threshold if threshold is not None else torch.ones_like(scores[i], dtype=torch.bool)
        count = int(keep.sum())
        out.append(_Found(
            scores[i][keep].cpu(), torch.full((count,), label, dtype=torch.long), boxes[i][keep].cpu(),
            torch.full((count,), phrase, dtype=torch.long), keep.nonzero().flatten().cpu(),
            outputs.pred_masks[i][keep].float().cpu() if masks else None,
        ))
    return out


def merge_phrases(found: _Found, iou_threshold: float = PHRASE_MERGE_IOU) -> _Found:
    """Per object the best of a class's phrases: drop a detection when a higher-scoring detection of the
    same class from another phrase overlaps it with box IoU >= iou_threshold."""
    if len(found.scores) < 2:
        return found
    order = torch.argsort(found.scores, descending=True, stable=True)
    iou = box_iou(found.boxes, found.boxes)
    rival = (found.labels[:, None] == found.labels[None, :]) & (found.phrase[:, None] != found.phrase[None, :])
    suppressed = torch.zeros(len(found.scores), dtype=torch.bool)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= (iou[i] >= iou_threshold) & rival[i]
    return found.select(torch.tensor(sorted(keep), dtype=torch.long))


def _finish(found: _Found, size: tuple[int, int], mask_rule: MaskRule) -> Sam3Detections:
    """Highest score first; masks upsampled to the image for the detections that remain."""
    found = found.select(torch.argsort(found.scores, descending=True, stable=True))
    masks = masks_to_image(found.mask_logits, size, mask_rule) if found.mask_logits is not None else None
    return Sam3Detections(found.scores, found.labels, found.boxes, masks)


__all__ = [
    "DEFAULT_MODEL", "DEFAULT_THRESHOLD", "DEFAULT_TOP_K", "DTYPES", "ModelLoadError", "PHRASE_MERGE_IOU",
    "Sam3Detector", "Sam3DetectorConfig", "class_phrase_list", "merge_phrases",
]
