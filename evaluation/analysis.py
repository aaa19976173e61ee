"""Analysis of evaluation run directories: pure functions from RUN_DIR(s) to pandas tables.

A run directory is what ``python -m evaluation.coco`` or ``python -m evaluation.labelstudio`` writes:
``metrics.json`` (with a ``config`` object whose ``ann`` is the COCO ground-truth JSON),
``detections.json`` (COCO results) and ``per_class.csv``. Everything here is recomputed from those
files with pycocotools (evaluation.coco.scoring); a mask run (``iou_type`` "segm": masks in
``detections.json`` ``segmentation``) is matched by mask IoU and shows mask AP beside box AP. Reading a
run directory lives in :mod:`evaluation.analysis_run` and figures in :mod:`evaluation.analysis_plots` (both
re-exported here), the threshold matching in :mod:`evaluation.analysis_sweep`, the Label Studio tables
in :mod:`evaluation.analysis_labelstudio`. An LVIS run (``python -m evaluation.lvis``) is read from its
metrics.json and per_class.csv only: its federated scoring is evaluation.lvis's. Notebooks and
``python -m evaluation.report`` only call these functions.
"""
from __future__ import annotations

import json
import string

import numpy as np
import pandas as pd

from evaluation.analysis_plots import *  # noqa: F401,F403  (figures, re-exported for notebooks)
from evaluation.analysis_run import NotARunDir, Run, load_run  # noqa: F401  (re-exported)
from evaluation.analysis_sweep import (  # noqa: F401  (re-exported)
    DEFAULT_THRESHOLDS, best_work_threshold, match_detections, recommend_threshold, threshold_sweep,
    work_saved,
)
from evaluation.coco import scoring
from evaluation.coco.scoring import METRICS  # noqa: F401  (re-exported: the one list of COCO metrics)
from evaluation.published import published_for

LVIS_METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"]


# ---------------------------------------------------------------- COCOeval

def coco_eval(run: Run):
    """COCOeval (bbox, default parameters) over the run's images, evaluated and accumulated (cached)."""
    if run.kind == "lvis":
        raise ValueError(f"{run.name} is an LVIS run: it is scored by evaluation.lvis (federated, Fixed AP), "
                         "not by COCOeval; its tables come from metrics.json and per_class.csv")
    if "eval" not in run._cache:
        ids = set(run.image_ids)
        dets = run.detections[run.detections["image_id"].isin(ids)]
        _, run._cache["eval"], _ = scoring.score(run.gt, _as_results(dets), ids)
    return run._cache["eval"]


def mask_eval(run: Run):
    """COCOeval segm over the run's images (cached): a mask run only."""
    if run.iou_type != "segm":
        raise ValueError(f"{run.name} has no masks: mask AP needs a run of `evaluation.coco --iou-type segm` "
                         "or a Label Studio export with brush or polygon regions")
    if "mask_eval" not in run._cache:
        ids = set(run.image_ids)
        dets = run.detections[run.detections["image_id"].isin(ids)]
        _, run._cache["mask_eval"], _ = scoring.score(run.gt, _as_results(dets), ids, "segm")
    return run._cache["mask_eval"]


def _as_results(dets: pd.DataFrame) -> list[dict]:
    results = [{"image_id": int(i), "category_id": int(c), "bbox": [float(v) for v in b], "score": float(s)}
               for i, c, b, s in zip(dets["image_id"], dets["category_id"], dets["bbox"], dets["score"])]
    if "segmentation" in dets.columns:
        for result, rle in zip(results, dets["segmentation"]):
            result["segmentation"] = rle
    return results


# ---------------------------------------------------------------- tables

def summary_table(run: Run) -> pd.DataFrame:
    """Run metrics (in %) as stored in metrics.json and as recomputed here from the detections (an LVIS
    run: as stored only). A mask run adds its mask metrics beside the box ones (``mask``, ``mask
    recomputed``)."""
    if run.kind == "lvis":
        return pd.DataFrame([{"metric": m, "value": _pct(run.metrics.get(m)), "recomputed": np.nan}
                             for m in LVIS_METRICS]).set_index("metric")
    ev = coco_eval(run)
    rows = [{"metric": m, "value": _pct(run.metrics.get(m)), "recomputed": _pct(ev.stats[i])}
            for i, m in enumerate(METRICS)]
    if run.iou_type == "segm":
        stored, masks = run.metrics.get("segm") or {}, mask_eval(run)
        for i, row in enumerate(rows):
            row.update({"mask": _pct(stored.get(row["metric"])), "mask recomputed": _pct(masks.stats[i])})
    return pd.DataFrame(rows).set_index("metric")


def _pct(v) -> float:
    """A pycocotools fraction in %; its -1 ("no ground truth in this range") and missing values -> NaN."""
    return np.nan if v is None or float(v) < 0 else 100 * float(v)


def is_full_run(run: Run) -> bool:
    """A run over a whole benchmark split: the only runs published figures can be compared with."""
    if run.kind == "lvis":
        return not run.config.get("limit")
    return scoring.is_full_val2017(len(run.image_ids), run.ann_path.name)


def published_comparison(run: Run) -> pd.DataFrame:
    """Our AP beside the published figures for the run's checkpoint and benchmark (if any)."""
    ap = _pct(run.metrics.get("AP"))
    n = len(run.image_ids)
    rows = published_for(run.model, run.benchmark)
    note = "" if is_full_run(run) else "subset / other dataset: not comparable to published figures"
    if not rows:
        note = f"no published figure for model {run.model!r} on {run.benchmark}"
    out = [{"source": f"this run ({n} images)", "AP": ap, "difference": np.nan, "zero_shot": None, "note": note}]
    out += [{"source": f"{p.source} ({p.where})", "AP": p.ap, "difference": ap - p.ap, "zero_shot": p.zero_shot,
             "note": p.note} for p in rows]
    return pd.DataFrame(out)


def per_class_table(run: Run) -> pd.DataFrame:
    """evaluation.coco.scoring's per-class table (annotation-file order, AP as fractions), recomputed from
    the run's detections; an LVIS run's per_class.csv. Sort it with :func:`worst_first` for display."""
    if run.kind == "lvis":
        return run.per_class.copy()
    categories = [{"id": c, "name": n} for c, n in run.categories.items()]
    table = scoring.per_class_table(coco_eval(run), categories)
    if run.iou_type == "segm":  # mask AP beside box AP, as the run's per_class.csv
        masks = scoring.per_class_table(mask_eval(run), categories)
        for column in ("AP", "AP50", "AP75"):
            table[f"segm_{column}"] = masks[column]
    return table


def worst_first(per_class: pd.DataFrame) -> pd.DataFrame:
    """Worst AP first (classes without ground truth last), ties by name."""
    return per_class.sort_values(["AP", "name"], na_position="last").reset_index(drop=True)


def gt_table(run: Run) -> pd.DataFrame:
    """Ground truth of the run's images: image_id, category_id, bbox, iscrowd, area; a mask run also
    ``segmentation`` (as COCO RLE)."""
    ids = set(run.image_ids)
    anns = [a for a in run.gt.dataset.get("annotations", []) if a["image_id"] in ids]
    columns = ["image_id", "category_id", "bbox", "iscrowd", "area"]
    if run.iou_type == "segm":
        anns = [{**a, "segmentation": run.gt.annToRLE(a)} for a in anns]
        columns.append("segmentation")
    g = pd.DataFrame(anns, columns=columns)
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
    """The run's detections matched to GT as pycocotools does (see evaluation.analysis_sweep); a mask
    run's by mask IoU."""
    key = ("matched", iou_threshold)
    if key not in run._cache:
        ids = set(run.image_ids)
        d = run.detections
        d = d[d["image_id"].isin(ids) & d["category_id"].isin(set(run.categories))]
        m = match_detections(gt_table(run), d, iou_threshold, iou_type=run.iou_type)
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


# ---------------------------------------------------------------- several runs

def run_labels(runs: list[Run]) -> list[str]:
    """A, B, C, ... : the first run is the reference the others are compared with."""
    if len(runs) > len(string.ascii_uppercase):
        raise ValueError(f"at most {len(string.ascii_uppercase)} runs can be compared, got {len(runs)}")
    return list(string.ascii_uppercase[: len(runs)])


def model_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run: model, data, images, AP (%) and the published figures of its checkpoint."""
    rows = []
    for label, run in zip(run_labels(runs), runs):
        ap = _pct(run.metrics.get("AP"))
        pub = published_for(run.model, run.benchmark) if is_full_run(run) else []
        row = {"run": label, "name": run.name, "model": run.model, "benchmark": run.benchmark,
               "images": len(run.image_ids), "parity": run.config.get("parity"), "AP": ap,
               "AP50": _pct(run.metrics.get("AP50"))}
        if any(r.iou_type == "segm" for r in runs):
            row["mask AP"] = _pct((run.metrics.get("segm") or {}).get("AP"))
        if run.kind == "lvis":
            row.update({k: _pct(run.metrics.get(k)) for k in ("APr", "APc", "APf")})
        row["published"] = " / ".join(f"{p.ap:.1f} {p.source}" + ("" if p.zero_shot else " (not zero-shot)")
                                      for p in pub) or "–"
        row["ours − published"] = " / ".join(f"{ap - p.ap:+.1f}" for p in pub) or "–"
        rows.append(row)
    return pd.DataFrame(rows)


def compare_metrics(runs: list[Run]) -> pd.DataFrame:
    """metrics.json of the runs side by side (in %), with each run's difference to run A."""
    labels = run_labels(runs)
    names = LVIS_METRICS if all(r.kind == "lvis" for r in runs) else METRICS
    out = pd.DataFrame({label: [_pct(r.metrics.get(m)) for m in names] for label, r in zip(labels, runs)},
                       index=pd.Index(names, name="metric"))
    for label in labels[1:]:
        out[f"{label} − A"] = out[label] - out["A"]
    return out


CONFIG_NOISE = {"timings", "image_ids", "run_state", "resumed_images", "command", "finished_at", "versions",
                "published", "captions", "phrases", "chunk_tokens"}


def compare_config(runs: list[Run]) -> pd.DataFrame:
    """Settings that differ between the runs (timings, dates and image lists left out)."""
    def short(v):
        v = str(v)
        return v if len(v) <= 80 else v[:77] + "..."

    labels = run_labels(runs)
    keys = sorted(set().union(*(r.config for r in runs)) - CONFIG_NOISE)
    rows = [{"key": k, **{label: short(r.config.get(k)) for label, r in zip(labels, runs)}} for k in keys
            if len({json.dumps(r.config.get(k), sort_keys=True, default=str) for r in runs}) > 1]
    return pd.DataFrame(rows, columns=["key", *labels])


def compare_per_class(runs: list[Run]) -> pd.DataFrame:
    """Per-class AP (fractions) of every run, and each run's difference to A; largest loss first."""
    labels = run_labels(runs)
    out = per_class_table(runs[0])[["category_id", "name", "num_gt", "AP"]].rename(columns={"AP": "AP_A"})
    for label, run in zip(labels[1:], runs[1:]):
        other = per_class_table(run)[["category_id", "AP"]].rename(columns={"AP": f"AP_{label}"})
        out = out.merge(other, on="category_id", how="outer")
        out[f"{label} − A"] = out[f"AP_{label}"] - out["AP_A"]
    deltas = [f"{label} − A" for label in labels[1:]]
    key = out[deltas].min(axis=1) if deltas else out["AP_A"]
    return out.assign(_key=key).sort_values("_key").drop(columns="_key").reset_index(drop=True)


def compare_pr(runs: list[Run], iou_thresholds=(0.5, 0.75)) -> pd.DataFrame:
    frames = []
    for label, run in zip(run_labels(runs), runs):
        f = pr_curves(run, iou_thresholds)
        f["run"] = f"{label}: {run.name}"
        frames.append(f)
    return pd.concat(frames, ignore_index=True)
