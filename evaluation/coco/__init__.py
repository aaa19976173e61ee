"""Zero-shot COCO evaluation by the official Grounding DINO protocol (`python -m evaluation.coco`).

The protocol: `demo/test_ap_on_coco.py` of IDEA-Research/GroundingDINO (docs/evaluation.md). Captions and post-processing come from the detection core
(`detection`); this package loads the dataset, runs the detector resumably (optionally across
torchrun ranks, through evaluation.runner), scores with pycocotools and writes the run directory.
"""
from .dataset import CocoDataset, load_dataset
from .scoring import METRICS, per_class_table, score

__all__ = ["CocoDataset", "load_dataset", "METRICS", "per_class_table", "score"]
