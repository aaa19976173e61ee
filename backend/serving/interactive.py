"""The answers to interactive smart-tool requests (one task, the labeller waiting), beside the predictor's
pre-labelling:

- `answer_smart`: a click, clicks and/or a box -> the mask of that one object, by the SAM mask model;
- `answer_exemplars`: a box drawn around an example -> every instance like it ("find all like this"), by a
  detector family with exemplar prompts (SAM 3), as boxes and/or masks in the controls with the picked label.

Both give each region a fresh id, so that Label Studio adds the answer beside earlier ones instead of
replacing one.
"""
from __future__ import annotations

import uuid

import torch

from detection.masks import BOX_MARGIN, clip_to_boxes
from labelstudio.regions import PolygonConfig, make_region

from .mask_stage import MaskModelHolder, interactive_regions


def answer_smart(masks: MaskModelHolder, gate, works, prompts, urgent: bool) -> list[list[dict]]:
    """Each smart prompt -> the mask of that object, in its image's mask control with the picked label; a
    box prompt's mask is cut to the box + BOX_MARGIN, as boxes are."""
    model = masks.get()
    regions: list[list[dict]] = [[] for _ in works]
    for i, _, prompt, image in _prompted_images(works, prompts):
        points, labels, box = prompt.in_pixels(image.size)
        with gate.hold(urgent):
            mask, score = model.mask_for_prompt(image, points, labels, box)
        if box is not None:
            mask = clip_to_boxes(mask[None], torch.tensor([box]), BOX_MARGIN)[0]
        regions[i].extend(interactive_regions(prompt.mask_set, prompt.label, score, image.size, mask,
                                              masks.polygons))
    return regions


def _prompted_images(works, prompts):
    """(task index, task, prompt, image) for each prompt whose image the task has."""
    for i, work in enumerate(works):
        for prompt in prompts:
            image = work.images.get(prompt.to_name)
            if image is not None:
                yield i, work, prompt, image


def answer_exemplars(detector, gate, threshold: float, polygons: PolygonConfig, works, prompts,
                     urgent: bool) -> list[list[dict]]:
    """"Find all like this": per image, every instance the detector finds for the example box (and against
    the negative ones) with score over `threshold`, in each answering control with the picked label: boxes
    in <RectangleLabels>, masks in <BrushLabels>/<PolygonLabels>, all from one pass."""
    regions: list[list[dict]] = [[] for _ in works]
    for i, work, prompt, image in _prompted_images(works, prompts):
        positive, negatives = prompt.in_pixels(image.size)
        with gate.hold(urgent):
            dets = detector.find_like(image, positive, negatives, label=0, threshold=threshold,
                                      masks=any(s.is_mask for s in prompt.answer_sets))
        for label_set in prompt.answer_sets:
            label = prompt.emitted(label_set)
            for k in range(len(dets)):
                score = float(dets.scores[k])
                if label_set.is_mask:
                    regions[i].extend(interactive_regions(label_set, label, score, image.size, dets.masks[k],
                                                          polygons))
                else:
                    box = make_region(work.task_id, label_set, image.size, dets.boxes[k].tolist(), score, label, 0)
                    regions[i].append({**box, "id": uuid.uuid4().hex[:10]})
    return regions
