"""Reading an evaluation run directory into a :class:`Run`: its metrics, config, detections, per-class
table, ground-truth path and the extra files of a Label Studio run.

Everything that knows the run-directory layout lives here; :mod:`evaluation.analysis` (which re-exports
``Run``, ``load_run`` and ``NotARunDir``) computes its tables from the loaded run.
"""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from pycocotools.coco import COCO

from evaluation.published import COCO_VAL2017

REQUIRED_FILES = ("metrics.json",)


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
        if self.extra or "export" in self.config:
            return "labelstudio"
        return "lvis" if str(self.config.get("benchmark", "")).startswith("lvis") else "coco"

    @property
    def iou_type(self) -> str:
        """"segm" for a run with masks (evaluation.coco --iou-type segm, a Label Studio export with brush or
        polygon regions): its threshold matching is by mask IoU, and mask AP is shown beside box AP."""
        return "segm" if self.config.get("iou_type") == "segm" else "bbox"

    @property
    def benchmark(self) -> str:
        """The published-table benchmark the run is on (COCO_VAL2017 for every COCO-format run)."""
        return str(self.config.get("benchmark") or COCO_VAL2017)

    @property
    def gt(self):
        if "gt" not in self._cache:
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
                         "create one with `python -m evaluation.coco --out DIR`, `python -m evaluation.lvis "
                         "--out DIR` or `python -m evaluation.labelstudio EXPORT.json --out DIR` (an interrupted "
                         "run has no metrics.json yet: rerun its command to finish it)")
    try:
        metrics = json.loads((path / "metrics.json").read_text())
        dets = json.loads((path / "detections.json").read_text()) if (path / "detections.json").is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NotARunDir(f"{path}: unreadable run file ({exc})") from exc
    if not isinstance(metrics, dict) or not isinstance(dets, (list, type(None))):
        raise NotARunDir(f"{path}: metrics.json must hold an object and detections.json a list")
    config = metrics.get("config") or {}
    lvis = str(config.get("benchmark", "")).startswith("lvis")
    if dets is None and not lvis:
        raise NotARunDir(f"{path} is not an evaluation run directory (missing detections.json)")
    ann_path = _find_ann(path, config, ann)
    columns = ["image_id", "category_id", "bbox", "score"]
    if config.get("iou_type") == "segm":
        columns.append("segmentation")
    detections = pd.DataFrame(dets or [], columns=columns)
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
