"""One task's answer, typed: a prediction (regions and their mean score) or a failure (the reason).

Label Studio's item is its JSON (`as_json`): `{"result", "score", "model_version"[, "message"]}` for a
prediction, `{"model_version", "error"}` (no `result`) for a task that could not be predicted. Inside the
backend the kind is `ok`, not the presence of a key.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PredictionItem:
    model_version: str
    result: list[dict] | None = None  # the regions; None: the task failed (`error` says why)
    score: float | None = None
    error: str | None = None
    message: str | None = None  # notes for the caller and the interactive view; not stored by Label Studio

    @classmethod
    def predicted(cls, version: str, regions: list[dict], notes: list[str] = ()) -> "PredictionItem":
        """The regions best first, scored by their mean (0.0 without any)."""
        regions = sorted(regions, key=lambda r: -r["score"])
        score = sum(r["score"] for r in regions) / len(regions) if regions else 0.0
        return cls(version, regions, score, None, "; ".join(notes) if notes else None)

    @classmethod
    def failed(cls, version: str, reason: str) -> "PredictionItem":
        return cls(version, error=reason)

    @classmethod
    def from_json(cls, item: dict) -> "PredictionItem":
        """Label Studio's item read back (e.g. from `Predictor.predict_tasks`)."""
        if "result" not in item:
            return cls.failed(item.get("model_version"), item.get("error") or "no result")
        return cls(item.get("model_version"), item["result"], item.get("score"), None, item.get("message"))

    @property
    def ok(self) -> bool:
        return self.result is not None

    def as_json(self) -> dict:
        """Label Studio's prediction item."""
        if not self.ok:
            return {"model_version": self.model_version, "error": self.error}
        item = {"result": self.result, "score": self.score, "model_version": self.model_version}
        if self.message is not None:
            item["message"] = self.message
        return item
