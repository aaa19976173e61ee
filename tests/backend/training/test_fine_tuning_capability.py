"""Start Training says so when the served model's family cannot be fine-tuned (detection.Capabilities)."""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from backend.training.service import TrainingRefused, make_job_factory
from detection import GROUNDING_DINO

NO_FINE_TUNING = replace(GROUNDING_DINO, name="no-ft", title="Frozen", model_types=("frozen",),
                         capabilities=replace(GROUNDING_DINO.capabilities, fine_tuning=False))


def test_a_family_without_fine_tuning_is_refused_by_name(make_settings):
    settings = make_settings()
    predictor = SimpleNamespace(detector=SimpleNamespace(family=NO_FINE_TUNING))
    asked = []
    engine = SimpleNamespace(predictor=predictor, model=settings.model, thresholds={})
    factory = make_job_factory(settings, lambda project: engine, lambda *args: asked.append(args))
    with pytest.raises(TrainingRefused) as err:
        factory(1, "<View/>", SimpleNamespace(hostname=None, access_token=None))
    assert str(err.value) == (f"the model {settings.model} is a Frozen model, which this backend cannot fine-tune: "
                              "Start Training needs a model of a family that supports it")
    assert asked == []  # refused before anything else is asked
