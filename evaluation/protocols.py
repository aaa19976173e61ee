"""The evaluation protocol of each detector family: how many detections per image are kept, how the label
set is prompted and which settings make a run comparable with the family's published figures.

One entry per family name (`detection.families.DetectorFamily.name`). The evaluation commands take their
defaults from here (`--num-select`, LVIS's `--chunk-size`, `--iou-type`), record the protocol in
metrics.json and flag a run whose settings differ from it as non-parity. docs/evaluation.md says where
each value comes from.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from runtime.errors import InputError


@dataclass(frozen=True)
class EvalProtocol:
    family: str  # DetectorFamily.name (or one of its model types)
    num_select: int  # detections kept per image (Grounding DINO: per prompt chunk), COCO-style runs
    lvis_num_select: int  # the same on LVIS
    lvis_chunk_size: int | None  # categories per prompt chunk on LVIS (None: the family does not chunk)
    chunks_prompts: bool  # --chunk-size means something (a caption of many categories)
    batch_invariant: bool  # True: batching does not change the features (no padding), so any batch size is parity
    source: str  # where the values come from

    def as_dict(self) -> dict:
        return asdict(self)


GROUNDING_DINO_PROTOCOL = EvalProtocol(
    family="grounding-dino", num_select=300, lvis_num_select=300, lvis_chunk_size=40, chunks_prompts=True,
    batch_invariant=False,
    source="IDEA-Research/GroundingDINO demo/test_ap_on_coco.py (top-300 per image); mmdetection's Grounding DINO "
           "LVIS configs (chunked_size 40, max_per_img 300)",
)
# SAM 3: one phrase per category, every query of every prompt, then the top 100 per image over all
# categories (facebookresearch/sam3's released COCO-style eval configs: PostProcessImage(max_dets_per_img=-1)
# then PredictionDumper maxdets 100). No LVIS config is released: an LVIS run keeps the LVIS API's 300.
# Images are resized to one square size without padding: the batch size does not change the features.
SAM3_PROTOCOL = EvalProtocol(
    family="sam3", num_select=100, lvis_num_select=300, lvis_chunk_size=None, chunks_prompts=False,
    batch_invariant=True,
    source="facebookresearch/sam3 sam3/train/configs/odinw13/*.yaml (maxdets 100) and sam3/eval/coco_writer.py; "
           "LVIS: no released config, the LVIS API's 300 detections per image",
)
PROTOCOLS = {p.family: p for p in (GROUNDING_DINO_PROTOCOL, SAM3_PROTOCOL)}


def protocol_for(family) -> EvalProtocol:
    """The protocol of a `DetectorFamily`; a family without one is an InputError naming the known ones."""
    protocol = PROTOCOLS.get(family.name)
    if protocol is None:  # by a model type the family claims (its name is the family module's choice)
        protocol = next((PROTOCOLS[t] for t in family.model_types if t in PROTOCOLS), None)
    if protocol is None:
        raise InputError(f"the evaluation has no protocol for the {family.title} family ({family.name!r}); "
                         f"known: {', '.join(PROTOCOLS)}")
    return protocol
