"""Loops over models and data: evaluation (``evaluate``) and training."""
