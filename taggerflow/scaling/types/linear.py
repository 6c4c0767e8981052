"""Scaling type ``linear``: the configured limits [a, b] (per cone where given) map to [-1, 1], and
the scaled value is clamped there."""

from __future__ import annotations

SCALING = "linear"


def parameters(key: str, var, cone: str, moments) -> tuple:
    a, b = var.limits_for(cone)
    return (a + b) / 2, (b - a) / 2, -1.0, 1.0
