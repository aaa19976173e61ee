"""Which model serves a project: the base model, or the fine-tuned one *Start Training* adopted for it.

Each model in use has its own predictor (one per device) and its own job manager; a project whose
`STATE_DIR/projects/<id>/model.json` names a fine-tuned model is served by it (its `model_version`
names it), every other project by the base model. A fine-tuned model is loaded the first time it is
needed (right after training adopts it), then kept. Each model predicts with its own learned thresholds
(``ProjectStore.thresholds_path``), never another's: a project whose fine-tuned model cannot be loaded
falls back to the base model *and* the base model's thresholds.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace

from backend.project_key import project_key
from backend.training.job import heldout_comparison
from backend.training.store import ProjectStore, StateError

log = logging.getLogger(__name__)


@dataclass
class Engine:
    model: str  # hub id or directory
    predictor: object  # PredictorPool
    jobs: object  # JobManager
    thresholds: dict  # label -> learned threshold, for the project asked about


class ProjectEngines:
    def __init__(self, settings, base_predictor, make_jobs, load_predictor):
        self.settings = settings
        self.make_jobs, self.load_predictor = make_jobs, load_predictor
        self.base = Engine(settings.model, base_predictor, make_jobs(base_predictor), {})
        self.store = ProjectStore(settings.state_dir)
        self._tuned: dict[str, Engine] = {}
        self._failed: dict[str, str] = {}  # model dir -> why it could not be loaded
        self._lock = threading.Lock()

    def start(self) -> None:
        self.base.jobs.start()

    def stop(self) -> None:
        for engine in self.all():
            engine.jobs.stop()

    def all(self) -> list[Engine]:
        with self._lock:
            return [self.base, *self._tuned.values()]

    def warnings(self) -> list[str]:
        with self._lock:
            return [f"fine-tuned model {d} could not be loaded ({why}); its project is served by the base model"
                    for d, why in self._failed.items()]

    def thresholds_for(self, project, model: str) -> dict[str, float]:
        """The per-label thresholds Start Training learned on ``model`` for the project (the learned ones)."""
        if project is None:
            return {}
        try:
            learned = self.store.load_thresholds(project_key(project), model)
        except StateError as exc:
            log.warning("project %s: %s", project_key(project), exc)
            return {}
        return learned.applied() if learned is not None else {}

    def learned_lines(self, project) -> list[str]:
        """For the status page: the adopted model with its held-out evidence, the served model's thresholds
        with their evidence, and each label whose pre-labels are off, in words."""
        lines = []
        try:
            served = self.store.served(project_key(project), self.settings.model)
        except Exception as exc:  # an unreadable state file: say so there
            return [f"state unreadable: {exc}"]
        if served.tuned is not None:
            lines.append(f"model {served.tuned.name}: {heldout_comparison(served.tuned)}")
        if served.thresholds is not None:
            lines.extend(served.thresholds.warnings())
            lines.extend(served.thresholds.describe().splitlines())
        return lines

    def for_project(self, project) -> Engine:
        """Blocking (may load a model): call it from a worker thread."""
        engine = self._model_for(project)
        return replace(engine, thresholds=self.thresholds_for(project, engine.model))

    def _model_for(self, project) -> Engine:
        if project is None:
            return self.base
        try:
            model = self.store.load_model(project_key(project))
        except StateError as exc:
            log.warning("project %s: %s", project_key(project), exc)
            return self.base
        if model is None:
            return self.base
        with self._lock:
            engine = self._tuned.get(model.model_dir)
            if engine is not None or model.model_dir in self._failed:
                return engine or self.base
            try:
                predictor = self.load_predictor(replace(self.settings, model=model.model_dir))
            except Exception as exc:  # ModelLoadError, ValueError, OSError: say so, serve the base model
                self._failed[model.model_dir] = str(exc)
                log.error("project %s: fine-tuned model %s could not be loaded (%s); serving the base model",
                          project_key(project), model.model_dir, exc)
                return self.base
            engine = Engine(model.model_dir, predictor, self.make_jobs(predictor), {})
            engine.jobs.start()
            self._tuned[model.model_dir] = engine
            log.info("project %s: served by the fine-tuned model %s", project_key(project), model.model_dir)
            return engine
