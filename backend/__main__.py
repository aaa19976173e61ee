"""`python -m backend [--host 0.0.0.0] [--port 9090] [--log-level INFO]`: run the ML backend."""
from __future__ import annotations

import argparse
import logging
import os
import sys

import uvicorn

from runtime.allocator import cpu_allocator_hint, enable_thp_allocation

# The settings, the detection core and the app are imported inside main(): they import torch, and the THP
# lever (runtime.allocator) must be set before that; --help answers without loading them.


def main(argv: list[str] | None = None) -> int:
    enable_thp_allocation()  # before anything imports torch (the settings do)
    parser = argparse.ArgumentParser(prog="python -m backend", description="Grounding DINO / SAM 3 ML backend for Label Studio")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=9090, help="port to listen on (default 9090)")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING, ERROR (default: LOG_LEVEL or INFO)")
    args = parser.parse_args(argv)

    from .settings import Settings, SettingsError, configure_logging

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    level = (args.log_level or settings.log_level).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        print(f"error: --log-level {args.log_level!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL", file=sys.stderr)
        return 2
    configure_logging(level)

    from detection import ModelLoadError
    from detection.masks import MaskModelLoadError
    from backend.app.server import create_app, load_predictor

    try:
        predictor = load_predictor(settings)
    except (ModelLoadError, MaskModelLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    log = logging.getLogger("backend")
    family = predictor.detector.family
    masks = ""
    if settings.sam_model:  # a family with its own masks loads SAM_MODEL only for smart clicks, on first use
        masks = (f" (SAM_MODEL {settings.sam_model}: loaded on the first smart click)" if family.capabilities.own_masks
                 else f" with mask model {settings.sam_model}")
    log.info("%s model %s loaded%s; listening on %s:%d", family.title, settings.model, masks, args.host, args.port)
    hint = cpu_allocator_hint(predictor.detector.device.type)
    if hint:
        log.info("%s; `make serve` does this (docs/speed.md)", hint)

    # A /predict waits at most until its deadline; on SIGTERM it is cut short after 3 s, and the background
    # jobs keep their unfinished tasks in STATE_DIR for the next start (job_journal.py).
    uvicorn.run(create_app(settings, predictor), host=args.host, port=args.port, log_level=level.lower(),
                timeout_graceful_shutdown=3)
    # A batch still in the model when the jobs' grace period ran out must not hold the exit: nothing
    # of it is stored, and the interpreter's own shutdown would abort on the running torch thread.
    logging.shutdown()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
