"""The detection core: the only place that loads the model, turns images into pixels, phrases into a
caption and logits into boxes.

Both the Label Studio backend and the evaluation use it, through the detector-family interface
(`families.py`: `load_detector`, `FamilyDetector`, `DetectorFamily`, `Capabilities`); the Grounding DINO
family (GD, MM-Grounding-DINO, LLMDet) is `detector.py`, the SAM 3 family `sam3/family.py`. Imports nothing of ours but `runtime`.
"""
from .detector import DEFAULT_MODEL, GROUNDING_DINO, Detector, DetectorConfig, resolve_device
from .families import (
    FAMILIES,
    Capabilities,
    DetectorFamily,
    FamilyDetector,
    family_of_checkpoint,
    load_detector,
)
from .family import ARCHITECTURES, Architecture, ModelLoadError, load_checkpoint, read_model_type
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
from .sam3.family import SAM3, Sam3FamilyDetector, Sam3Prompt  # registers the SAM 3 family
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
