"""The model glue: Label Studio tasks + label config -> one Label Studio prediction item per task.

Three steps, so that the server's background jobs can overlap downloads with the model's work:
`plan` (label config + context -> prompts and model_version, once per request), `load` (one task's
images, any thread) and `run` (a batch of loaded tasks through the model -> items).
`predict_tasks` chains them for a list of tasks; it is also the entry point of bulk pre-labelling
(`backend/prelabel.py`): keep its name and signature. The values passed between the steps are in
backend/serving/work.py; the gate that gives the model to one forward pass at a time, in backend/serving/gate.py.

Mask controls (`<BrushLabels>`, `<PolygonLabels>`) get the detector's boxes turned into masks by the
mask model (backend/serving/mask_stage.py); a smart tool's click or box is answered by the mask model alone.
A family with masks of its own (SAM 3) gives boxes and masks from the same pass, never loads the mask model
for them, and answers a smart box with every instance like it ("find all like this"); the interactive
answers are in backend/serving/interactive.py.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Mapping

import torch

from backend.settings import Settings
from detection import PromptError
from labelstudio.label_config import parse_label_config
from labelstudio.label_sets import LabelConfigError, LabelMapping, LabelSet, TextPromptError, model_version_hash
from labelstudio.media import MediaFetcher
from labelstudio.media_errors import MediaError
from labelstudio.regions import make_region
from labelstudio.smart_tools import SmartPromptError, exemplar_prompts, smart_prompts
from labelstudio.target import LabelStudioTarget
from labelstudio.text_prompts import prompt_texts, resolve_text_prompt

from .gate import ModelGate, is_oom
from .interactive import answer_exemplars, answer_smart
from .items import PredictionItem
from .mask_stage import MaskModelHolder, MaskModelUnavailable, mask_regions, masks_for
from .work import PredictionPlan, TaskWork

log = logging.getLogger(__name__)
DOWNLOAD_WORKERS = 8


class Predictor:
    def __init__(self, detector, settings: Settings, fetcher: MediaFetcher | None = None,
                 masks: MaskModelHolder | None = None):
        self.detector = detector
        self.settings = settings
        self.fetcher = fetcher or MediaFetcher(settings)
        self.masks = masks or MaskModelHolder(settings)  # loaded on first need unless already loaded
        device = getattr(detector, "device", None)
        on_cpu = device is None or getattr(device, "type", "cpu") == "cpu"
        self.batch_size = settings.batch_size or (1 if on_cpu else 4)
        self.gate = ModelGate()
        # Tokenizers are not safe to share between threads; prompts are quick to build, so /setup
        # (which validates them) never waits behind a long forward pass holding the gate.
        self._prompt_lock = threading.RLock()
        self._mappings: dict[str, LabelMapping] = {}
        model = settings.model.rstrip("/\\")
        family = detector.family
        self.model_name = family.version_name(model)  # model_version's family-and-checkpoint part
        # BOX_THRESHOLD, else the family's default (Grounding DINO 0.35, SAM 3 0.5).
        self.box_threshold = settings.box_threshold if settings.box_threshold is not None else family.default_box_threshold
        self.own_masks = family.capabilities.own_masks  # masks from the detector: no SAM stage for mask controls
        self.exemplars = family.capabilities.exemplar_prompts  # a smart box is "find all like this"

    # ----- versions ---------------------------------------------------------------------------

    def model_version(self, label_config: str, thresholds: Mapping[str, float] | None = None) -> str:
        """Model name + short hash of what changes predictions; raises LabelConfigError.

        The labels are turned into prompts here too, so a config that can never be predicted
        (every label over the model's text length, say) is refused when Label Studio connects. A config
        with a mask control starts loading the mask model (and is refused if that load failed).
        """
        mapping = self.mapping(label_config)
        problem = self._start_masks(mapping)
        if problem:
            raise LabelConfigError(f"its mask controls or smart tools need the mask model: {problem}")
        return self._version(mapping, thresholds)

    def mapping(self, label_config: str) -> LabelMapping:
        """The config's label sets less every label that cannot be prompted (recorded in `skipped`).

        Raises LabelConfigError when nothing usable is left. Memoised per config: Label Studio sends
        the same config with every request.
        """
        with self._prompt_lock:
            cached = self._mappings.get(label_config)
        if cached is not None:
            return cached
        mapping = parse_label_config(label_config)
        while True:
            try:
                self._prompts(mapping.active)
                break
            except PromptError:
                mapping = self._without_unpromptable(mapping)
        with self._prompt_lock:
            if len(self._mappings) > 64:
                self._mappings.clear()
            self._mappings[label_config] = mapping
        return mapping

    def _without_unpromptable(self, mapping: LabelMapping) -> LabelMapping:
        """Find the classes that fail alone and drop them (one at a time: `without` is per control)."""
        for label_set in mapping.active:
            for label_class in label_set.classes:
                try:
                    with self._prompt_lock:
                        self.detector.prompt([list(label_class.phrases)])
                except PromptError as exc:
                    return mapping.without(label_set.from_name, label_class.label,
                                           f"its phrases cannot be prompted ({exc})")
        raise LabelConfigError("the labels cannot be turned into a prompt together, though each one can alone")

    def _version(self, mapping: LabelMapping, thresholds: Mapping[str, float] | None = None) -> str:
        revision = getattr(self.detector, "model_revision", None)
        extra = {
            "model": self.settings.model,
            "revision": revision,
            "box_threshold": self.box_threshold,
            "nms_iou": self.settings.nms_iou,
            "dtype": self.settings.dtype,
        }
        if self._needs_mask_model(mapping):  # box-only projects keep their version whatever SAM_MODEL is
            extra.update(self.masks.version_info())
        elif mapping.needs_masks:  # the family's own masks: only how they become regions
            extra["polygons"] = asdict(self.masks.polygons)
        if thresholds:  # learned per label by Start Training (STATE_DIR): other predictions, another version
            extra["label_thresholds"] = sorted((label, float(t)) for label, t in thresholds.items())
        return f"{self.model_name}-{model_version_hash(mapping, extra)}"

    def _needs_mask_model(self, mapping: LabelMapping) -> bool:
        """The SAM mask model is needed: for mask controls and smart tools, unless the family makes masks
        itself; then only for the "mask of this one object" tools (smart clicks, model_smart="one")."""
        if not self.own_masks:
            return mapping.needs_masks
        return any(t.kind == "keypointlabels" or t.mode == "one" or not self.exemplars for t in mapping.smart_tools)

    def _start_masks(self, mapping: LabelMapping) -> str | None:
        """Start loading the mask model when the mapping needs it; the reason if it cannot be had."""
        if not self._needs_mask_model(mapping):
            return None
        self.masks.ensure_loading()
        return self.masks.error

    # ----- the three steps --------------------------------------------------------------------

    def plan(self, label_config: str, context: dict | None = None,
             thresholds: Mapping[str, float] | None = None) -> PredictionPlan:
        """Raises LabelConfigError for a label config that cannot be used (nothing can be predicted).

        `thresholds`: per-label box thresholds learned for the project (label as emitted -> threshold);
        they replace the control's threshold for those labels."""
        mapping = self.mapping(label_config)
        version = self._version(mapping, thresholds)
        problem = self._start_masks(mapping)
        if problem:
            return PredictionPlan(mapping, version, error=problem)
        try:
            exemplars = exemplar_prompts(mapping, context) if self.exemplars else ()
            smart = () if exemplars else smart_prompts(mapping, context)
        except SmartPromptError as exc:
            return PredictionPlan(mapping, version, error=str(exc))
        if exemplars:
            return PredictionPlan(mapping, version, exemplars=exemplars)
        if smart:
            return PredictionPlan(mapping, version, smart=smart)
        typed = prompt_texts(mapping, context)
        try:
            resolution = resolve_text_prompt(mapping, typed)
        except TextPromptError as exc:
            return PredictionPlan(mapping, version, error=str(exc))
        if resolution.unknown_message:  # the known phrases are served; the answer says what was left out
            log.warning("%s", resolution.unknown_message)
        try:
            prompts = self._prompts(resolution.label_sets)
        except PromptError as exc:
            return PredictionPlan(mapping, version, error=f"the prompt cannot be used: {exc}")
        return PredictionPlan(mapping, version, tuple(prompts), notice=resolution.unknown_message,
                              label_thresholds=dict(thresholds or {}))

    def load(self, plan: PredictionPlan, work: TaskWork, access: LabelStudioTarget | None = None) -> TaskWork:
        """Fetch and decode the task's images; a failed image is recorded, the others are kept."""
        access = access or LabelStudioTarget()
        if plan.error is not None:
            work.error = plan.error
            return work
        if not isinstance(work.task, dict) or not isinstance(work.task.get("data"), dict):
            work.error = "the task has no 'data' object"
            return work
        for image_name, key in plan.images.items():
            try:
                url = work.task["data"].get(key)
                if url is None:
                    raise MediaError(f"the task has no data.{key} (the <Image> value ${key})")
                work.images[image_name] = self.fetcher.fetch_image(
                    url, task_id=work.task_id, hostname=access.url, access_token=access.key
                )
            except MediaError as exc:
                work.image_errors[image_name] = str(exc)
            except Exception as exc:  # never let one task take the batch down
                log.exception("task %s: unexpected error loading its image %r", work.task_id, image_name)
                work.image_errors[image_name] = f"could not load the image ({type(exc).__name__}: {exc})"
        if plan.images and not work.images:
            reasons = list(dict.fromkeys(work.image_errors.values()))
            work.error = reasons[0] if len(reasons) == 1 else "; ".join(
                f"image {name!r}: {reason}" for name, reason in work.image_errors.items()
            )
        return work

    def run(self, plan: PredictionPlan, works: list[TaskWork], urgent: bool = True) -> list[PredictionItem]:
        """Detect on loaded tasks (micro-batches of BATCH_SIZE); one item per task, in order."""
        ready = [w for w in works if w.error is None]
        for start in range(0, len(ready), self.batch_size):
            self._run_batch(ready[start : start + self.batch_size], plan, urgent)
        items = [self.item(w, plan.version, plan.notice) for w in works]
        for work in works:
            work.images = {}  # free memory as we go
            if work.error is not None:
                log.warning("task %s: no prediction: %s", work.task_id, work.error)
            for note in work.notes:
                log.warning("task %s: %s (the task's other images were predicted)", work.task_id, note)
        return items

    def predict_tasks(
        self,
        tasks: list[dict],
        label_config: str,
        context: dict | None = None,
        hostname: str | None = None,
        access_token: str | None = None,
        thresholds: Mapping[str, float] | None = None,
    ) -> list[dict]:
        """Exactly one item per task, in order, as Label Studio's JSON: a prediction, or `{model_version,
        error}` (no `result`). Raises LabelConfigError for a label config that cannot be used."""
        return [item.as_json() for item in self.predict_items(tasks, label_config, context, hostname,
                                                              access_token, thresholds)]

    def predict_items(self, tasks: list[dict], label_config: str, context: dict | None = None,
                      hostname: str | None = None, access_token: str | None = None,
                      thresholds: Mapping[str, float] | None = None) -> list[PredictionItem]:
        """`predict_tasks`, typed: one PredictionItem per task, in order."""
        plan = self.plan(label_config, context, thresholds)
        access = LabelStudioTarget.from_setup(hostname, access_token)
        works = [TaskWork(i, t) for i, t in enumerate(tasks)]
        items: list[PredictionItem] = []
        batch_size = self.batch_size
        with ThreadPoolExecutor(max_workers=min(DOWNLOAD_WORKERS, max(1, batch_size))) as pool:
            for start in range(0, len(works), batch_size):
                batch = works[start : start + batch_size]
                list(pool.map(lambda w: self.load(plan, w, access), batch))
                items.extend(self.run(plan, batch))
        return items

    # ----- internals --------------------------------------------------------------------------

    def _prompts(self, label_sets: tuple[LabelSet, ...]) -> list:
        with self._prompt_lock:
            return [(label_set, self.detector.prompt(label_set.prompt_classes)) for label_set in label_sets]

    def _run_batch(self, works: list[TaskWork], plan: PredictionPlan, urgent: bool) -> None:
        """Detect on a micro-batch; on out-of-memory retry in halves; fail only what still fails."""
        try:
            results = self._detect(works, plan, urgent)
        except Exception as exc:
            if isinstance(exc, MaskModelUnavailable):
                message = str(exc)
            elif is_oom(exc):
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if len(works) > 1:
                    half = len(works) // 2
                    log.warning("out of memory on a batch of %d images: retrying in halves", len(works))
                    self._run_batch(works[:half], plan, urgent)
                    self._run_batch(works[half:], plan, urgent)
                    return
                message = (
                    "out of memory running the model on this image: lower MAX_IMAGE_PIXELS or BATCH_SIZE, "
                    "or use a device with more memory"
                )
            else:
                log.exception("inference failed on a batch of %d images", len(works))
                message = f"inference failed ({type(exc).__name__}: {exc})"
            for work in works:
                work.error = message
            return
        for work, regions in zip(works, results):
            work.regions = regions

    def _detect(self, works: list[TaskWork], plan: PredictionPlan, urgent: bool) -> list[list[dict]]:
        if plan.smart:
            return self._answer_smart(works, plan.smart, urgent)
        if plan.exemplars:
            return self._answer_exemplars(works, plan.exemplars, urgent)
        regions: list[list[dict]] = [[] for _ in works]
        # One detector pass (and one set of masks) per image and prompt: controls with the same labels and
        # threshold on the same image (a rectangle and a brush control, say) share them.
        found: dict[tuple, dict] = {}
        masked: dict[tuple, dict] = {}
        keyed = [(label_set, prompt, self._key(plan, label_set, prompt)) for label_set, prompt in plan.prompts]
        # A family with its own masks makes them in the detector's pass, for every key a mask control needs.
        own_mask_keys = {key for label_set, _, key in keyed if label_set.is_mask} if self.own_masks else set()
        for label_set, prompt, key in keyed:
            # Only the tasks whose image for this label set loaded (a task may have lost one of several).
            members = [i for i, w in enumerate(works) if label_set.to_name in w.images]
            if not members:
                continue
            per_class = list(key[2])
            threshold = min(per_class)  # then each class is held to its own
            detections = found.setdefault(key, {})
            todo = [i for i in members if i not in detections]
            if todo:
                images = [works[i].images[label_set.to_name] for i in todo]
                extra = {"masks": True} if key in own_mask_keys else {}  # only families with own_masks take it
                with self.gate.hold(urgent):
                    found_now = self.detector.detect(images, prompt, threshold, nms_iou=self.settings.nms_iou, **extra)
                detections.update(zip(todo, (_held_to(d, per_class) for d in found_now)))
            if label_set.is_mask and self.own_masks:
                masks = {i: detections[i].masks for i in members}
            elif label_set.is_mask:
                masks = masked.setdefault(key, {})
                todo = [i for i in members if i not in masks]
                if todo:
                    model = self.masks.get()  # waits for a load in progress
                    images = [works[i].images[label_set.to_name] for i in todo]
                    with self.gate.hold(urgent):
                        masks.update(zip(todo, masks_for(model, images, [detections[i] for i in todo])))
            for i in members:
                size, dets = works[i].images[label_set.to_name].size, detections[i]
                if label_set.is_mask:
                    regions[i].extend(mask_regions(works[i].task_id, label_set, size, dets, masks[i], len(regions[i]),
                                                   self.masks.polygons))
                    continue
                for k in range(len(dets)):
                    regions[i].append(
                        make_region(
                            works[i].task_id, label_set, size, dets.boxes[k].tolist(),
                            float(dets.scores[k]), label_set.classes[int(dets.labels[k])].label, len(regions[i]),
                        )
                    )
        return regions

    def _key(self, plan: PredictionPlan, label_set: LabelSet, prompt) -> tuple:
        """What makes two label sets share a detector pass: image, prompt and per-class thresholds."""
        base = label_set.threshold if label_set.threshold is not None else self.box_threshold
        per_class = tuple(plan.label_thresholds.get(c.label, base) for c in label_set.classes)
        return (label_set.to_name, id(prompt), per_class)

    def _answer_exemplars(self, works: list[TaskWork], prompts, urgent: bool) -> list[list[dict]]:
        return answer_exemplars(self.detector, self.gate, self.box_threshold, self.masks.polygons, works, prompts, urgent)

    def _answer_smart(self, works: list[TaskWork], prompts, urgent: bool) -> list[list[dict]]:
        return answer_smart(self.masks, self.gate, works, prompts, urgent)

    @staticmethod
    def item(work: TaskWork, version: str, notice: str | None = None) -> PredictionItem:
        if work.error is not None:
            return PredictionItem.failed(version, work.error)
        return PredictionItem.predicted(version, work.regions, ([notice] if notice else []) + work.notes)


def _held_to(dets, per_class: list[float]):
    """Keep each detection whose score reaches its own class's threshold."""
    if len(dets) == 0 or len(set(per_class)) == 1:
        return dets
    limits = torch.tensor(per_class, dtype=dets.scores.dtype)[dets.labels.long()]
    return dets.select(torch.nonzero(dets.scores >= limits).flatten())
