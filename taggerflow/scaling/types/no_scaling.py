"""Scaling type ``no_scaling``: the raw value is the model input (mean 0, std 1, unbounded)."""

from __future__ import annotations

SCALING = "no_scaling"


def parameters(key: str, var, cone: str, moments) -> tuple:
    return 0.0, 1.0, None, None
