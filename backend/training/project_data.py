"""A Label Studio project's annotated tasks as a COCO-format training set on disk.

- Classes: the project's ``<RectangleLabels>`` on its ``<Image>``, read by ``parse_label_config`` (the
  backend's own reading), each written as a category named by the label the backend emits (alias or
  value) with its prompt phrases as ``synonyms``, so training prompts exactly as prediction does.
- Boxes: each task's final annotation, read by the evaluation's export reader (``read_tasks``), in
  pixels of the image as Label Studio shows it (EXIF applied); a rotated box becomes the box around it.
- Images: fetched once into ``images/`` by the caller's ``fetch_image`` (the backend's ``MediaFetcher``:
  uploads, local files, cloud storage, URLs), kept for a rerun.
Only annotated tasks are written; a task whose image cannot be fetched or read is left out and named.
"""
from __future__ import annotations

import io
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

from detection import ImageError, open_image
from labelstudio.label_config import parse_label_config
from labelstudio.label_sets import LabelClass, LabelConfigError
from labelstudio.media_errors import MediaError
from runtime.files import atomic_write
from evaluation.labelstudio.export import Region

from .errors import TrainingCancelled, TrainingError
from .tasks import ProjectSnapshot, read_tasks

FetchImage = Callable[[str, object], bytes]  # (url, task id) -> bytes


@dataclass(frozen=True)
class ProjectClasses:
    """The classes to train, in label config order, and the task data key of their image."""

    data_key: str
    classes: tuple[LabelClass, ...]

    def index_of(self, label: str) -> int | None:
        for k, c in enumerate(self.classes):
            if label in (c.label, c.value):
                return k
        return None


@dataclass
class ExportReport:
    ann: Path
    images: Path
    tasks: int = 0
    boxes: int = 0
    skipped_tasks: dict = field(default_factory=dict)  # task id -> reason
    unknown_labels: dict = field(default_factory=dict)  # label -> boxes left out

    def describe(self) -> str:
        lines = [f"{self.tasks} annotated tasks with {self.boxes} boxes written to {self.ann}"]
        if self.unknown_labels:
            labels = ", ".join(f"{k} ({v})" for k, v in sorted(self.unknown_labels.items()))
            lines.append(f"boxes with labels the label config no longer has were left out: {labels}")
        for task_id, reason in list(self.skipped_tasks.items())[:20]:
            lines.append(f"task {task_id} left out: {reason}")
        if len(self.skipped_tasks) > 20:
            lines.append(f"... and {len(self.skipped_tasks) - 20} more tasks left out")
        return "\n".join(lines)


def project_classes(label_config: str) -> ProjectClasses:
    """The ``<RectangleLabels>`` classes of a config with one ``<Image>`` (TrainingError otherwise)."""
    try:
        mapping = parse_label_config(label_config)
    except LabelConfigError as exc:
        raise TrainingError(f"the project's label config cannot be used: {exc}") from None
    sets = [s for s in mapping.active if s.kind == "rectanglelabels"]
    if not sets:
        raise TrainingError("the project's label config has no <RectangleLabels> with labels to fine-tune on")
    images = sorted({s.to_name for s in sets})
    if len(images) > 1:
        raise TrainingError(f"fine-tuning supports label configs with one <Image>; this one labels {len(images)} "
                            f"({', '.join(images)})")
    classes, seen = [], set()
    for s in sets:
        for c in s.classes:
            if c.label in seen:
                raise TrainingError(f"the label {c.label!r} is defined by two <RectangleLabels> controls: "
                                    "rename one so that boxes can be told apart")
            seen.add(c.label)
            classes.append(c)
    return ProjectClasses(sets[0].data_key, tuple(classes))


def export_project(snapshot: ProjectSnapshot, out_dir: Path, fetch_image: FetchImage,
                   cancel: threading.Event | None = None) -> ExportReport:
    """Write ``out_dir/annotations.json`` and ``out_dir/images/`` from the project's annotated tasks
    (``cancel``, checked before each image, stops it with TrainingCancelled)."""
    classes = project_classes(snapshot.label_config)
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    report = ExportReport(out_dir / "annotations.json", images_dir)
    raw = {str(t.get("id")): t for t in snapshot.annotated_tasks()}
    images, annotations = [], []
    for task in read_tasks(raw.values()):
        if cancel is not None and cancel.is_set():
            raise TrainingCancelled(f"export of project {snapshot.project} was cancelled")
        data = raw.get(str(task.id), {}).get("data") or {}
        url = data.get(classes.data_key) if isinstance(data, dict) else None
        if not url:
            report.skipped_tasks[task.id] = f"no data.{classes.data_key} (the <Image> value)"
            continue
        try:
            name, (width, height) = _store_image(images_dir, task.id, url, fetch_image)
        except (MediaError, ImageError, OSError) as exc:
            report.skipped_tasks[task.id] = str(exc)
            continue
        except Exception as exc:  # anything else fails this task, never the whole export
            report.skipped_tasks[task.id] = f"could not fetch the image ({type(exc).__name__}: {exc})"
            continue
        images.append({"id": task.id, "file_name": name, "width": width, "height": height})
        for box in task.annotation:
            k = classes.index_of(box.label)
            if k is None:
                report.unknown_labels[box.label] = report.unknown_labels.get(box.label, 0) + 1
                continue
            x0, y0, x1, y1 = _pixel_box(box, width, height)
            if x1 - x0 <= 0 or y1 - y0 <= 0:
                continue
            annotations.append({"id": len(annotations) + 1, "image_id": task.id, "category_id": k + 1,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    categories = [{"id": k + 1, "name": c.label, "synonyms": ", ".join(c.phrases)} for k, c in enumerate(classes.classes)]
    atomic_write(report.ann, json.dumps({"images": images, "annotations": annotations, "categories": categories,
                                          "info": {"label_studio_project": snapshot.project}}))
    report.tasks, report.boxes = len(images), len(annotations)
    return report


def _store_image(images_dir: Path, task_id, url: str, fetch_image: FetchImage) -> tuple[str, tuple[int, int]]:
    """The task's image file (fetched unless a rerun already has it) and its size as shown."""
    existing = sorted(images_dir.glob(f"task-{task_id}.*"))
    if existing:
        path = existing[0]
        data = path.read_bytes()
    else:
        data = fetch_image(url, task_id)
        path = images_dir / f"task-{task_id}.{_extension(data)}"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    image = open_image(data)  # EXIF applied: the frame Label Studio shows and its percentages refer to
    return path.name, image.size


def _extension(data: bytes) -> str:
    try:
        with Image.open(io.BytesIO(data)) as im:
            return (im.format or "img").lower()
    except Exception:
        return "img"


def _pixel_box(box: Region, width: int, height: int) -> tuple[float, float, float, float]:
    """Percent box (rotated by ``rotation`` degrees about its top-left corner) -> clipped xyxy pixels."""
    x, y, w, h = box.box(width, height)
    return (min(max(x, 0.0), width), min(max(y, 0.0), height),
            min(max(x + w, 0.0), width), min(max(y + h, 0.0), height))
