"""Figures for the analysis tables (matplotlib, data in → Figure out; no file or run-dir access).

Every function takes a table from :mod:`evaluation.analysis` and returns a ``matplotlib.figure.Figure``
with a title, labelled axes and units. Re-exported by :mod:`evaluation.analysis`. The house style is
applied while each figure is drawn (``plt.rc_context``), never to the importing process's settings;
the backend is the caller's choice (the report command picks Agg where it starts).
"""
from __future__ import annotations

import functools
import itertools

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["plot_per_class_ap", "plot_ap_by_size", "plot_pr_curves", "plot_score_histograms",
           "plot_threshold_sweep", "plot_compare_per_class", "plot_pr_overlay", "plot_acceptance",
           "plot_work_saved"]

STYLE = {"figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3, "font.size": 10}
COLORS = {"precision": "tab:blue", "recall": "tab:orange", "f1": "tab:green"}


def styled(draw):
    """Draw the figure under STYLE, leaving matplotlib's global settings as they were."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with plt.rc_context(STYLE):
            return draw(*args, **kwargs)

    return wrapper


@styled
def plot_per_class_ap(per_class, metric: str = "AP", title: str | None = None):
    """Horizontal bars of per-class AP (in %), worst class at the top."""
    d = per_class.sort_values(metric, ascending=True, na_position="first").reset_index(drop=True)
    n = len(d)
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.19 * n + 1.2)))
    vals = 100 * d[metric].fillna(0).to_numpy()
    ax.barh(np.arange(n), vals, color=plt.cm.viridis(vals / 100 * 0.85 + 0.1))
    ax.set_yticks(np.arange(n), [f"{nm} ({g})" for nm, g in zip(d["name"], d["num_gt"])],
                  fontsize=7 if n > 30 else 9)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel(f"{metric} (%)")
    ax.set_ylabel("class (number of GT boxes)")
    ax.set_title(title or f"Per-class {metric}, worst first (mean {vals.mean():.1f}%)")
    fig.tight_layout()
    return fig


@styled
def plot_ap_by_size(size_table, title: str = "AP and AR by object size"):
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(size_table))
    ax.bar(x - 0.2, size_table["AP"], 0.4, label="AP (IoU .50:.95)")
    ax.bar(x + 0.2, size_table["AR100"], 0.4, label="AR@100")
    ax.set_xticks(x, [f"{s}\n{p} px\n{g} GT" for s, p, g in
                      zip(size_table["size"], size_table["pixels"], size_table["num_gt"])])
    ax.set_xlabel("object size (GT box area in pixels², number of GT boxes)")
    ax.set_ylabel("AP / AR (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


@styled
def plot_pr_curves(pr, title: str = "Precision–recall (COCOeval, maxDets 100, all sizes)"):
    """One panel per IoU threshold; one line per class ("all" = mean over classes, thick)."""
    ious = sorted(pr["iou"].unique())
    fig, axes = plt.subplots(1, len(ious), figsize=(5 * len(ious), 4.2), squeeze=False)
    for ax, t in zip(axes[0], ious):
        sub = pr[pr["iou"] == t]
        for cls, grp in sub.groupby("class", sort=False):
            ap = np.nanmean(grp["precision"]) * 100
            ax.plot(grp["recall"], grp["precision"], lw=2.5 if cls == "all" else 1.2,
                    color="black" if cls == "all" else None, label=f"{cls} (AP {ap:.1f})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(f"IoU ≥ {t:g}")
        ax.legend(fontsize=8, loc="upper right")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


@styled
def plot_score_histograms(matched, bins: int = 50, title: str | None = None):
    """Score distributions of true and false positives (IoU ≥ the matching threshold)."""
    m = matched[~matched["ignored"].astype(bool)]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    edges = np.linspace(0, 1, bins + 1)
    ax.hist(m.loc[~m["tp"], "score"], bins=edges, alpha=0.6, color="tab:red",
            label=f"false positives ({(~m['tp']).sum()})")
    ax.hist(m.loc[m["tp"], "score"], bins=edges, alpha=0.7, color="tab:green",
            label=f"true positives ({m['tp'].sum()})")
    ax.set_yscale("log")
    ax.set_xlabel("detection score")
    ax.set_ylabel("detections (log scale)")
    ax.set_title(title or "Scores of true vs false positives (IoU ≥ 0.5)")
    ax.legend()
    fig.tight_layout()
    return fig


@styled
def plot_threshold_sweep(sweep, rec=None, title: str | None = None):
    """Precision, recall and F1 of the detections above each score threshold."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for k in ("precision", "recall", "f1"):
        ax.plot(sweep["threshold"], sweep[k], color=COLORS[k], lw=2, label=k.replace("f1", "F1"))
    if rec:
        if rec.get("max_f1"):
            r = rec["max_f1"]
            ax.axvline(r["threshold"], color=COLORS["f1"], ls="--", lw=1.2,
                       label=f"max F1 {r['f1']:.2f} at {r['threshold']:.2f}")
        if rec.get("min_for_precision"):
            r = rec["min_for_precision"]
            ax.axvline(r["threshold"], color=COLORS["precision"], ls=":", lw=1.5,
                       label=f"precision ≥ {rec['target_precision']:g} from {r['threshold']:.2f} "
                             f"(recall {r['recall']:.2f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("score threshold (keep detections with score ≥ threshold)")
    ax.set_ylabel("precision / recall / F1")
    ax.set_title(title or "Pre-labelling threshold sweep (IoU ≥ 0.5, one-to-one matching)")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


@styled
def plot_compare_per_class(cmp, labels: dict[str, str] | None = None, annotate: int = 5):
    """Per-class AP of each run against run A (one marker series per run); below the diagonal: worse.

    ``cmp`` is :func:`evaluation.analysis.compare_per_class`'s table (columns AP_A, AP_B, ...);
    ``labels`` maps run letters to run names for the axis and legend."""
    labels = labels or {}
    others = [c[3:] for c in cmp.columns if c.startswith("AP_") and c != "AP_A"]
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    a = 100 * cmp["AP_A"]
    for label in others:
        b = 100 * cmp[f"AP_{label}"]
        ax.scatter(a, b, s=18, alpha=0.8, label=f"{label}: {labels.get(label, label)}")
        order = (b - a).abs().sort_values(ascending=False).index[:annotate]
        for i in order:
            ax.annotate(cmp.loc[i, "name"], (a[i], b[i]), fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax.plot([0, 100], [0, 100], color="grey", lw=1, ls="--")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_xlabel(f"AP (%), A: {labels.get('A', 'A')}")
    ax.set_ylabel("AP (%) of the other run(s)")
    ax.set_title("Per-class AP against run A (below the diagonal: worse than A)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


@styled
def plot_pr_overlay(pr, title: str = "Precision–recall of each run (all classes)"):
    ious = sorted(pr["iou"].unique())
    fig, axes = plt.subplots(1, len(ious), figsize=(5 * len(ious), 4.2), squeeze=False)
    for ax, t in zip(axes[0], ious):
        sub = pr[(pr["iou"] == t) & (pr["class"] == "all")]
        for (run, grp), ls in zip(sub.groupby("run", sort=False), itertools.cycle(("-", "--", ":", "-."))):
            ax.plot(grp["recall"], grp["precision"], ls=ls, lw=2,
                    label=f"{run} (AP {100 * np.nanmean(grp['precision']):.1f})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(f"IoU ≥ {t:g}")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


@styled
def plot_acceptance(acc, title: str = "What annotators did with the pre-labels, per label"):
    """Stacked horizontal bars: per label, counts of each outcome column of ``acc``."""
    outcomes = [c for c in acc.columns if c not in ("label", "total", "acceptance")]
    d = acc.set_index("label")[outcomes]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.35 * len(d) + 1.5)))
    left = np.zeros(len(d))
    for c in outcomes:
        ax.barh(d.index, d[c], left=left, label=c)
        left += d[c].to_numpy()
    ax.invert_yaxis()
    ax.set_xlabel("boxes (pre-labels by what happened to them, then boxes annotators drew)")
    ax.set_ylabel("label")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


@styled
def plot_work_saved(ws, best=None, title: str | None = None, assessed_from: float | None = None):
    """Boxes saved (kept pre-labels − cost × deleted ones) against the pre-labelling threshold;
    thresholds below ``assessed_from`` (the lowest stored pre-label score) are shaded: not assessed."""
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(ws["threshold"], ws["saved"], lw=2, color="tab:purple", label="boxes saved",
            drawstyle="steps-post")
    ax.axhline(0, color="grey", lw=1)
    if assessed_from:
        ax.axvspan(0, assessed_from, color="grey", alpha=0.15,
                   label=f"not assessed: no pre-labels stored below {assessed_from:.2f}")
    if best:
        ax.axvline(best["threshold"], ls="--", color="tab:purple",
                   label=f"best {best['threshold']:.2f}: {best['saved']:.0f} boxes saved")
    ax.set_xlim(0, 1)
    ax.set_xlabel("score threshold")
    ax.set_ylabel("boxes saved (matched − cost × unmatched)")
    ax.set_title(title or "Annotation work saved by pre-labels above each threshold")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
