"""What the COCO and LVIS runs write and print alike: the summary's header and parity lines, the parity
record in metrics.json, and the mask columns of per_class.csv. Each dataset adds its own metrics."""
from __future__ import annotations

NON_PARITY = "NON-PARITY run ({}): not comparable with the published figures"


def header_lines(config: dict, what: str) -> list[str]:
    """The model, the images and the settings of a run; `what` ends the second line (the prompt and the
    selection, which differ per dataset)."""
    benchmark = f" ({config.get('benchmark')})" if config.get("benchmark") else ""
    return [
        f"model {config.get('model')} (revision {config.get('revision')}) on {config.get('num_images')} images "
        f"of {config.get('ann')}{benchmark}",
        f"device {config.get('device')}, dtype {config.get('dtype')}, batch size {config.get('batch_size')}, {what}",
    ]


def non_parity_lines(reasons: list[str]) -> list[str]:
    return [NON_PARITY.format("; ".join(reasons))] if reasons else []


def record_parity(config: dict, reasons: list[str]) -> None:
    """metrics.json's `non_parity` (why the run differs from the published protocol) and `parity`."""
    config["non_parity"] = reasons
    config["parity"] = not reasons


def add_mask_columns(per_class, masks) -> None:
    """per_class.csv of a segm run: the mask table's AP, AP50, AP75 as segm_* columns beside the box ones."""
    for column in ("AP", "AP50", "AP75"):
        per_class[f"segm_{column}"] = masks[column]
