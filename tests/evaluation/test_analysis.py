"""evaluation.analysis on run directories written here with known answers."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

from evaluation import analysis as A
from evaluation import analysis_labelstudio as LS
from tests.evaluation.analysis_data import (
    HAND_DETS, HAND_EXPECTED, HAND_GT, coco_gt, det, labelstudio_run, write_run,
)

matplotlib.use("Agg")  # this test process draws figures without a display


@pytest.fixture
def hand_run(tmp_path):
    return A.load_run(write_run(tmp_path / "hand", HAND_GT, HAND_DETS))


def test_matching_hand_case(hand_run):
    m = A.matched_detections(hand_run).set_index("score").sort_index(ascending=False)
    assert m["tp"].tolist() == [False, True, False, False, True, True, False, False]
    assert m["ignored"].tolist() == [False, False, False, True, False, False, False, False]
    assert m.loc[0.5, "iou"] == pytest.approx(0.5)
    assert A.num_gt(hand_run) == {1: 3, 2: 1}


def test_threshold_sweep_hand_case(hand_run):
    s = A.sweep(hand_run, thresholds=sorted(HAND_EXPECTED)).set_index("threshold")
    for t, (tp, fp, p, r, f1) in HAND_EXPECTED.items():
        row = s.loc[t]
        assert (row["tp"], row["fp"], row["num_gt"]) == (tp, fp, 4), t
        if np.isnan(p):
            assert np.isnan(row["precision"])
        else:
            assert row["precision"] == pytest.approx(p), t
        assert row["recall"] == pytest.approx(r), t
        assert row["f1"] == pytest.approx(f1), t


def test_threshold_sweep_per_class(hand_run):
    s = A.sweep(hand_run, thresholds=[0.0, 0.5, 0.9], by_class=True)
    cat = s[s["name"] == "cat"].set_index("threshold")
    dog = s[s["name"] == "dog"].set_index("threshold")
    # cat: TP .9, FP .8, TP .6, FP .3 against 3 GT; dog: FP .95, TP .5, FP .2 against 1 GT
    assert (cat.loc[0.0, "tp"], cat.loc[0.0, "fp"], cat.loc[0.0, "recall"]) == (2, 2, pytest.approx(2 / 3))
    assert cat.loc[0.9, "precision"] == 1.0
    assert (dog.loc[0.5, "tp"], dog.loc[0.5, "fp"], dog.loc[0.5, "f1"]) == (1, 1, pytest.approx(2 / 3))
    assert (dog.loc[0.9, "tp"], dog.loc[0.9, "precision"]) == (0, 0.0)


def test_recommendations_hand_case(hand_run):
    s = A.sweep(hand_run)  # 0.00, 0.01, ..., 1.00
    rec = A.recommend_threshold(s, precision=0.6)
    # F1 is highest (2/3) for thresholds in (0.30, 0.50]; ties resolve to the highest threshold
    assert rec["max_f1"]["threshold"] == pytest.approx(0.50)
    assert rec["max_f1"]["f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    # precision first reaches 0.6 at 0.31 (above 0.30 the FP at 0.30 is gone)
    assert rec["min_for_precision"]["threshold"] == pytest.approx(0.31)
    assert A.recommend_threshold(s, precision=0.99)["min_for_precision"] is None
    table = A.per_class_thresholds(hand_run, precision=0.6).set_index("name")
    assert table.loc["dog", "max_f1_threshold"] == pytest.approx(0.5)
    # cat: TP .9, FP .8, TP .6, FP .3 (3 GT): in (0.3, 0.6] P = R = F1 = 2/3, below 0.3 P = 0.5
    assert table.loc["cat", "max_f1"] == pytest.approx(2 / 3)
    assert table.loc["cat", "max_f1_threshold"] == pytest.approx(0.6)
    assert table.loc["cat", "threshold_for_p0.6"] == pytest.approx(0.31)


def test_work_saved_hand_case(hand_run):
    best = A.best_work_threshold(A.sweep(hand_run))
    # tp - fp: 0 above .95, -1 (.95), 0 (.9), -1 (.8), 0 (.6), +1 (.5), 0 (.3), -1 (.2)
    assert best["saved"] == 1 and best["threshold"] == pytest.approx(0.50)  # (0.30, 0.50]: highest
    assert A.best_work_threshold(A.sweep(hand_run), delete_cost=0.0)["saved"] == 3


def _cocoeval_matches(gt: dict, dets: list[dict]):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO()
        g.dataset = gt
        g.createIndex()
        ev = COCOeval(g, g.loadRes(dets), "bbox")
        ev.evaluate()
    out = {}
    for e in ev.evalImgs:
        if e is None or e["aRng"] != [0, 1e10]:
            continue
        for did, m, ig in zip(e["dtIds"], e["dtMatches"][0], e["dtIgnore"][0]):
            out[did] = (bool(m > 0) and not ig, bool(ig))
    return out


def test_matching_equals_pycocotools_on_random_boxes():
    rng = np.random.default_rng(0)
    boxes, dets = [], []
    for im in range(1, 16):
        for _ in range(rng.integers(0, 8)):
            xy, wh = rng.uniform(0, 150, 2), rng.uniform(5, 60, 2)
            boxes.append((im, int(rng.integers(1, 3)), [*xy, *wh], int(rng.random() < 0.15)))
        for b in [b for b in boxes if b[0] == im]:  # jittered copies: near-duplicates and misses
            for _ in range(rng.integers(0, 4)):
                j = np.array(b[2]) + rng.normal(0, 6, 4) * [1, 1, 0.5, 0.5]
                dets.append(det(im, b[1] if rng.random() < 0.8 else 3 - b[1], np.abs(j), rng.random()))
        for _ in range(3):
            dets.append(det(im, int(rng.integers(1, 3)), [*rng.uniform(0, 150, 2), 20, 20], rng.random()))
    gt = coco_gt(boxes, images=range(1, 16))
    expected = _cocoeval_matches(gt, dets)
    got = A.match_detections(pd.DataFrame(gt["annotations"]), pd.DataFrame(dets))
    # loadRes numbers detections 1..n in list order; match_detections keeps scores, so map by score
    id_by_score = {d["score"]: i + 1 for i, d in enumerate(dets)}
    got_by_id = {id_by_score[s]: (bool(t), bool(ig)) for s, t, ig in zip(got["score"], got["tp"], got["ignored"])}
    assert got_by_id == expected
    assert sum(t for t, _ in expected.values()) > 5 and sum(ig for _, ig in expected.values()) > 0


def test_pr_curve_from_cocoeval(tmp_path):
    gt = coco_gt([(1, 1, [0, 0, 10, 10], 0), (1, 1, [50, 50, 10, 10], 0)], images=[1])
    dets = [det(1, 1, [0, 0, 10, 10], 0.9), det(1, 1, [100, 100, 10, 10], 0.8),
            det(1, 1, [50, 50, 10, 10], 0.7)]
    run = A.load_run(write_run(tmp_path / "pr", gt, dets))
    pr = A.pr_curves(run, classes=["cat"])
    allc = pr[(pr["iou"] == 0.5) & (pr["class"] == "all")]
    # recall 0.5 at precision 1, recall 1 at precision 2/3; COCO interpolates on 101 recall points
    expected = np.where(np.linspace(0, 1, 101) <= 0.5 + 1e-9, 1.0, 2 / 3)
    np.testing.assert_allclose(allc["precision"], expected)
    np.testing.assert_allclose(pr[(pr["iou"] == 0.75) & (pr["class"] == "cat")]["precision"], expected)
    assert allc["precision"].mean() == pytest.approx(run.metrics["AP50"])
    assert A.summary_table(run).loc["AP50", "recomputed"] == pytest.approx(100 * run.metrics["AP50"])


def test_tables(hand_run):
    pc = A.per_class_table(hand_run)
    assert pc["name"].tolist() == ["cat", "dog"]  # annotation-file order, as evaluation.coco writes it
    worst = A.worst_first(pc)
    assert worst["AP"].is_monotonic_increasing and set(worst["name"]) == {"cat", "dog"}
    assert pc.set_index("name").loc["cat", "num_gt"] == 3
    sizes = A.size_table(hand_run).set_index("size")
    assert sizes["num_gt"].tolist() == [4, 0, 0]  # all areas < 32² (crowd excluded)
    comp = A.published_comparison(hand_run)
    assert comp["AP"].tolist()[1:] == [48.4, 48.5]
    assert "not comparable" in comp["note"].iloc[0]


def test_compare_runs(tmp_path):
    a = A.load_run(write_run(tmp_path / "a", HAND_GT, HAND_DETS))
    worse = [dict(d, bbox=[v + 3 for v in d["bbox"]]) if d["category_id"] == 1 else d for d in HAND_DETS]
    b = A.load_run(write_run(tmp_path / "b", HAND_GT, worse, dtype="bf16"))
    c = A.load_run(write_run(tmp_path / "c", HAND_GT, HAND_DETS, batch_size=4))
    cm = A.compare_metrics([a, b, c])
    assert cm.loc["AP", "B − A"] == pytest.approx(100 * (b.metrics["AP"] - a.metrics["AP"]))
    assert cm.loc["AP", "B − A"] < 0 and cm.loc["AP", "C − A"] == 0
    cc = A.compare_per_class([a, b, c]).set_index("name")
    assert cc.loc["cat", "B − A"] < 0 and cc.loc["dog", "B − A"] == pytest.approx(0)
    assert cc.loc["cat", "C − A"] == 0
    assert A.compare_per_class([a, b, c])["name"].iloc[0] == "cat"  # largest loss first
    cfg = A.compare_config([a, b, c]).set_index("key")
    assert cfg.loc["dtype"].tolist() == ["fp32", "bf16", "fp32"] and cfg.loc["batch_size"].tolist() == ["1", "1", "4"]
    assert set(A.compare_pr([a, b, c])["run"]) == {"A: a", "B: b", "C: c"}
    models = A.model_table([a, b])
    assert models["run"].tolist() == ["A", "B"] and models["AP"].tolist() == pytest.approx(
        [100 * a.metrics["AP"], 100 * b.metrics["AP"]])
    assert models["published"].tolist() == ["–", "–"]  # 2 images: not a full val2017 run


def test_not_a_run_dir(tmp_path):
    with pytest.raises(A.NotARunDir, match="missing metrics.json"):
        A.load_run(tmp_path)
    with pytest.raises(A.NotARunDir, match="not a directory"):
        A.load_run(tmp_path / "nope")


def test_figures_are_labelled_and_plot_the_tables(hand_run):
    m = A.matched_detections(hand_run)
    s = A.sweep(hand_run)
    pc = A.per_class_table(hand_run)
    sizes = A.size_table(hand_run)
    pr = A.pr_curves(hand_run, classes=["dog"])
    rec = A.recommend_threshold(s, 0.6)
    figs = [A.plot_per_class_ap(pc), A.plot_ap_by_size(sizes), A.plot_pr_curves(pr),
            A.plot_score_histograms(m), A.plot_threshold_sweep(s, rec)]
    for fig in figs:
        for ax in fig.axes:
            assert ax.get_xlabel() and ax.get_ylabel() and (ax.get_title() or fig._suptitle)
    # per-class AP: one bar per class, worst at the top, length = AP in %
    bars = figs[0].axes[0].patches
    worst = A.worst_first(pc)
    assert [b.get_width() for b in bars] == pytest.approx((100 * worst["AP"].fillna(0)).tolist())
    # AP/AR by size: the AP bars are the size table's AP (NaN where no GT of that size)
    ap_bars = figs[1].axes[0].patches[: len(sizes)]
    np.testing.assert_allclose([b.get_height() for b in ap_bars], sizes["AP"].to_numpy(), equal_nan=True)
    # PR curves: the "all" line of the IoU 0.5 panel is the table's precision at the 101 recall points
    line = figs[2].axes[0].get_lines()[0]
    allc = pr[(pr["iou"] == 0.5) & (pr["class"] == "all")]
    np.testing.assert_allclose(line.get_xdata(), allc["recall"])
    np.testing.assert_allclose(line.get_ydata(), allc["precision"])
    # histograms: the TP and FP counts add up to the non-ignored matched detections
    counts = sum(b.get_height() for b in figs[3].axes[0].patches)
    assert counts == (~m["ignored"]).sum()
    # sweep: precision / recall / F1 lines are the sweep's columns; the max-F1 marker sits at 0.50
    lines = {ln.get_label(): ln for ln in figs[4].axes[0].get_lines()}
    for key, label in (("precision", "precision"), ("recall", "recall"), ("f1", "F1")):
        np.testing.assert_allclose(lines[label].get_ydata(), s[key].to_numpy(), equal_nan=True)
    marker = next(ln for name, ln in lines.items() if name.startswith("max F1"))
    assert marker.get_xdata()[0] == pytest.approx(0.5)
    for fig in figs:
        matplotlib.pyplot.close(fig)


def test_plot_style_does_not_leak_into_the_process():
    """Drawing a figure applies the house style inside it only (no import-time or lasting rcParams)."""
    before = dict(matplotlib.rcParams)
    fig = A.plot_ap_by_size(pd.DataFrame({"size": ["small"], "pixels": ["< 32²"], "AP": [10.0], "AR100": [20.0],
                                          "num_gt": [1]}))
    assert fig.axes[0].xaxis._major_tick_kw.get("gridOn") or fig.axes[0].yaxis._major_tick_kw.get("gridOn")
    assert dict(matplotlib.rcParams) == before
    matplotlib.pyplot.close(fig)


SYNTH_CATS = [{"id": i + 1, "name": n} for i, n in enumerate(
    ["person", "car", "dog", "traffic light", "toothbrush", "chair"])]


def synthetic_run(run_dir: Path, seed: int = 0, n_images: int = 300, **config) -> Path:
    """A simulated detector on random boxes: found boxes jittered, scored high when well localised;
    duplicates, confusions and background false positives scored lower. An illustration, not a model."""
    rng = np.random.default_rng(seed)
    recall = {1: 0.9, 2: 0.85, 3: 0.8, 4: 0.55, 5: 0.35, 6: 0.6}
    boxes, dets = [], []
    for im in range(1, n_images + 1):
        for _ in range(rng.integers(1, 7)):
            c = int(rng.integers(1, 7))
            wh = rng.uniform(8, 150, 2) * (0.4 if c in (4, 5) else 1)
            b = [*rng.uniform(0, 640 - wh), *wh]
            boxes.append((im, c, b, 0))
            if rng.random() < recall[c]:
                j = rng.normal(0, 0.08 if c < 4 else 0.15, 4) * [b[2], b[3], b[2], b[3]]
                score = float(np.clip(rng.beta(5, 2.2) - 0.3 * np.abs(j[:2]).sum() / b[2], 0.01, 0.99))
                dets.append(det(im, c, [b[0] + j[0], b[1] + j[1], abs(b[2] + j[2]), abs(b[3] + j[3])], score))
                if rng.random() < 0.3:  # duplicate or confusion with another class
                    other = c if rng.random() < 0.5 else int(rng.integers(1, 7))
                    dets.append(det(im, other, [b[0] + 3, b[1] - 2, b[2] * 1.1, b[3]], score * rng.uniform(0.3, 0.8)))
        for _ in range(rng.integers(2, 10)):  # background
            dets.append(det(im, int(rng.integers(1, 7)), [*rng.uniform(0, 560, 2), *rng.uniform(10, 80, 2)],
                            float(rng.beta(1.3, 6))))
    return write_run(run_dir, coco_gt(boxes, images=range(1, n_images + 1), cats=SYNTH_CATS), dets, **config)


def test_synthetic_run_recommendation(tmp_path):
    run = A.load_run(synthetic_run(tmp_path / "synth"))
    assert A.summary_table(run)["recomputed"].dropna().round(6).equals(
        A.summary_table(run)["value"].dropna().round(6))
    s = A.sweep(run)
    rec = A.recommend_threshold(s, 0.8)
    best, low = rec["max_f1"], rec["min_for_precision"]
    # brute force: F1 at each grid threshold from the matched detections
    m = A.matched_detections(run)
    m = m[~m["ignored"]]
    n = sum(A.num_gt(run).values())
    f1 = [2 * m[(m.score >= t)].tp.sum() / (len(m[m.score >= t]) + n) for t in s["threshold"]]
    assert best["f1"] == pytest.approx(max(f1)) and s["f1"].to_numpy() == pytest.approx(np.array(f1))
    assert 0.2 < best["threshold"] < 0.8 and low["precision"] >= 0.8 and low["threshold"] <= 0.9
    assert (s.loc[s["threshold"] < low["threshold"], "precision"] < 0.8).all()


def test_matching_keeps_top_100_per_image_and_class_and_handles_empty():
    gt = pd.DataFrame([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 0}])
    # 101 far-away detections above the one on the GT box: pycocotools keeps the top 100 only
    dets = pd.DataFrame([det(1, 1, [100, 100, 5, 5], 0.9)] * 100 + [det(1, 1, [0, 0, 10, 10], 0.1)])
    m = A.match_detections(gt, dets)
    assert len(m) == 100 and not m["tp"].any()
    assert A.match_detections(gt, dets, max_dets=101)["tp"].sum() == 1
    empty = A.match_detections(gt, dets.iloc[:0])
    assert len(empty) == 0
    s = A.threshold_sweep(empty, 1, [0.0, 0.5])
    assert s["recall"].tolist() == [0.0, 0.0] and s["precision"].isna().all()
    assert A.recommend_threshold(s)["max_f1"] is None


def test_run_without_detections(tmp_path):
    d = write_run(tmp_path / "r", HAND_GT, HAND_DETS[:1])
    (d / "detections.json").write_text("[]")
    run = A.load_run(d)
    assert A.summary_table(run).loc["AP", "recomputed"] == 0
    assert A.sweep(run)["tp"].sum() == 0


def test_labelstudio_run_acceptance_and_work_saved(tmp_path):
    run = A.load_run(labelstudio_run(tmp_path))
    assert run.kind == "labelstudio"
    acc = LS.acceptance_table(run).set_index("label")
    assert acc.loc["Car", ["kept", "moved/resized", "relabelled", "deleted", "added by annotators", "total"]
                   ].tolist() == [2, 0, 0, 2, 1, 4]
    assert acc.loc["Person", ["kept", "moved/resized", "relabelled", "deleted", "added by annotators", "total"]
                   ].tolist() == [0, 1, 1, 0, 1, 2]
    assert acc["acceptance"].tolist() == [0.5, 0.5]
    # scores: Car .9 TP, Person .8 FP (became a Car), Person .7 TP (moved 1%), Car .6 FP, Car .5 FP, Car .35 TP;
    # matched - deleted: 1, 0, 1, 0, -1, 0 -> best 1 box, at the highest such threshold 0.90
    s = A.sweep(run)
    assert s.loc[s["threshold"] == 0.35, ["tp", "fp", "num_gt"]].values.tolist() == [[3, 3, 6]]
    best = A.best_work_threshold(s)
    assert (best["threshold"], best["saved"]) == (pytest.approx(0.9), 1)


def test_malformed_run_files(tmp_path):
    d = write_run(tmp_path / "r", HAND_GT, HAND_DETS)
    (d / "metrics.json").write_text("[1, 2]")
    with pytest.raises(A.NotARunDir, match="must hold an object"):
        A.load_run(d)
    (d / "metrics.json").write_text("{not json")
    with pytest.raises(A.NotARunDir, match="unreadable"):
        A.load_run(d)
    (d / "metrics.json").write_text(json.dumps({"AP": 0.1, "config": {"ann": str(tmp_path / "gone.json")}}))
    (d / "gt.json").unlink()
    with pytest.raises(A.NotARunDir, match="ground-truth annotations not found"):
        A.load_run(d)
