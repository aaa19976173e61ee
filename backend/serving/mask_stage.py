"""The backend's mask side: the SAM-family model behind `<BrushLabels>`, `<PolygonLabels>` and the smart
tools, loaded once, and a label set's detections + masks -> Label Studio regions.

The model loads at start when SAM_MODEL is set (a model that fails to load stops the start with its
reason). Otherwise it loads on first need, in a worker thread: `/setup` of a project with a mask control
starts the load and answers at once; the first prediction that needs masks waits for it.
"""
from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import asdict
from typing import Callable

from detection.masks import (
    BOX_MARGIN, DEFAULT_SAM_MODEL, MaskModel, MaskModelConfig, MaskModelLoadError, clip_to_boxes, has_torchvision,
)
from labelstudio.label_sets import LabelSet
from labelstudio.regions import PolygonConfig, brush_region, polygon_regions, region_id
from backend.settings import Settings

log = logging.getLogger(__name__)

# The default's processor (SAM 2.1) needs torchvision; this one needs only PIL.
FALLBACK_SAM_MODEL = "facebook/sam-vit-base"


class MaskModelUnavailable(RuntimeError):
    """The mask model could not be loaded; the message says why and what to change."""


def sam_model_name(settings: Settings) -> str:
    """SAM_MODEL, else the default, else (no torchvision for the default's processor) the fallback."""
    if settings.sam_model:
        return settings.sam_model
    if has_torchvision():
        return DEFAULT_SAM_MODEL
    log.info("mask model: %s needs torchvision, which is not installed; using %s (set SAM_MODEL to choose)",
             DEFAULT_SAM_MODEL, FALLBACK_SAM_MODEL)
    return FALLBACK_SAM_MODEL


class MaskModelHolder:
    """The one mask model of a server, loaded at most once: now (`load_now`), or in a worker thread on
    first need (`ensure_loading`); `get` waits for it."""

    def __init__(self, settings: Settings, loader: Callable[[MaskModelConfig], MaskModel] = MaskModel.load):
        self.name = sam_model_name(settings)
        self.config = MaskModelConfig(model=self.name, device=settings.device, dtype=settings.dtype)
        # How masks become polygons: a setting of the server, part of model_version like the model.
        self.polygons = PolygonConfig(max_parts=settings.polygon_max_parts,
                                      min_part_fraction=settings.polygon_min_part_fraction)
        self._loader = loader
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._model: MaskModel | None = None
        self._error: str | None = None

    @classmethod
    def of(cls, model: MaskModel, settings: Settings) -> "MaskModelHolder":
        """A holder around a model loaded elsewhere (tests, a caller sharing one model)."""
        holder = cls(settings, loader=lambda config: model)
        holder.load_now()
        return holder

    @property
    def state(self) -> str:
        if self._model is not None:
            return "ready"
        if self._error is not None:
            return "failed"
        return "loading" if self._thread is not None else "not loaded"

    @property
    def error(self) -> str | None:
        return self._error

    def version_info(self) -> dict:
        """What of the masks goes into model_version: the model and the settings that shape regions."""
        return {"sam_model": self.name, "mask_box_margin": BOX_MARGIN, "polygons": asdict(self.polygons)}

    def load_now(self) -> MaskModel:
        """Load in this thread (at start); raises MaskModelLoadError / ValueError with the reason."""
        with self._lock:
            if self._model is None:
                self._model = self._loader(self.config)
                self._done.set()
            return self._model

    def ensure_loading(self) -> None:
        """Start loading in a worker thread, once; returns at once."""
        with self._lock:
            if self._thread is not None or self._model is not None or self._error is not None:
                return
            log.info("loading the mask model %s (first project with a mask control or smart tool)", self.name)
            self._thread = threading.Thread(target=self._load_in_background, name="mask-model-load", daemon=True)
            self._thread.start()

    def get(self) -> MaskModel:
        """The loaded model, waiting for a load in progress; raises MaskModelUnavailable if it failed."""
        self.ensure_loading()
        self._done.wait()
        if self._model is None:
            raise MaskModelUnavailable(self._error or "the mask model is not loaded")
        return self._model

    def _load_in_background(self) -> None:
        try:
            model = self._loader(self.config)
        except (MaskModelLoadError, ValueError) as exc:
            self._error = f"the mask model could not be loaded: {exc}"
            log.error("%s", self._error)
        except Exception as exc:  # never leave waiters hanging
            self._error = f"the mask model could not be loaded ({type(exc).__name__}: {exc})"
            log.exception("loading the mask model %s failed", self.name)
        else:
            self._model = model
            log.info("mask model %s loaded on %s (%s)", self.name, model.device, self.config.dtype)
        finally:
            self._done.set()


def masks_for(model: MaskModel, images, detections) -> list:
    """Per image the (N, H, W) masks of its detections' boxes: one embedding per image, its boxes in one
    decoder batch, each mask cut to its box + BOX_MARGIN (as the evaluation does)."""
    masks = model.masks_for_boxes(images, [d.boxes for d in detections])
    return [clip_to_boxes(m, d.boxes, BOX_MARGIN) for m, d in zip(masks, detections)]


def mask_regions(task_id, label_set: LabelSet, size: tuple[int, int], detections, masks, first: int,
                 polygons: PolygonConfig) -> list[dict]:
    """A mask label set's regions for one image: brush or polygon, one per detection with a mask left
    (polygons: one per kept part, `polygons`), numbered from `first` for their ids."""
    regions = []
    for k in range(len(detections)):
        mask = masks[k]
        if not bool(mask.any()):  # nothing of the mask inside its box
            continue
        label = label_set.classes[int(detections.labels[k])].label
        rid = region_id(task_id, label_set.from_name, label_set.to_name, first + len(regions))
        regions.extend(_regions(label_set, rid, label, float(detections.scores[k]), size, mask, polygons))
    return regions


def interactive_regions(label_set: LabelSet, label: str, score: float, size: tuple[int, int], mask,
                        polygons: PolygonConfig) -> list[dict]:
    """The answer to a smart-tool prompt: a fresh id each time, so that Label Studio adds the region
    beside earlier answers instead of replacing one."""
    if not bool(mask.any()):
        return []
    return _regions(label_set, uuid.uuid4().hex[:10], label, score, size, mask, polygons)


def _regions(label_set: LabelSet, rid: str, label: str, score: float, size, mask,
             polygons: PolygonConfig) -> list[dict]:
    common = dict(region_id=rid, from_name=label_set.from_name, to_name=label_set.to_name, label=label,
                  score=score, size=size, mask=mask)
    if label_set.kind == "brushlabels":
        return [brush_region(**common)]
    return polygon_regions(**common, config=polygons)
