"""Masks: one image embedding + all boxes in one decoder batch vs one SAM call per box, same run.

    python -m benchmarks.masks [--quick] [--model DIR] [--model-type sam|sam-small|sam2] [--boxes N] [--rounds N]

The model is a SAM-family directory (default: the full SAM ViT-B architecture, `SamConfig()`, random
weights, built into a cache under the system temp dir when missing; `--model-type sam2` builds SAM 2.1
Hiera-Tiny, whose processor needs torchvision; `--quick` defaults to `sam-small`, a 4-layer 256-wide ViT
with SAM's full decoder, since one ViT-B embedding takes ~20 s of one CPU core). Per round and image, both
paths run back to back on the same image and boxes, so machine load cancels out in the ratio:

- batched: `MaskModel.masks_for_boxes([image], [N boxes])`: one embedding, one decoder batch;
- per box: N calls `MaskModel.masks_for_boxes([image], [1 box])`: the embedding recomputed per box, as a
  loop over SAM's model card does.

The masks of both paths are compared (fraction of differing pixels). The last line is
`per_box_vs_batched=<x> boxes=<N>`.

With `--detector DIR` (a Grounding DINO directory), a second measurement: the backend's cost per image of a
`<BrushLabels>` config (boxes, then masks) vs the same labels as `<RectangleLabels>` (boxes alone), through
`backend.serving.predictor.Predictor.predict_tasks`, interleaved; its line is `masks_vs_boxes=<x>`.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .common import make_images
from .workers import MemoryFetcher

# torch, the detection core, the backend's serving modules and the random SAM builder (all of which import
# torch) are imported inside the functions: --help answers without loading torch.


@dataclass(frozen=True)
class MaskTiming:
    boxes: int
    batched_s: list[float]  # per image, one embedding + one decoder batch
    per_box_s: list[float]  # per image, one full call per box
    max_pixel_disagreement: float  # fraction of pixels where the two paths' masks differ, worst box

    @property
    def ratio(self) -> float:
        return statistics.median(self.per_box_s) / statistics.median(self.batched_s)


def time_mask_paths(model, images, boxes_per_image, rounds: int) -> MaskTiming:
    """Interleaved timings of the batched and the per-box path on the same images and boxes.
    One untimed warm-up pass per path first (allocator, kernels)."""
    import torch

    def batched(image, boxes):
        return model.masks_for_boxes([image], [boxes])[0]

    def per_box(image, boxes):
        return torch.cat([model.masks_for_boxes([image], [box[None]])[0] for box in boxes])

    batched(images[0], boxes_per_image[0]), per_box(images[0], boxes_per_image[0][:1])
    batched_s, per_box_s, disagreement = [], [], 0.0
    for _ in range(rounds):
        for image, boxes in zip(images, boxes_per_image):
            start = time.perf_counter()
            together = batched(image, boxes)
            batched_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            apart = per_box(image, boxes)
            per_box_s.append(time.perf_counter() - start)
            per_mask = (together != apart).flatten(1).float().mean(1)
            disagreement = max(disagreement, float(per_mask.max()))
    return MaskTiming(len(boxes_per_image[0]), batched_s, per_box_s, disagreement)


LABELS = ("Person", "Car", "Dog")


def label_config(control: str) -> str:
    labels = "".join(f'<Label value="{v}"/>' for v in LABELS)
    return f'<View><Image name="image" value="$image"/><{control} name="label" toName="image">{labels}</{control}></View>'


def time_boxes_vs_masks(detector_dir: str, mask_model, image_bytes: list[bytes], rounds: int, device: str):
    """(seconds per image with boxes alone, with boxes then masks), medians over interleaved rounds."""
    from detection import Detector, DetectorConfig
    from backend.serving.mask_stage import MaskModelHolder
    from backend.serving.predictor import Predictor
    from backend.settings import Settings

    settings = Settings(model=detector_dir, device=device, box_threshold=0.0)  # boxes on every image
    fetcher = MemoryFetcher()
    fetcher.images = {f"mem://{i}": data for i, data in enumerate(image_bytes)}
    predictor = Predictor(Detector.load(DetectorConfig(model=detector_dir, device=device)), settings, fetcher=fetcher,
                          masks=MaskModelHolder.of(mask_model, settings))
    tasks = [{"id": i + 1, "data": {"image": url}} for i, url in enumerate(fetcher.images)]
    times = {"RectangleLabels": [], "BrushLabels": []}
    predictor.predict_tasks(tasks[:1], label_config("RectangleLabels"))  # warm-up
    for _ in range(rounds):
        for control in times:
            started = time.perf_counter()
            items = predictor.predict_tasks(tasks, label_config(control))
            times[control].append((time.perf_counter() - started) / len(tasks))
            if any("result" not in item for item in items):
                raise SystemExit(f"a {control} prediction failed ({items}): nothing was measured")
    return statistics.median(times["RectangleLabels"]), statistics.median(times["BrushLabels"])


def random_boxes(images, count: int, seed: int = 0):
    """`count` boxes per image, each at least a tenth of the image on each side, inside it."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    out = []
    for image in images:
        width, height = image.size
        corner = torch.rand(count, 2, generator=generator) * 0.6
        extent = 0.1 + torch.rand(count, 2, generator=generator) * 0.3
        xyxy = torch.cat([corner, corner + extent], dim=1) * torch.tensor([width, height, width, height])
        out.append(xyxy)
    return out


def mask_model_dir(path: str | None, model_type: str) -> Path:
    if path:
        return Path(path)
    target = Path(tempfile.gettempdir()) / "gdino-bench-cache" / f"{model_type}-random"
    if not (target / "model.safetensors").exists():
        print(f"building the full-size random {model_type} model into {target} ...", file=sys.stderr, flush=True)
        from .random_sam import build_full_size_sam

        build_full_size_sam(target, model_type)
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.masks", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 image, 4 boxes, 1 round, the sam-small model")
    parser.add_argument("--model", help="a SAM-family model directory (default: a random full-size one)")
    parser.add_argument("--model-type", choices=["sam", "sam-small", "sam2"], default=None,
                        help="architecture of the default model (default sam; --quick sam-small)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--boxes", type=int, default=None, help="boxes per image (default 8; --quick 4)")
    parser.add_argument("--images", type=int, default=None, help="images per round (default 2; --quick 1)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 2; --quick 1)")
    parser.add_argument("--detector", default=None, help="a Grounding DINO directory: also measure the backend's "
                        "cost of masks (BrushLabels) vs boxes alone (RectangleLabels) per image")
    args = parser.parse_args(argv)
    boxes = args.boxes or (4 if args.quick else 8)
    count = args.images or (1 if args.quick else 2)
    rounds = args.rounds or (1 if args.quick else 2)
    if boxes < 1 or count < 1 or rounds < 1:
        parser.error("--boxes, --images and --rounds must be at least 1")

    import torch

    from detection import open_image
    from detection.masks import MaskModel, MaskModelConfig, MaskModelLoadError

    directory = mask_model_dir(args.model, args.model_type or ("sam-small" if args.quick else "sam"))
    try:
        model = MaskModel.load(MaskModelConfig(model=str(directory), device=args.device, dtype=args.dtype))
    except (MaskModelLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    images = [open_image(data) for data in make_images()[:count]]
    timing = time_mask_paths(model, images, random_boxes(images, boxes), rounds)
    batched, per_box = statistics.median(timing.batched_s), statistics.median(timing.per_box_s)
    print(f"model {directory} ({model.model_type}), {args.device} {args.dtype}, {torch.get_num_threads()} threads, "
          f"{count} image(s) x {rounds} round(s), {boxes} boxes per image")
    print("| path | s per image (median) | s per box |")
    print("|---|---|---|")
    print(f"| one embedding + {boxes} boxes in one batch | {batched:.3f} | {batched / boxes:.3f} |")
    print(f"| one SAM call per box | {per_box:.3f} | {per_box / boxes:.3f} |")
    print(f"masks of the two paths differ on at most {timing.max_pixel_disagreement:.2e} of a mask's pixels")
    if args.detector:
        boxes_s, masks_s = time_boxes_vs_masks(args.detector, model, make_images()[:count], rounds, args.device)
        print(f"backend per image: boxes alone {boxes_s:.3f} s, boxes + masks {masks_s:.3f} s")
        print(f"masks_vs_boxes={masks_s / boxes_s:.2f}")
    print(f"per_box_vs_batched={timing.ratio:.2f} boxes={boxes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
