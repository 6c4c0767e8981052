"""The scaling file content (:func:`scaling_parameters`): per variable and cone the offset and scale
of its scaling type (:mod:`taggerflow.scaling.types`), its clamp bounds, default and raw statistics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from taggerflow.scaling import types as scaling_types
from taggerflow.scaling.names import variable_types

if TYPE_CHECKING:
    from taggerflow.config import Config


def scaling_parameters(cfg: Config, stats: dict) -> dict:
    """The scaling file content: {type: {var: {cone: {mean, std, lim_min, lim_max, num, nan, inf, cut,
    min, max, raw_mean, raw_std, scaling, default}}}}. lim_min/lim_max are in scaled units; null
    means unbounded; min, max, raw_mean and raw_std describe the raw finite values (null when there
    is none; for 'normal' scaling raw_mean/raw_std equal mean/std)."""
    out: dict = {}
    for t, variables in variable_types(cfg).items():
        out[t] = {}
        for var in variables:
            out[t][var.name] = {}
            scaling_type = scaling_types.module(var.scaling)
            for cone, m in stats[t][var.name].items():
                mean, std, lo, hi = scaling_type.parameters(f"{t}.{var.name}.{cone}", var, cone, m)
                out[t][var.name][cone] = {"mean": mean, "std": std, "lim_min": lo, "lim_max": hi,
                                          "num": m.num, "nan": m.nan, "inf": m.inf, "cut": m.cut,
                                          "min": None if m.num == 0 else m.min,
                                          "max": None if m.num == 0 else m.max,
                                          "raw_mean": None if m.num == 0 else m.mean,
                                          "raw_std": None if m.num == 0 else m.std,
                                          "scaling": var.scaling, "default": var.default}
    return out
