"""Score a Label Studio JSON export: the backend's pre-labels against the annotators' final regions
(rectangles by box IoU; brush masks and polygons by mask IoU).

`python -m evaluation.labelstudio EXPORT.json [--label-studio-url URL --api-key KEY] [--model-version V]
[--iou 0.5] [--threshold T] [--out RUN_DIR]`

Import names from their modules (`evaluation.labelstudio.export`, `.formats`, ...): this package imports
nothing, so `python -m evaluation.labelstudio` sets the memory lever before torch is loaded.
"""
