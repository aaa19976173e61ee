"""A scored Label Studio export as COCO files: the annotators' final regions as ground truth, the stored
pre-labels as results. Shared by `python -m evaluation.labelstudio` and the backend's threshold learning."""
from __future__ import annotations

from evaluation.masks import rle_area

from .export import Task


def coco_files(tasks: list[Task]) -> tuple[dict, list[dict]]:
    """Annotated tasks -> COCO ground truth (boxes in pixels) and the pre-labels as COCO results; regions
    with masks (a mask export) also carry their `segmentation` (RLE), and ground truth its mask area."""
    labels = sorted({b.label for t in tasks if t.annotation is not None for b in t.annotation + t.prediction})
    cat = {name: k + 1 for k, name in enumerate(labels)}
    images, anns, dets = [], [], []
    for t in tasks:
        if t.annotation is None:
            continue
        images.append({"id": t.id, "file_name": t.image, "width": t.width, "height": t.height})
        for b in t.annotation:
            box = b.box(t.width, t.height)
            anns.append({"id": len(anns) + 1, "image_id": t.id, "category_id": cat[b.label], "bbox": box,
                         "area": box[2] * box[3], "iscrowd": 0})
            if b.rle is not None:
                anns[-1].update(segmentation=b.rle, area=rle_area(b.rle))
        for b in t.prediction:
            dets.append({"image_id": t.id, "category_id": cat[b.label], "bbox": b.box(t.width, t.height),
                         "score": 1.0 if b.score is None else b.score})
            if b.rle is not None:
                dets[-1]["segmentation"] = b.rle
    categories = [{"id": k, "name": name} for name, k in cat.items()]
    return {"images": images, "annotations": anns, "categories": categories}, dets
