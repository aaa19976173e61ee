"""Score a Label Studio JSON export: the backend's pre-labels against the annotators' final boxes.

`python -m evaluation.labelstudio EXPORT.json [--iou 0.5] [--threshold T] [--out RUN_DIR]`
"""
from .export import Box, Task, load_export, match_boxes, prelabel_treatment

__all__ = ["Box", "Task", "load_export", "match_boxes", "prelabel_treatment"]
