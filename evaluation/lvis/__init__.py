"""Zero-shot LVIS v1 evaluation (minival and val1.0) by mmdetection's Grounding DINO protocol
(`python -m evaluation.lvis`): 1,203 categories in prompt chunks (40 by default), each chunk's own
top-300 per image, Fixed AP (top 10,000 detections per category over the split, no per-image cap) with
APr/APc/APf, scored by the LVIS rules written on pycocotools' COCOeval (`scoring`).

The run machinery (download, resume, torchrun, run directory) is evaluation.runner's, as for COCO.
"""
