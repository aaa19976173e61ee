"""Run by test_reference.py under a Python that has torchvision (a separate venv): transformers' own
SAM 3 processor, post-processing and torchvision's roi_align, on inputs the test wrote. Imports nothing of
this repository, so every number it saves is the reference's own.

usage: python reference_script.py MODEL_DIR WORK_DIR   (WORK_DIR holds images/*.png; writes reference.pt)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torchvision
import transformers
from PIL import Image
from transformers import AutoModel, Sam3Processor

PHRASES = ["cat", "red car"]
THRESHOLD = 0.2


def main(model_dir: str, work_dir: str) -> None:
    work = Path(work_dir)
    images = [Image.open(p).convert("RGB") for p in sorted((work / "images").glob("*.png"))]
    processor = Sam3Processor.from_pretrained(model_dir)  # the tiny checkpoint's files, as a user loads them
    model = AutoModel.from_pretrained(model_dir).eval()
    out: dict = {"versions": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                              "transformers": transformers.__version__,
                              "cpu_capability": torch.backends.cpu.get_cpu_capability()}}

    # (a) pixels of the processor at the checkpoint's size and at facebook/sam3's 1008.
    out["pixels"] = processor(images=images, return_tensors="pt")["pixel_values"]
    out["pixels_1008"] = processor.image_processor(images, size={"height": 1008, "width": 1008}, return_tensors="pt")["pixel_values"]

    # (b) roi_align on random features and boxes of every kind (inside, across the border, outside, degenerate).
    torch.manual_seed(0)
    features = torch.randn(2, 8, 24, 31)
    boxes = [torch.tensor([[1.0, 2.0, 29.5, 20.0], [-3.0, -1.5, 4.0, 3.0], [12.25, 7.5, 40.0, 30.0]]),
             torch.tensor([[5.0, 5.0, 5.0, 6.0], [-9.0, -9.0, -2.5, -2.0], [0.1, 0.2, 30.9, 23.8]])]
    out["roi_inputs"] = {"features": features, "boxes": boxes}
    out["roi"] = {f"{aligned}-{ratio}": torchvision.ops.roi_align(features, boxes, 7, 0.5, ratio, aligned)
                  for aligned in (False, True) for ratio in (-1, 2)}

    # (c) per phrase: raw outputs and post_process_instance_segmentation on the original sizes.
    sizes = [(im.size[1], im.size[0]) for im in images]
    out["text"] = {}
    for phrase in PHRASES:
        inputs = processor(images=images, text=[phrase] * len(images), return_tensors="pt")
        with torch.inference_mode():
            outputs = model(**inputs)
        results = processor.post_process_instance_segmentation(outputs, threshold=THRESHOLD, mask_threshold=0.5, target_sizes=sizes)
        out["text"][phrase] = {"raw": _raw(outputs), "results": results}

    # (d) an exemplar: one positive and one negative box on the second image, with and without a phrase.
    image = images[1]
    out["exemplar"] = {}
    for phrase in (None, "red car"):
        inputs = processor(images=[image], text=None if phrase is None else [phrase],
                           input_boxes=[[[10.0, 20.0, 40.0, 60.0], [0.0, 0.0, 8.0, 9.0]]], input_boxes_labels=[[1, 0]],
                           return_tensors="pt")
        with torch.inference_mode():
            outputs = model(**inputs)
        results = processor.post_process_instance_segmentation(outputs, threshold=THRESHOLD, target_sizes=[(image.size[1], image.size[0])])
        out["exemplar"][str(phrase)] = {"raw": _raw(outputs), "results": results, "input_boxes": inputs["input_boxes"]}
    torch.save(out, work / "reference.pt")
    print(json.dumps(out["versions"]))


def _raw(outputs) -> dict:
    return {k: getattr(outputs, k).clone() for k in ("pred_logits", "pred_boxes", "presence_logits", "pred_masks")}


if __name__ == "__main__":
    main(*sys.argv[1:3])
