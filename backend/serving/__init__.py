"""Serving: the predictor (one task -> one prediction), the devices it runs on, the per-project
engines, the background jobs and the mask stage."""
