"""Analysis of evaluation run directories: pure functions from RUN_DIR(s) to pandas tables.

A run directory is what ``python -m evaluation.coco`` or ``python -m evaluation.labelstudio`` writes:
``metrics.json`` (with a ``config`` object whose ``ann`` is the COCO ground-truth JSON),
``detections.json`` (COCO results) and ``per_class.csv``. Everything here is recomputed from those
files with pycocotools; figures live in :mod:`evaluation.analysis_plots` (re-exported here), the
threshold matching in :mod:`evaluation.analysis_sweep`. Notebooks and ``python -m evaluation.report``
only call these functions.
"""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.analysis_labelstudio import WORK_SAVED_DEFINITION, acceptance_table  # noqa: F401
from evaluation.analysis_plots import *  # noqa: F401,F403  (figures, re-exported for notebooks)
from evaluation.analysis_sweep import (  # noqa: F401  (re-exported)
    DEFAULT_THRESHOLDS, best_work_threshold, match_detections, recommend_threshold, threshold_sweep,
    work_saved,
)

METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
REQUIRED_FILES = ("metrics.json", "detections.json")
VAL2017_IMAGES = 5000

# COCO val2017 bbox AP (COCOeval stats[0], in %) published for the released checkpoints.
PUBLISHED = {
    "grounding-dino-tiny": {"paper": 48.4, "official": 48.5, "zero_shot": True,
                            "note": "paper arXiv 2303.05499 Table 2 / official demo/test_ap_on_coco.py"},
    "grounding-dino-base": {"paper": 56.7, "official": 56.9, "zero_shot": False,
                            "note": "COCO was in its training data: not a zero-shot figure"},
}


class NotARunDir(ValueError):
    """The directory is not an evaluation run directory."""


@dataclass
class Run:
    path: Path
    metrics: dict
    config: dict
    detections: pd.DataFrame
    per_class: pd.DataFrame | None
    ann_path: Path
    extra: dict = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def model(self) -> str:
        return str(self.config.get("model", "?"))

    @property
    def kind(self) -> str:
        return "labelstudio" if self.extra or "export" in self.config else "coco"

    @property
    def gt(self):
        if "gt" not in self._cache:
            from pycocotools.coco import COCO
            with contextlib.redirect_stdout(io.StringIO()):
                self._cache["gt"] = COCO(str(self.ann_path))
        return self._cache["gt"]

    @property
    def categories(self) -> dict[int, str]:
        return {c["id"]: c["name"] for c in self.gt.dataset["categories"]}

    @property
    def image_ids(self) -> list[int]:
        """Images the run scored: the config's list if given, else all GT images for a full run,
        else (``--limit``) the images that have detections."""
        ids = self.config.get("image_ids")
        if ids:
            return sorted(int(i) for i in ids)
        all_ids = sorted(self.gt.getImgIds())
        if not self.config.get("limit"):
            return all_ids
        have = set(self.detections["image_id"].astype(int)) if len(self.detections) else set()
        return [i for i in all_ids if i in have]


def load_run(run_dir, ann=None) -> Run:
    """Load a run directory. ``ann`` overrides the ground-truth path recorded in metrics.json."""
    path = Path(run_dir)
    if not path.is_dir():
        raise NotARunDir(f"{path}: not a directory")
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise NotARunDir(f"{path} is not an evaluation run directory (missing {', '.join(missing)}); "
                         "create one with `python -m evaluation.coco --out DIR` or "
                         "`python -m evaluation.labelstudio EXPORT.json --out DIR` (an interrupted run has "
                         "no metrics.json yet: rerun its command to finish it)")
    try:
        metrics = json.loads((path / "metrics.json").read_text())
        dets = json.loads((path / "detections.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NotARunDir(f"{path}: unreadable run file ({exc})") from exc
    if not isinstance(metrics, dict) or not isinstance(dets, list):
        raise NotARunDir(f"{path}: metrics.json must hold an object and detections.json a list")
    config = metrics.get("config") or {}
    ann_path = _find_ann(path, config, ann)
    detections = pd.DataFrame(dets, columns=["image_id", "category_id", "bbox", "score"])
    per_class = pd.read_csv(path / "per_class.csv") if (path / "per_class.csv").is_file() else None
    extra = {p.stem: _read_extra(p) for p in sorted(path.iterdir())
             if p.is_file() and p.stem in LABELSTUDIO_FILES}
    return Run(path=path, metrics=metrics, config=config, detections=detections,
               per_class=per_class, ann_path=ann_path, extra=extra)


def _find_ann(path: Path, config: dict, ann) -> Path:
    candidates = [ann] if ann else []
    recorded = config.get("ann") or config.get("annotations")
    if recorded:
        candidates += [Path(recorded), path / recorded]
    candidates += [path / n for n in ("ground_truth.json", "gt.json", "annotations.json")]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    raise NotARunDir(f"{path}: ground-truth annotations not found (metrics.json config.ann = "
                     f"{recorded!r}); pass ann=... / --ann PATH")


# Extra files written by `python -m evaluation.labelstudio` (read when present).
LABELSTUDIO_FILES = ("prelabels", "per_label")  # prelabels.csv: treatment counts per label


def _read_extra(p: Path):
    if p.suffix == ".csv":
        return pd.read_csv(p)
    if p.suffix == ".json":
        return json.loads(p.read_text())
    return None


# ---------------------------------------------------------------- COCOeval

def coco_eval(run: Run):
    """COCOeval (bbox, default parameters) over the run's images, evaluated and accumulated (cached)."""
    if "eval" not in run._cache:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
        gt = run.gt
        ids = set(run.image_ids)
        dets = run.detections[run.detections["image_id"].isin(ids)]
        with contextlib.redirect_stdout(io.StringIO()):
            if len(dets):
                dt = gt.loadRes(_as_results(dets))
            else:  # loadRes cannot take an empty list
                dt = COCO()
                dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"],
                              "annotations": []}
                dt.createIndex()
            ev = COCOeval(gt, dt, "bbox")
            ev.params.imgIds = sorted(ids)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        run._cache["eval"] = ev
    return run._cache["eval"]


def _as_results(dets: pd.DataFrame) -> list[dict]:
    return [{"image_id": int(i), "category_id": int(c), "bbox": [float(v) for v in b], "score": float(s)}
            for i, c, b, s in zip(dets["image_id"], dets["category_id"], dets["bbox"], dets["score"])]


# ---------------------------------------------------------------- tables

def summary_table(run: Run) -> pd.DataFrame:
    """Run metrics (in %) as stored in metrics.json and as recomputed here from the detections."""
    ev = coco_eval(run)
    rows = [{"metric": m, "value": _pct(run.metrics.get(m)), "recomputed": _pct(ev.stats[i])}
            for i, m in enumerate(METRICS)]
    return pd.DataFrame(rows).set_index("metric")


def _pct(v) -> float:
    """A pycocotools fraction in %; its -1 ("no ground truth in this range") and missing values -> NaN."""
    return np.nan if v is None or float(v) < 0 else 100 * float(v)


def published_key(model: str) -> str | None:
    low = model.lower().replace("_", "-")
    return next((k for k in PUBLISHED if k in low), None)


def published_comparison(run: Run) -> pd.DataFrame:
    """Our AP beside the published COCO val2017 figures for the run's checkpoint (if known)."""
    ap = _pct(run.metrics.get("AP", coco_eval(run).stats[0]))
    key = published_key(run.model)
    n = len(run.image_ids)
    full = n == VAL2017_IMAGES and "val2017" in run.ann_path.name
    rows = []
    if key is None:
        rows.append({"source": f"this run ({n} images)", "AP": ap, "difference": np.nan,
                     "note": f"no published figure for model {run.model!r}"})
        return pd.DataFrame(rows)
    pub = PUBLISHED[key]
    rows.append({"source": f"this run ({n} images)", "AP": ap, "difference": np.nan,
                 "note": "" if full else "subset / not val2017: not comparable to published figures"})
    for src in ("paper", "official"):
        rows.append({"source": f"{key} {src}", "AP": pub[src], "difference": ap - pub[src],
                     "note": pub["note"]})
    return pd.DataFrame(rows)


def per_class_table(run: Run) -> pd.DataFrame:
    """category_id, name, AP, AP50, AP75 (fractions), num_gt; recomputed from COCOeval, worst AP first."""
    ev = coco_eval(run)
    prec = ev.eval["precision"]  # [T, R, K, A, M]
    cats = ev.params.catIds
    names = run.categories
    ngt = num_gt(run)

    def ap(p):
        p = p[p > -1]
        return float(p.mean()) if p.size else np.nan

    rows = [{"category_id": c, "name": names[c], "AP": ap(prec[:, :, k, 0, -1]),
             "AP50": ap(prec[0, :, k, 0, -1]), "AP75": ap(prec[5, :, k, 0, -1]), "num_gt": ngt.get(c, 0)}
            for k, c in enumerate(cats)]
    return pd.DataFrame(rows).sort_values(["AP", "name"], na_position="last").reset_index(drop=True)


def gt_table(run: Run) -> pd.DataFrame:
    """Ground-truth boxes of the run's images: image_id, category_id, bbox, iscrowd, area."""
    ids = set(run.image_ids)
    anns = [a for a in run.gt.dataset.get("annotations", []) if a["image_id"] in ids]
    g = pd.DataFrame(anns, columns=["image_id", "category_id", "bbox", "iscrowd", "area"])
    g["iscrowd"] = g["iscrowd"].fillna(0).astype(int)
    return g


def num_gt(run: Run) -> dict[int, int]:
    """Non-crowd ground-truth boxes per category over the run's images (every GT category listed)."""
    g = gt_table(run)
    counts = g[g["iscrowd"] == 0].groupby("category_id").size()
    return {c: int(counts.get(c, 0)) for c in run.categories}


def size_table(run: Run) -> pd.DataFrame:
    """AP and AR by COCO object size (small < 32², medium < 96², large), with GT counts."""
    ev = coco_eval(run)
    g = gt_table(run)
    g = g[g["iscrowd"] == 0]
    area = g["area"].fillna(g["bbox"].map(lambda b: b[2] * b[3]))
    counts = [(area < 32 ** 2).sum(), ((area >= 32 ** 2) & (area < 96 ** 2)).sum(), (area >= 96 ** 2).sum()]
    return pd.DataFrame({"size": ["small", "medium", "large"],
                         "pixels": ["< 32²", "32²–96²", "≥ 96²"],
                         "AP": [_pct(v) for v in ev.stats[3:6]], "AR100": [_pct(v) for v in ev.stats[9:12]],
                         "num_gt": [int(c) for c in counts]})


def pr_curves(run: Run, iou_thresholds=(0.5, 0.75), classes=None) -> pd.DataFrame:
    """Precision at COCO's 101 recall points (maxDets 100, all sizes), from COCOeval's accumulated
    precision array. ``class`` is "all" (mean over classes with GT) or a category name."""
    ev = coco_eval(run)
    prec = ev.eval["precision"]
    rec = ev.params.recThrs
    names = run.categories
    cats = list(ev.params.catIds)
    wanted = [_cat_id(run, c) for c in (classes or [])]
    frames = []
    for t in iou_thresholds:
        ti = int(np.argmin(np.abs(ev.params.iouThrs - t)))
        p = prec[ti, :, :, 0, -1]  # [R, K]
        valid = (p > -1).any(axis=0)
        overall = p[:, valid].mean(axis=1) if valid.any() else np.full(len(rec), np.nan)
        frames.append(pd.DataFrame({"iou": t, "class": "all", "recall": rec, "precision": overall}))
        for c in wanted:
            pc = p[:, cats.index(c)]
            frames.append(pd.DataFrame({"iou": t, "class": names[c], "recall": rec,
                                        "precision": np.where(pc > -1, pc, np.nan)}))
    return pd.concat(frames, ignore_index=True)


def _cat_id(run: Run, c) -> int:
    if isinstance(c, (int, np.integer)):
        return int(c)
    by_name = {v: k for k, v in run.categories.items()}
    if c not in by_name:
        raise KeyError(f"unknown class {c!r}")
    return by_name[c]


def matched_detections(run: Run, iou_threshold: float = 0.5) -> pd.DataFrame:
    """The run's detections matched to GT as pycocotools does (see evaluation.analysis_sweep)."""
    key = ("matched", iou_threshold)
    if key not in run._cache:
        ids = set(run.image_ids)
        d = run.detections
        d = d[d["image_id"].isin(ids) & d["category_id"].isin(set(run.categories))]
        m = match_detections(gt_table(run), d, iou_threshold)
        m["name"] = m["category_id"].map(run.categories)
        run._cache[key] = m
    return run._cache[key]


def sweep(run: Run, iou_threshold: float = 0.5, thresholds=DEFAULT_THRESHOLDS,
          by_class: bool = False) -> pd.DataFrame:
    """Threshold sweep of the run (overall, or per class with a ``name`` column)."""
    s = threshold_sweep(matched_detections(run, iou_threshold), num_gt(run), thresholds, by_class)
    if by_class:
        s.insert(1, "name", s["category_id"].map(run.categories))
    return s


def recommendation_table(rec: dict) -> pd.DataFrame:
    """The two recommended thresholds of :func:`recommend_threshold` as rows (NaN where none)."""
    cols = ["threshold", "precision", "recall", "f1", "tp", "fp", "detections"]
    rows = []
    for key, label in (("max_f1", "max F1"),
                       ("min_for_precision", f"lowest with precision ≥ {rec['target_precision']:g}")):
        r = rec[key] or {}
        rows.append({"rule": label, **{c: r.get(c, np.nan) for c in cols}})
    return pd.DataFrame(rows)


def per_class_thresholds(run: Run, precision: float = 0.8, iou_threshold: float = 0.5) -> pd.DataFrame:
    """Per class: the max-F1 threshold and the lowest threshold reaching ``precision``."""
    s = sweep(run, iou_threshold, by_class=True)
    rows = []
    for (cat, name), grp in s.groupby(["category_id", "name"], sort=False):
        r = recommend_threshold(grp.reset_index(drop=True), precision)
        best, low = r["max_f1"], r["min_for_precision"]
        rows.append({"category_id": cat, "name": name, "num_gt": int(grp["num_gt"].iloc[0]),
                     "max_f1_threshold": best["threshold"] if best else np.nan,
                     "max_f1": best["f1"] if best else 0.0,
                     "precision_at_max_f1": best["precision"] if best else np.nan,
                     "recall_at_max_f1": best["recall"] if best else np.nan,
                     f"threshold_for_p{precision:g}": low["threshold"] if low else np.nan})
    return pd.DataFrame(rows).sort_values("max_f1").reset_index(drop=True)


# ---------------------------------------------------------------- two runs

def compare_metrics(a: Run, b: Run) -> pd.DataFrame:
    """metrics.json of two runs side by side (in %), with B − A."""
    rows = [{"metric": m, a.name: _pct(a.metrics.get(m)), b.name: _pct(b.metrics.get(m))} for m in METRICS]
    out = pd.DataFrame(rows).set_index("metric")
    if a.name == b.name:
        out.columns = ["A", "B"]
    out["B − A"] = out.iloc[:, 1] - out.iloc[:, 0]
    return out


CONFIG_NOISE = {"timings", "image_ids", "run_state", "resumed_images", "command", "finished_at", "versions",
                "published"}


def compare_config(a: Run, b: Run) -> pd.DataFrame:
    """Settings that differ between two runs (timings, dates and image lists left out)."""
    def short(v):
        v = str(v)
        return v if len(v) <= 80 else v[:77] + "..."

    keys = sorted((set(a.config) | set(b.config)) - CONFIG_NOISE)
    rows = [{"key": k, "A": short(a.config.get(k)), "B": short(b.config.get(k))} for k in keys
            if a.config.get(k) != b.config.get(k)]
    return pd.DataFrame(rows, columns=["key", "A", "B"])


def compare_per_class(a: Run, b: Run) -> pd.DataFrame:
    """Per-class AP of both runs (fractions) and the difference, largest loss first."""
    pa = per_class_table(a)[["category_id", "name", "num_gt", "AP"]]
    pb = per_class_table(b)[["category_id", "AP"]]
    out = pa.merge(pb, on="category_id", how="outer", suffixes=("_A", "_B"))
    out["delta"] = out["AP_B"] - out["AP_A"]
    return out.sort_values("delta").reset_index(drop=True)


def compare_pr(a: Run, b: Run, iou_thresholds=(0.5, 0.75)) -> pd.DataFrame:
    fa, fb = pr_curves(a, iou_thresholds), pr_curves(b, iou_thresholds)
    fa["run"], fb["run"] = ("A: " + a.name), ("B: " + b.name)
    return pd.concat([fa, fb], ignore_index=True)
