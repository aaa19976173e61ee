"""SAM 3 (Segment Anything with Concepts) in the detection core: text or example boxes -> boxes, scores, masks.

Self-contained: it imports from the rest of the core only (phrases, prompt errors, boxes, device rules,
ModelLoadError), so that it can sit behind a detector-family interface. docs/sam3.md says what was
compared against transformers' and torchvision's own code, and where results can differ.
"""
from .checkpoint import SAM3_MODEL_TYPES, Sam3Checkpoint, hub_status, load_failure, load_sam3, sam3_model_type
from .detector import (
    DEFAULT_MODEL,
    DEFAULT_THRESHOLD,
    DEFAULT_TOP_K,
    PHRASE_MERGE_IOU,
    Sam3Detector,
    Sam3DetectorConfig,
    class_phrase_list,
    merge_phrases,
)
from .postprocess import MASK_RULES, Sam3Detections, boxes_to_pixels, instance_results, masks_to_image, query_scores
from .preprocess import Sam3Batch, Sam3Preprocessing, native_uint8_resize, resize_uint8
from .roi_align import roi_align
from .text import TEXT_LENGTH, VISUAL, PhraseEmbedding, PhraseEmbeddings

__all__ = [name for name in dir() if not name.startswith("_")]
