"""SAM 3: one image embedding reused by N label prompts vs N full forwards, and the cost per image of masks
(SAM 3 alone vs Grounding DINO + the SAM mask stage); every ratio from one run on the same images.

    python -m benchmarks.sam3 [--quick] [--labels 1,4,16] [--model SAM3] [--detector GDINO] [--sam-model SAM]
                              [--device cpu|cuda|auto] [--dtype fp32|bf16|fp16] [--images N] [--rounds N]

Models (random weights at real sizes unless given, built once into a cache under the system temp dir; the
cost of a forward pass does not depend on weight values): SAM 3 `Sam3Config()` (facebook/sam3's detector;
`--quick`: an 8-layer ViT, benchmarks/random_sam3.py), the full grounding-dino-tiny architecture, SAM ViT-B
(what the backend loads for masks where torchvision is missing; `--quick`: SAM with a 4-layer ViT). Images:
the COCO-sized images of the other benchmarks (benchmarks/common.py), batch 1, as the backend on a CPU.

1. Reuse, per image and N in `--labels` (the first N COCO names), back to back:
   - reused: `Sam3Detector.vision` once (the image embedding), then `Sam3Detector.forward` per label with
     its cached text embedding (the detector keeps text embeddings across images: filled before timing);
   - full: per label `Sam3Model(pixel_values=..., input_ids=..., attention_mask=...)`, preprocessing and
     tokenizing included, as a per-label loop over transformers' model does.
   Agreement: max |Δscore| (detection x presence probability) and max |Δbox| (normalised) over every
   query of every label. Ratio: full / reused.
2. Masks per image, 5 labels (benchmarks/common.py's), back to back:
   - SAM 3 alone: `Sam3Detector.detect(..., masks=True)`: boxes and SAM 3's own masks from one pass;
   - Grounding DINO + SAM: `Detector.detect`, then the backend's mask stage
     (`backend.serving.mask_stage.masks_for`: one SAM embedding, all boxes in one decoder batch, each
     mask cut to its box + margin), as the backend does for `<BrushLabels>`.
   With `--detections K` (default 8) each path's threshold is set, from an untimed warm-up pass on the
   first image, to keep about K detections per image (random weights have no meaningful scores; the mask
   stage's cost grows with the boxes); `--detections 0` uses each family's default threshold.

The last line is `reuse_vs_full=<N>:<x>,... gdino_sam_vs_sam3=<y>`: medians of the per-image ratios (y > 1:
SAM 3 alone is cheaper per image).
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evaluation.coco.names import COCO_NAMES
from runtime.allocator import enable_thp_allocation

from .common import BOX_THRESHOLD, LS_CLASSES, make_images, model_dir
from .masks import mask_model_dir

# torch, the detection core, the backend's mask stage and the random SAM 3 builder (all of which import
# torch) are imported inside the functions: the THP lever is set before torch loads, and --help answers
# without it.

DEFAULT_LABELS = (1, 4, 16)
QUICK_LABELS = (1, 4)


@dataclass
class Paired:
    """Seconds per image of two paths measured back to back, pair by pair."""

    first_s: list[float] = field(default_factory=list)
    second_s: list[float] = field(default_factory=list)

    def add(self, first: float, second: float) -> None:
        self.first_s.append(first)
        self.second_s.append(second)

    def ratios(self) -> list[float]:
        """second / first, per pair."""
        return [b / a for a, b in zip(self.first_s, self.second_s)]

    def ratio(self) -> float:
        """The median of the per-pair ratios: each pair ran back to back, so load on the machine cancels."""
        return statistics.median(self.ratios())


@dataclass
class Reuse:
    labels: int
    times: Paired = field(default_factory=Paired)  # (reused, full)
    max_score_diff: float = 0.0
    max_box_diff: float = 0.0


def inference(detector):
    """The detector's own inference context (inference mode, its autocast), for the full-forward path."""
    import torch

    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    stack.enter_context(torch.autocast(detector.device.type, dtype=detector.dtype, enabled=detector.dtype != torch.float32))
    return stack


def scores_and_boxes(outputs):
    from detection.sam3 import query_scores

    presence = outputs.presence_logits
    scores = query_scores(outputs.pred_logits.float(), None if presence is None else presence.float())
    return scores[0].cpu(), outputs.pred_boxes[0].float().cpu()


def progress(message: str) -> None:
    """A line on stderr per measured pair: a full-size run on a CPU takes many minutes."""
    print(message, file=sys.stderr, flush=True)


def reused(detector, image, phrases):
    """Per label (scores (Q,), boxes (Q, 4)): one image embedding, every label's prompt on it."""
    vision = detector.vision([image])
    return [scores_and_boxes(detector.forward(vision, phrase)) for phrase in phrases]


def full_forwards(detector, image, phrases):
    """The same, one full `Sam3Model(pixel_values, input_ids)` per label: image and text encoded each time."""
    out = []
    for phrase in phrases:
        pixel_values = detector.preprocessor([image]).pixel_values.to(detector.device)
        input_ids, attention_mask = detector.text.tokens(phrase)
        with inference(detector):
            outputs = detector.model(pixel_values=pixel_values, input_ids=input_ids.to(detector.device),
                                     attention_mask=attention_mask.to(detector.device))
        out.append(scores_and_boxes(outputs))
    return out


def time_reuse(detector, images, label_counts, rounds: int) -> list[Reuse]:
    results = [Reuse(n) for n in label_counts]
    for phrase in COCO_NAMES[: max(label_counts)]:  # the cache as the backend has it after its first image
        detector.text.get(phrase, detector.device)
    for _ in range(rounds):
        for image in images:
            for result in results:
                phrases = COCO_NAMES[: result.labels]
                start = time.perf_counter()
                fast = reused(detector, image, phrases)
                middle = time.perf_counter()
                slow = full_forwards(detector, image, phrases)
                result.times.add(middle - start, time.perf_counter() - middle)
                progress(f"{result.labels} label(s), {image.size[0]}x{image.size[1]}: reused {middle - start:.2f} s, "
                         f"full {result.times.second_s[-1]:.2f} s")
                for (s1, b1), (s2, b2) in zip(fast, slow):
                    result.max_score_diff = max(result.max_score_diff, float((s1 - s2).abs().max()))
                    result.max_box_diff = max(result.max_box_diff, float((b1 - b2).abs().max()))
    return results


@dataclass
class MaskCost:
    times: Paired = field(default_factory=Paired)  # (SAM 3 alone, Grounding DINO + SAM)
    sam3_found: list[int] = field(default_factory=list)
    gdino_found: list[int] = field(default_factory=list)
    gdino_boxes_s: list[float] = field(default_factory=list)  # of the second path: its detector ...
    gdino_masks_s: list[float] = field(default_factory=list)  # ... and its mask stage


def kth_score(scores, k: int) -> float:
    """The k-th highest score (the lowest when there are fewer)."""
    ranked = sorted((float(s) for s in scores), reverse=True)
    return ranked[min(k, len(ranked)) - 1] if ranked else 0.0


def thresholds(sam3, gdino, prompt, image, classes, detections: int) -> tuple[float, float]:
    """(SAM 3 threshold, Grounding DINO threshold): each family's default when `detections` is 0, else
    each path's k-th best score on `image` (SAM 3 keeps score > t, Grounding DINO score >= t)."""
    from detection.sam3 import DEFAULT_THRESHOLD

    if detections == 0:
        return DEFAULT_THRESHOLD, BOX_THRESHOLD
    (found,) = sam3.detect([image], classes, threshold=0.0)
    (boxes,) = gdino.detect([image], prompt, 0.0)
    # The float32 value just below the k-th score: a float64 one would round back to it when compared.
    below = float(np.nextafter(np.float32(kth_score(found.scores, detections)), np.float32(-np.inf)))
    return below, kth_score(boxes.scores, detections)


def time_masks(sam3, gdino, mask_model, images, classes, rounds: int, detections: int):
    from backend.serving.mask_stage import masks_for

    prompt = gdino.prompt(classes)
    sam3_t, gdino_t = thresholds(sam3, gdino, prompt, images[0], classes, detections)
    cost = MaskCost()
    for _ in range(rounds):
        for image in images:
            start = time.perf_counter()
            (alone,) = sam3.detect([image], classes, threshold=sam3_t, masks=True)
            middle = time.perf_counter()
            (boxes,) = gdino.detect([image], prompt, gdino_t)
            boxed = time.perf_counter()
            (masks,) = masks_for(mask_model, [image], [boxes])
            end = time.perf_counter()
            cost.times.add(middle - start, end - middle)
            cost.gdino_boxes_s.append(boxed - middle)
            cost.gdino_masks_s.append(end - boxed)
            cost.sam3_found.append(len(alone.scores))
            cost.gdino_found.append(len(masks))
            progress(f"masks, {image.size[0]}x{image.size[1]}: SAM 3 {middle - start:.2f} s, Grounding DINO + SAM "
                     f"{end - middle:.2f} s")
    return cost, sam3_t, gdino_t


def cached_model(path: str | None, name: str, build) -> Path:
    """`path`, else a random model built once into the benchmark cache by `build(target)`."""
    if path:
        return Path(path)
    target = Path(tempfile.gettempdir()) / "gdino-bench-cache" / f"{name}-random"
    if not (target / "model.safetensors").exists():
        print(f"building the random {name} model into {target} ...", file=sys.stderr, flush=True)
        build(target)
    return target


def span(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"


def report(header: str, reuse: list[Reuse], cost: MaskCost, sam3_t: float, gdino_t: float, detections: int) -> None:
    print(header)
    print("one image embedding + N label prompts vs N full forwards (per image):")
    print("| labels | embedding + N prompts, s | N full forwards, s | full / reused (median, min-max) | max Δscore | max Δbox |")
    print("|---|---|---|---|---|---|")
    for r in reuse:
        print(f"| {r.labels} | {statistics.median(r.times.first_s):.3f} | {statistics.median(r.times.second_s):.3f} | "
              f"{span(r.times.ratios())} | {r.max_score_diff:.1e} | {r.max_box_diff:.1e} |")
    print("(reused: text embeddings cached, as the detector keeps them across images; full: image and text encoded "
          "per label; Δ over every query of every label)")
    print("masks per image, 5 labels:")
    print("| path | s/image (median) | vs SAM 3 alone (median, min-max) | detections/image | parts, s/image |")
    print("|---|---|---|---|---|")
    print(f"| SAM 3 alone (boxes + its own masks) | {statistics.median(cost.times.first_s):.3f} | 1.00x | "
          f"{statistics.mean(cost.sam3_found):.1f} | one pass |")
    print(f"| Grounding DINO + SAM mask stage | {statistics.median(cost.times.second_s):.3f} | {span(cost.times.ratios())} | "
          f"{statistics.mean(cost.gdino_found):.1f} | boxes {statistics.median(cost.gdino_boxes_s):.3f} + masks "
          f"{statistics.median(cost.gdino_masks_s):.3f} |")
    how = ("each family's default" if detections == 0
           else f"set on the first image to keep ~{detections} detections per image")
    print(f"thresholds ({how}): SAM 3 score > {sam3_t:.4g}, Grounding DINO score >= {gdino_t:.4g}; different models: "
          "no agreement column")
    ratios = ",".join(f"{r.labels}:{r.times.ratio():.2f}" for r in reuse)
    print(f"reuse_vs_full={ratios} gdino_sam_vs_sam3={cost.times.ratio():.2f}")


def label_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"give label counts separated by commas (e.g. 1,4,16), got {text!r}") from None
    if not counts or min(counts) < 1 or max(counts) > 80:
        raise argparse.ArgumentTypeError(f"each label count must be between 1 and 80 (the COCO names), got {text!r}")
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sam3", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 image, 1 round, labels 1,4, the smaller random models")
    parser.add_argument("--model", help="a SAM 3 checkpoint (hub id or directory; default: a random facebook/sam3-size one)")
    parser.add_argument("--detector", help="a Grounding DINO checkpoint (default: random, grounding-dino-tiny size)")
    parser.add_argument("--sam-model", help="a SAM-family mask model (default: random SAM ViT-B; --quick a 4-layer ViT)")
    parser.add_argument("--labels", type=label_counts, default=None, help="label counts N (default 1,4,16; --quick 1,4)")
    parser.add_argument("--detections", type=int, default=8, help="detections per image the mask comparison is set "
                        "to keep (default 8); 0: each family's default threshold")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--images", type=int, default=None, help="images per round (default 2; --quick 1)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 2; --quick 1)")
    args = parser.parse_args(argv)
    counts = args.labels or (QUICK_LABELS if args.quick else DEFAULT_LABELS)
    images_n = args.images or (1 if args.quick else 2)
    rounds = args.rounds or (1 if args.quick else 2)
    if images_n < 1 or rounds < 1 or args.detections < 0:
        parser.error("--images and --rounds must be at least 1, --detections at least 0")
    if images_n > 4:
        parser.error("--images: the benchmark has 4 images (benchmarks/common.py)")

    enable_thp_allocation()  # as the backend's entry points do, before torch loads
    import torch

    from detection import Detector, DetectorConfig, ModelLoadError, open_image
    from detection.masks import MaskModel, MaskModelConfig, MaskModelLoadError
    from detection.sam3 import Sam3Detector, Sam3DetectorConfig

    from .random_sam3 import build_full_size_sam3

    variant = "sam3-small" if args.quick else "sam3"
    sam3_dir = cached_model(args.model, variant, lambda target: build_full_size_sam3(target, variant))
    try:
        sam3 = Sam3Detector.load(Sam3DetectorConfig(model=str(sam3_dir), device=args.device, dtype=args.dtype))
        gdino_dir = model_dir(args.detector)
        gdino = Detector.load(DetectorConfig(model=str(gdino_dir), device=args.device, dtype=args.dtype))
        sam_dir = mask_model_dir(args.sam_model, "sam-small" if args.quick else "sam")
        mask_model = MaskModel.load(MaskModelConfig(model=str(sam_dir), device=args.device, dtype=args.dtype))
    except (ModelLoadError, MaskModelLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    images = [open_image(data) for data in make_images()[:images_n]]
    reuse = time_reuse(sam3, images, counts, rounds)
    cost, sam3_t, gdino_t = time_masks(sam3, gdino, mask_model, images, LS_CLASSES, rounds, args.detections)
    size = sam3.preprocessor.size
    header = (f"SAM 3 {sam3_dir} ({sam3.model_type}, {size}x{size}); Grounding DINO {gdino_dir}; mask model {sam_dir} "
              f"({mask_model.model_type}); {sam3.device} {args.dtype}, {torch.get_num_threads()} threads; "
              f"{images_n} image(s) ({', '.join(f'{w}x{h}' for w, h in (im.size for im in images))}) x {rounds} round(s), "
              "batch 1, interleaved")
    report(header, reuse, cost, sam3_t, gdino_t, args.detections)
    return 0


if __name__ == "__main__":
    sys.exit(main())
