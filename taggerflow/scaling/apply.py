"""Applying the scaling: the one input recipe (scale, clamp, then default) used by the training files,
and its raw-unit form used by the export checks and deployment."""

from __future__ import annotations

import numpy as np

from taggerflow.scaling.names import GLOBAL_CONE, ScalingError

#: The one input recipe, per variable: clamp to the bounds, THEN replace what is still non-finite by
#: the default. So +inf goes to the upper bound and -inf to the lower one where the variable has
#: that bound (an overflow is an extreme value, and the bound is where training puts every value
#: beyond it); NaN, and an inf on an unbounded side, become the default. Training applies it to
#: scaled values (bounds lim_min/lim_max, default), deployment to raw values (raw_min/raw_max,
#: raw_default): (x - mean) / std maps NaN to NaN and +-inf to +-inf, so both give the same model
#: input up to the rounding of mean + lim * std.
SCALED_INPUT_RECIPE = ("per variable: scaled = (raw - mean) / std, clamped to [lim_min, lim_max] (null = "
                       "unbounded), then a value still non-finite (NaN, or +-inf on an unbounded side) -> default; "
                       "so +inf -> lim_max and -inf -> lim_min where bounded")
RAW_INPUT_RECIPE = ("per variable: clamp the raw value to its raw bounds [min, max] (null = unbounded), then a value "
                    "still non-finite (NaN, or +-inf on an unbounded side) -> its raw default; so +inf -> the raw max "
                    "and -inf -> the raw min where bounded")


def clamp_then_default(y: np.ndarray, lo, hi, default) -> np.ndarray:
    """The input recipe on ``y`` (a float64 array, one variable per last-axis column), in place:
    clamp to [lo, hi] (+-inf = unbounded), then every value still non-finite -> ``default``. Used on
    scaled values by the training files and on raw values by the export checks."""
    np.clip(y, lo, hi, out=y)
    bad = ~np.isfinite(y)
    if bad.any():
        y[bad] = np.broadcast_to(np.asarray(default, dtype=np.float64), y.shape)[bad]
    return y


def scaling_arrays(scaling: dict, type_name: str, variables: list[str], cone: str = GLOBAL_CONE
                   ) -> tuple[np.ndarray, ...]:
    """mean, std, lim_min, lim_max, default arrays in the given variable order (±inf = unbounded)."""
    try:
        entries = [scaling[type_name][v][cone] for v in variables]
    except KeyError as e:
        raise ScalingError(f"scaling file has no entry for {type_name}.{e.args[0]}") from None
    mean = np.array([e["mean"] for e in entries], dtype=np.float64)
    std = np.array([e["std"] for e in entries], dtype=np.float64)
    lo = np.array([-np.inf if e["lim_min"] is None else e["lim_min"] for e in entries], dtype=np.float64)
    hi = np.array([np.inf if e["lim_max"] is None else e["lim_max"] for e in entries], dtype=np.float64)
    default = np.array([e.get("default", 0.0) for e in entries], dtype=np.float64)
    return mean, std, lo, hi, default


def raw_recipe_arrays(scaling: dict, type_name: str, variables: list[str], cone: str = GLOBAL_CONE
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The recipe's bounds and default in raw units: raw_min = mean + lim_min * std, raw_max =
    mean + lim_max * std (±inf = unbounded), raw_default = mean + default * std."""
    mean, std, lo, hi, default = scaling_arrays(scaling, type_name, variables, cone)
    return mean + lo * std, mean + hi * std, mean + default * std


def apply_raw_recipe(x: np.ndarray, raw_min, raw_max, raw_default) -> np.ndarray:
    """The input recipe on raw values (a float64 copy): what C++ does before lwtnn."""
    return clamp_then_default(np.array(x, dtype=np.float64), raw_min, raw_max, raw_default)


def apply_scaling(x: np.ndarray, mean, std, lo, hi, default, inplace: bool = False) -> np.ndarray:
    """(x - mean) / std, then the input recipe (:func:`clamp_then_default`).
    float64 arithmetic, in one work array (``inplace``: ``x`` itself when it is a float64 array);
    the same values, bit for bit, as the expression written out."""
    if inplace and isinstance(x, np.ndarray) and x.dtype == np.float64:
        y = x
    else:
        y = np.array(x, dtype=np.float64)
    y -= mean
    y /= std
    return clamp_then_default(y, lo, hi, default)
