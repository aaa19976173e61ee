"""Published figures per checkpoint (Grounding DINO family, SAM 3), one row per (checkpoint, benchmark,
IoU type, source).

The summary of a full run and `python -m evaluation.report` show the row(s) of the run's checkpoint
beside our number. AP is in % (COCOeval `stats[0]`; LVIS: Fixed AP, with APr/APc/APf where published).
`zero_shot` is False where the benchmark's images or labels were in the checkpoint's training data.
Every figure was checked against the file named in `where` before it was written down.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

COCO_VAL2017 = "coco-val2017"
LVIS_MINIVAL = "lvis-minival"
LVIS_VAL = "lvis-val1.0"
# SAM 3's LVIS figures name no split (README "LVIS", paper "LVIS"): kept apart so that no run is compared
# with them as if the split were known.
LVIS_SPLIT_NOT_STATED = "lvis-split-not-stated"

MMDET_MM_GDINO = "github.com/open-mmlab/mmdetection configs/mm_grounding_dino/README.md"
HF_MM_GDINO = "github.com/huggingface/transformers docs/source/en/model_doc/mm-grounding-dino.md"
GDINO_README = "github.com/IDEA-Research/GroundingDINO README.md"
GDINO_PAPER = "arXiv 2303.05499 (Grounding DINO paper)"
SAM3_README = "github.com/facebookresearch/sam3 README.md, 'Image Results' (commit 11c7654)"


@dataclass(frozen=True)
class Published:
    checkpoint: str  # hub id
    benchmark: str  # COCO_VAL2017 | LVIS_MINIVAL | LVIS_VAL
    ap: float
    source: str  # who measured it: paper, official script, mmdetection, ...
    where: str  # the file or paper the figure is in
    zero_shot: bool
    apr: float | None = None
    apc: float | None = None
    apf: float | None = None
    note: str = ""
    iou_type: str = "bbox"  # "bbox": box AP; "segm": mask AP

    def as_dict(self) -> dict:
        return asdict(self)


_GD_T, _GD_B = "IDEA-Research/grounding-dino-tiny", "IDEA-Research/grounding-dino-base"
_MM = "openmmlab-community/mm_grounding_dino_"
_SAM3 = "facebook/sam3"
_SAM3_COCO = "the source says 'COCO' without a split: val2017 assumed"
_SAM3_LVIS = ("the source says 'LVIS' without a split or metric variant (Fixed AP or not); 47.0 mask AP is "
              "quoted for arXiv 2511.16719v1 by secondary sources, not verified against the paper")
_COCO_SEEN = "COCO was in this checkpoint's training data: not a zero-shot figure"

PUBLISHED: tuple[Published, ...] = (
    Published(_GD_T, COCO_VAL2017, 48.4, "paper", f"{GDINO_PAPER}, Table 2", True),
    Published(_GD_T, COCO_VAL2017, 48.5, "official script", f"{GDINO_README} (demo/test_ap_on_coco.py)", True),
    Published(_GD_B, COCO_VAL2017, 56.7, "official README", GDINO_README, False, note=_COCO_SEEN),
    Published(_GD_T, LVIS_MINIVAL, 27.4, "paper", f"{GDINO_PAPER}, LVIS table", True, 18.1, 23.3, 32.7),
    Published(_GD_T, LVIS_MINIVAL, 28.8, "mmdetection", MMDET_MM_GDINO, True, 18.8, 24.2, 34.7),
    Published(_GD_T, LVIS_VAL, 20.1, "mmdetection", MMDET_MM_GDINO, True, 10.1, 15.3, 29.9),
    Published(f"{_MM}tiny_o365v1_goldg", COCO_VAL2017, 50.4, "mmdetection", MMDET_MM_GDINO, True),
    Published(f"{_MM}tiny_o365v1_goldg_grit", COCO_VAL2017, 50.5, "mmdetection", MMDET_MM_GDINO, True),
    Published(f"{_MM}tiny_o365v1_goldg_v3det", COCO_VAL2017, 50.6, "mmdetection", MMDET_MM_GDINO, True),
    Published(f"{_MM}tiny_o365v1_goldg_grit_v3det", COCO_VAL2017, 50.4, "mmdetection", MMDET_MM_GDINO, True),
    Published(f"{_MM}base_o365v1_goldg_v3det", COCO_VAL2017, 52.5, "mmdetection", HF_MM_GDINO, True),
    Published(f"{_MM}base_all", COCO_VAL2017, 59.5, "mmdetection", HF_MM_GDINO, False, note=_COCO_SEEN),
    Published(f"{_MM}large_o365v2_oiv6_goldg", COCO_VAL2017, 53.0, "mmdetection", HF_MM_GDINO, True),
    Published(f"{_MM}large_all", COCO_VAL2017, 60.3, "mmdetection", HF_MM_GDINO, False, note=_COCO_SEEN),
    Published(f"{_MM}tiny_o365v1_goldg", LVIS_MINIVAL, 35.7, "mmdetection", MMDET_MM_GDINO, True, 28.1, 30.2, 42.0),
    Published(f"{_MM}tiny_o365v1_goldg", LVIS_VAL, 27.0, "mmdetection", MMDET_MM_GDINO, True, 17.1, 22.4, 36.5),
    Published(f"{_MM}tiny_o365v1_goldg_grit", LVIS_MINIVAL, 36.5, "mmdetection", MMDET_MM_GDINO, True, 26.6, 32.4, 41.8),
    Published(f"{_MM}tiny_o365v1_goldg_grit", LVIS_VAL, 27.1, "mmdetection", MMDET_MM_GDINO, True, 17.3, 22.6, 36.4),
    Published(f"{_MM}tiny_o365v1_goldg_v3det", LVIS_MINIVAL, 40.5, "mmdetection", MMDET_MM_GDINO, True, 33.0, 36.0, 45.9),
    Published(f"{_MM}tiny_o365v1_goldg_v3det", LVIS_VAL, 30.6, "mmdetection", MMDET_MM_GDINO, True, 21.5, 25.5, 40.2),
    Published(f"{_MM}tiny_o365v1_goldg_grit_v3det", LVIS_MINIVAL, 41.4, "mmdetection", MMDET_MM_GDINO, True,
              34.2, 37.4, 46.2),
    Published(f"{_MM}tiny_o365v1_goldg_grit_v3det", LVIS_VAL, 31.9, "mmdetection", MMDET_MM_GDINO, True,
              23.6, 27.6, 40.5),
    # LLMDet: the transformers table's header lists APr, APc, APf, AP but the values are AP, APr, APc,
    # APf (its AP 50.7 > every group is impossible); only AP is recorded. GroundingCap-1M holds COCO images
    # (LVIS images are COCO images), so these are flagged as not zero-shot.
    Published("iSEE-Laboratory/llmdet_tiny", LVIS_MINIVAL, 44.7, "LLMDet authors", HF_MM_GDINO, False,
              note="trained on GroundingCap-1M (COCO images)"),
    Published("iSEE-Laboratory/llmdet_tiny", LVIS_VAL, 34.9, "LLMDet authors", HF_MM_GDINO, False,
              note="trained on GroundingCap-1M (COCO images)"),
    Published("iSEE-Laboratory/llmdet_base", LVIS_MINIVAL, 48.3, "LLMDet authors", HF_MM_GDINO, False,
              note="trained on GroundingCap-1M (COCO images)"),
    Published("iSEE-Laboratory/llmdet_base", LVIS_VAL, 38.5, "LLMDet authors", HF_MM_GDINO, False,
              note="trained on GroundingCap-1M (COCO images)"),
    Published("iSEE-Laboratory/llmdet_large", LVIS_MINIVAL, 51.1, "LLMDet authors", HF_MM_GDINO, False,
              note="trained on GroundingCap-1M (COCO images)"),
    Published("iSEE-Laboratory/llmdet_large", LVIS_VAL, 42.0, "LLMDet authors", HF_MM_GDINO, False,
              note="trained on GroundingCap-1M (COCO images)"),
    # SAM 3 (arXiv 2511.16719): the README's image table. Its COCO column names no split; val2017 is the
    # split the zero-shot COCO figures of the other rows in that table (OWLv2, DINO-X) are reported on.
    Published(_SAM3, COCO_VAL2017, 56.4, "SAM 3 authors", SAM3_README, True, note=_SAM3_COCO),
    Published(_SAM3, LVIS_SPLIT_NOT_STATED, 53.6, "SAM 3 authors", SAM3_README, True, note=_SAM3_LVIS),
    Published(_SAM3, LVIS_SPLIT_NOT_STATED, 48.5, "SAM 3 authors", SAM3_README, True, note=_SAM3_LVIS,
              iou_type="segm"),
)


def checkpoint_key(model: str) -> str:
    """A hub id or local directory -> the name the table knows it by (`grounding_dino-tiny` and a local
    `.../grounding-dino-tiny/` both -> "grounding-dino-tiny")."""
    return Path(model.rstrip("/")).name.lower().replace("_", "-")


def published_for(model: str, benchmark: str, iou_type: str = "bbox") -> list[Published]:
    """The rows for a checkpoint (matched by its name, exactly) on a benchmark and IoU type; [] when none."""
    key = checkpoint_key(model)
    return [p for p in PUBLISHED
            if p.benchmark == benchmark and p.iou_type == iou_type and checkpoint_key(p.checkpoint) == key]


def comparison_lines(ours: float, rows: list[dict]) -> list[str]:
    """Our AP (%) beside each published figure (rows as `Published.as_dict()`), for the printed summary;
    a note where a figure is not zero-shot."""
    lines = [f"published {r['ap']:.1f} ({r['source']}, {r['where']}): ours {ours:.1f}, difference "
             f"{ours - r['ap']:+.1f}" for r in rows]
    notes = sorted({r["note"] for r in rows if not r["zero_shot"] and r["note"]})
    return lines + [f"note: {n}" for n in notes]
