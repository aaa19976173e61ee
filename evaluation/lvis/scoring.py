"""The LVIS v1 evaluation protocol (the `lvis` package's LVISEval, bbox) on pycocotools' COCOeval.

COCOeval already does LVIS's matching, accumulation (101 recall points, 10 IoU thresholds, area
ranges) and averaging; the LVIS differences are added here:
- federated negatives: a detection of category c on image i is evaluated only if c is annotated on i
  (has ground truth there) or is in i's `neg_category_ids`; elsewhere it is dropped (neither TP nor FP);
- `not_exhaustive_category_ids`: on such an image an *unmatched* detection of that category is ignored;
- ground truth has no crowd regions; an annotation's `ignore` flag is honoured; annotations and
  detections with zero area are dropped (the lvis API keeps areas > 0 only);
- the detection cap is per image across categories (`max_dets_per_image`, 300 for standard AP) and is
  applied to the results before evaluation; `None` means no cap (Fixed AP, after its per-category top-k);
- APr/APc/APf average the categories of each frequency group (`frequency` r/c/f).
Ties in score keep the results' order (stable sorts), as the lvis API's stable sorts do.
"""
from __future__ import annotations

import contextlib
import copy
import io
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from evaluation.coco.scoring import coco_gt

FIXED_AP_TOPK = 10_000  # Fixed AP's detections per category over the split (no per-image cap)
NO_LIMIT = 10**12  # COCOeval's per-(image, category) cap, made ineffective: LVIS caps per image instead
FREQUENCIES = ("r", "c", "f")
METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf", "AR", "ARs", "ARm", "ARl"]


@dataclass
class DetectionArrays:
    """Detections as parallel arrays: image ids, category ids, scores, boxes [x, y, w, h]."""

    image_id: np.ndarray
    category_id: np.ndarray
    score: np.ndarray
    bbox: np.ndarray  # (N, 4) xywh
    segmentation: np.ndarray | None = None  # (N,) object array of COCO RLEs, for segm

    def __len__(self) -> int:
        return int(self.score.shape[0])

    def take(self, index) -> "DetectionArrays":
        masks = None if self.segmentation is None else self.segmentation[index]
        return DetectionArrays(self.image_id[index], self.category_id[index], self.score[index], self.bbox[index], masks)

    @classmethod
    def from_results(cls, results: list[dict]) -> "DetectionArrays":
        return cls(np.array([r["image_id"] for r in results], dtype=np.int64),
                   np.array([r["category_id"] for r in results], dtype=np.int64),
                   np.array([r["score"] for r in results], dtype=np.float64),
                   np.array([r["bbox"] for r in results], dtype=np.float64).reshape(-1, 4))


def top_per_image(dets: DetectionArrays, max_dets: int) -> DetectionArrays:
    """The `max_dets` highest-scoring detections of each image (stable: ties keep their order)."""
    order = np.lexsort((np.arange(len(dets)), -dets.score, dets.image_id))
    img = dets.image_id[order]
    starts = np.flatnonzero(np.r_[True, img[1:] != img[:-1]])
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    return dets.take(np.sort(order[rank < max_dets]))


class FederatedCOCOeval(COCOeval):
    """COCOeval with LVIS's `_prepare` and `evaluateImg` rules: `neg` and `not_exhaustive` map an image id
    to its `neg_category_ids` and `not_exhaustive_category_ids`; no per-(image, category) cap."""

    def __init__(self, gt, dt, neg: dict, not_exhaustive: dict, iou_type: str = "bbox"):
        super().__init__(gt, dt, iou_type)
        self.neg, self.not_exhaustive = neg, not_exhaustive
        self.params.maxDets = [NO_LIMIT]

    def _prepare(self):
        p = self.params
        self._gts, self._dts = defaultdict(list), defaultdict(list)
        present = defaultdict(set)
        for g in self.cocoGt.loadAnns(self.cocoGt.getAnnIds(imgIds=p.imgIds, catIds=p.catIds)):
            if g["area"] <= 0:
                continue
            g["ignore"] = int(g.get("ignore", 0) or 0)
            if p.iouType == "segm":  # polygons -> RLE in the image's frame, as COCOeval's _toMask
                g["segmentation"] = self.cocoGt.annToRLE(g)
            self._gts[g["image_id"], g["category_id"]].append(g)
            present[g["image_id"]].add(g["category_id"])
        for d in self.cocoDt.loadAnns(self.cocoDt.getAnnIds(imgIds=p.imgIds, catIds=p.catIds)):
            img, cat = d["image_id"], d["category_id"]
            if d["area"] > 0 and (cat in present[img] or cat in self.neg.get(img, ())):
                self._dts[img, cat].append(d)
        self.evalImgs = defaultdict(list)
        self.eval = {}

    def evaluate(self):
        """COCOeval.evaluate over only the (image, category) pairs that have something: the same
        evalImgs layout (None elsewhere), without 6 M empty calls for LVIS's 1,203 categories."""
        p = self.params
        p.imgIds = list(np.unique(p.imgIds))
        p.catIds = list(np.unique(p.catIds))
        p.maxDets = sorted(p.maxDets)
        self.params = p
        self._prepare()
        pairs = sorted(set(self._gts) | set(self._dts))
        self.ious = {key: self.computeIoU(*key) for key in pairs}
        n_area, n_img = len(p.areaRng), len(p.imgIds)
        k_of = {c: k for k, c in enumerate(p.catIds)}
        i_of = {i: n for n, i in enumerate(p.imgIds)}
        self.evalImgs = [None] * (len(p.catIds) * n_area * n_img)
        for img, cat in pairs:
            for a, rng in enumerate(p.areaRng):
                self.evalImgs[k_of[cat] * n_area * n_img + a * n_img + i_of[img]] = self.evaluateImg(
                    img, cat, rng, p.maxDets[-1])
        self._paramsEval = copy.deepcopy(self.params)

    def evaluateImg(self, imgId, catId, aRng, maxDet):
        e = super().evaluateImg(imgId, catId, aRng, maxDet)
        if e is not None and catId in self.not_exhaustive.get(imgId, ()):
            e["dtIgnore"] = np.logical_or(e["dtIgnore"], e["dtMatches"] == 0)
        return e


class LvisEvaluator:
    """Scores detections on an LVIS-format ground truth (a loaded dict), over `image_ids`."""

    def __init__(self, gt_data: dict, image_ids=None):
        images = gt_data["images"]
        self.image_ids = sorted(int(i) for i in (image_ids if image_ids is not None else (im["id"] for im in images)))
        self.categories = sorted(gt_data["categories"], key=lambda c: c["id"])
        self.neg = {int(im["id"]): set(im.get("neg_category_ids") or ()) for im in images}
        self.not_exhaustive = {int(im["id"]): set(im.get("not_exhaustive_category_ids") or ()) for im in images}
        anns = [dict(a, iscrowd=0) for a in gt_data["annotations"]]  # LVIS has no crowd regions
        self.gt = coco_gt({"images": images, "categories": self.categories, "annotations": anns})

    def evaluate(self, dets: DetectionArrays, max_dets_per_image: int | None = 300, iou_type: str = "bbox"):
        """(metrics as fractions, -1 where undefined; the accumulated COCOeval) for the detections, by box
        IoU or (`segm`, detections with `segmentation`) by mask IoU, a detection's area its mask's."""
        wanted = np.isin(dets.image_id, self.image_ids)
        dets = dets.take(np.flatnonzero(wanted))
        if max_dets_per_image is not None:
            dets = top_per_image(dets, max_dets_per_image)
        dets = self._federated(dets)
        area = dets.bbox[:, 2] * dets.bbox[:, 3]
        results = [{"id": n + 1, "image_id": int(i), "category_id": int(c), "bbox": [float(v) for v in b],
                    "score": float(s), "area": float(a), "iscrowd": 0}
                   for n, (i, c, b, s, a) in enumerate(zip(dets.image_id, dets.category_id, dets.bbox, dets.score, area))]
        if iou_type == "segm":
            if dets.segmentation is None:
                raise ValueError("segm needs the detections' masks (DetectionArrays.segmentation)")
            for r, rle in zip(results, dets.segmentation):
                r["segmentation"] = rle
                r["area"] = float(mask_utils.area(rle))
        dt = coco_gt({"images": self.gt.dataset["images"], "categories": self.categories, "annotations": results})
        ev = FederatedCOCOeval(self.gt, dt, self.neg, self.not_exhaustive, iou_type)
        ev.params.imgIds = self.image_ids
        with contextlib.redirect_stdout(io.StringIO()):
            ev.evaluate()
            ev.accumulate()
        return self.summarize(ev), ev

    def _federated(self, dets: DetectionArrays) -> DetectionArrays:
        """Only detections the evaluation can use (annotated or negative category of the image): the
        rest would be dropped by the evaluation anyway; dropping them first saves memory and time."""
        pairs = {(a["image_id"], a["category_id"]) for a in self.gt.dataset["annotations"]}
        pairs |= {(i, c) for i, cats in self.neg.items() for c in cats}
        keys = np.array(sorted(i * 2**21 + c for i, c in pairs), dtype=np.int64)
        return dets.take(np.flatnonzero(np.isin(dets.image_id * 2**21 + dets.category_id, keys)))

    def summarize(self, ev) -> dict:
        p = ev.params
        precision, recall = ev.eval["precision"][..., 0], ev.eval["recall"][..., 0]  # [T, R, K, A], [T, K, A]
        t50, t75 = (int(np.argmin(np.abs(p.iouThrs - t))) for t in (0.5, 0.75))
        k_of = {c: k for k, c in enumerate(p.catIds)}
        groups = {f: [k_of[c["id"]] for c in self.categories if c.get("frequency") == f] for f in FREQUENCIES}
        out = {"AP": _mean(precision[..., 0]), "AP50": _mean(precision[t50, ..., 0]),
               "AP75": _mean(precision[t75, ..., 0]), "APs": _mean(precision[..., 1]),
               "APm": _mean(precision[..., 2]), "APl": _mean(precision[..., 3])}
        out.update({f"AP{f}": _mean(precision[:, :, groups[f], 0]) for f in FREQUENCIES})
        out.update({"AR": _mean(recall[..., 0]), "ARs": _mean(recall[..., 1]), "ARm": _mean(recall[..., 2]),
                    "ARl": _mean(recall[..., 3])})
        return out

    def per_class(self, ev) -> list[dict]:
        """Per category (id order): AP, AP50, AP75 (NaN without ground truth) and its GT count."""
        precision = ev.eval["precision"][..., 0, 0]  # [T, R, K], area all
        t50, t75 = (int(np.argmin(np.abs(ev.params.iouThrs - t))) for t in (0.5, 0.75))
        counts = defaultdict(int)
        ids = set(self.image_ids)
        for a in self.gt.dataset["annotations"]:
            if a["image_id"] in ids and a["area"] > 0 and not a.get("ignore"):
                counts[a["category_id"]] += 1
        rows = []
        for k, c in enumerate(self.categories):
            rows.append({"category_id": c["id"], "name": c["name"], "frequency": c.get("frequency"),
                         "AP": _mean(precision[:, :, k], nan=True), "AP50": _mean(precision[t50, :, k], nan=True),
                         "AP75": _mean(precision[t75, :, k], nan=True), "num_gt": counts[c["id"]]})
        return rows


def _mean(values: np.ndarray, nan: bool = False) -> float:
    """The mean of the defined entries (> -1), as LVISEval._summarize; -1 (or NaN) when none is."""
    v = values[values > -1]
    return float(np.mean(v)) if v.size else (float("nan") if nan else -1.0)
