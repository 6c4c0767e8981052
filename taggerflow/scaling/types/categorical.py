"""Scaling type ``categorical``: an integer code passed through unchanged (mean 0, std 1, unbounded;
not flagged for a tiny std, see :mod:`taggerflow.scaling.flags`)."""

from __future__ import annotations

SCALING = "categorical"


def parameters(key: str, var, cone: str, moments) -> tuple:
    return 0.0, 1.0, None, None
