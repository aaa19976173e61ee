"""A mask run in the analysis and the report: mask AP beside box AP, threshold matching by mask IoU."""
from __future__ import annotations

import pytest

from evaluation import analysis as A
from evaluation.report import write_report
from tests.evaluation.analysis_data import HAND_DETS, HAND_GT, write_mask_run, write_run


@pytest.fixture
def mask_run(tmp_path):
    return A.load_run(write_mask_run(tmp_path / "segm"))


def test_summary_shows_mask_ap_beside_box_ap(mask_run):
    assert mask_run.iou_type == "segm"
    table = A.summary_table(mask_run)
    assert table.loc["AP", "value"] == pytest.approx(100) and table.loc["AP", "recomputed"] == pytest.approx(100)
    assert table.loc["AP", "mask"] == pytest.approx(70) and table.loc["AP", "mask recomputed"] == pytest.approx(70)
    assert table.loc["AP50", "mask"] == pytest.approx(100)
    per_class = A.per_class_table(mask_run).set_index("name")
    assert per_class.loc["cat", "AP"] == pytest.approx(1.0) and per_class.loc["cat", "segm_AP"] == pytest.approx(0.4)


def test_matching_of_a_mask_run_is_by_mask_iou(mask_run):
    # The cat's mask IoU is 2/3: a match at IoU 0.6, not at 0.7 (its box IoU is 1 at both).
    at = {iou: A.matched_detections(mask_run, iou).set_index("category_id")["tp"].to_dict() for iou in (0.6, 0.7)}
    assert at == {0.6: {1: True, 2: True}, 0.7: {1: False, 2: True}}
    assert A.matched_detections(mask_run, 0.6).set_index("category_id").loc[1, "iou"] == pytest.approx(2 / 3)


def test_box_runs_are_unchanged_and_comparisons_gain_mask_ap(mask_run, tmp_path):
    box_run = A.load_run(write_run(tmp_path / "bbox", HAND_GT, HAND_DETS))
    assert box_run.iou_type == "bbox" and list(A.summary_table(box_run).columns) == ["value", "recomputed"]
    with pytest.raises(ValueError, match="has no masks"):
        A.mask_eval(box_run)
    table = A.model_table([mask_run, box_run]).set_index("run")
    assert table.loc["A", "mask AP"] == pytest.approx(70) and table.loc["B", "mask AP"] != table.loc["B", "mask AP"]


def test_report_of_a_mask_run(mask_run, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    md = write_report(mask_run.path, tmp_path / "report").read_text()
    assert "| metric | value | recomputed | mask | mask recomputed |" in md
    assert "| AP | 100.0 | 100.0 | 70.0 | 70.0 |" in md
    assert "segm_AP" in md and "mask IoU ≥ 0.5" in md
