"""The detection core: the only place that turns phrases into a caption and logits into boxes.

Both the Label Studio backend and the COCO evaluation use it.
"""
from .detector import DEFAULT_MODEL, Detector, DetectorConfig, ModelLoadError, resolve_device
from .images import ImageError, open_image, to_rgb
from .phrases import class_phrases, split_list, to_words
from .postprocess import (
    Detections,
    box_iou,
    boxes_to_pixels,
    class_nms,
    class_scores,
    label_detections,
    merge_labelled,
    rank_detections,
)
from .prompt import (
    MAX_TEXT_LEN,
    Caption,
    PhraseGroup,
    Prompt,
    PromptChunk,
    PromptError,
    build_prompt,
    caption_for,
    normalise_phrase,
    positive_map,
)

__all__ = [name for name in dir() if not name.startswith("_")]
