"""The detection core: the only place that loads the model, turns images into pixels, phrases into a
caption and logits into boxes.

Both the Label Studio backend and the COCO evaluation use it.
"""
from .detector import DEFAULT_MODEL, Detector, DetectorConfig, resolve_device
from .family import ARCHITECTURES, Architecture, ModelLoadError, load_checkpoint
from .images import ImageError, open_image, to_rgb
from .levers import LEVER_NAMES
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
from .preprocess import OfficialPreprocessing, PixelBatch, official_output_size
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
