"""Scaling type ``normal``: (x - mean) / std with the mean and std of the raw finite values, clamped to
the configured limits (in units of std) where given. Refused for fewer than 2 finite values, a
constant variable and moments that overflow float64."""

from __future__ import annotations

import math

from taggerflow.scaling.names import ScalingError

SCALING = "normal"


def parameters(key: str, var, cone: str, m) -> tuple:
    if m.num < 2:
        raise ScalingError(f"{key}: 'normal' scaling needs at least 2 finite values, "
                           f"found {m.num} (nan: {m.nan}, inf: {m.inf})")
    std = m.std
    if not (math.isfinite(std) and math.isfinite(m.mean)):
        raise ScalingError(f"{key}: mean {m.mean} or std {std} overflows float64 (values "
                           f"between {m.min} and {m.max})")
    if not std > 0:
        raise ScalingError(f"{key}: 'normal' scaling of a constant variable (std = 0, "
                           f"value {m.mean}); use no_scaling or categorical")
    lim = var.limits_for(cone)
    lo, hi = lim if lim is not None else (None, None)
    return m.mean, std, lo, hi
