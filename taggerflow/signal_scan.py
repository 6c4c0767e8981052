"""Signal-significance scans and signal efficiency over the signal models' parameters.

Plain numpy, no law or TensorFlow: Evaluation calls these on test-candidate scores.

* :func:`significance_scan`: S/sqrt(B) for a cut ``score >= threshold`` at every threshold of a grid,
  S and B the summed (event) weights of signal and background candidates passing the cut.
* :func:`best_significance`: the threshold with the largest S/sqrt(B) among those with B > 0.
* :func:`efficiency_map`: signal efficiency at fixed score thresholds (the working points), per
  signal dataset, keyed by the dataset's model parameters (e.g. m_H, m_S).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["significance_scan", "best_significance", "efficiency_map", "validate_parameters"]


def _weights(scores: np.ndarray, weights: np.ndarray | None, what: str) -> np.ndarray:
    if weights is None:
        return np.ones(len(scores))
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != scores.shape:
        raise ValueError(f"{what}: {len(weights)} weights for {len(scores)} scores")
    return weights


def significance_scan(sig_scores, bkg_scores, thresholds, sig_weights=None, bkg_weights=None):
    """(S, B, S/sqrt(B)) per threshold for the cut ``score >= threshold``.

    S/sqrt(B) is NaN where B <= 0 (no background left: the ratio is not defined there).
    """
    sig_scores = np.asarray(sig_scores, dtype=np.float64)
    bkg_scores = np.asarray(bkg_scores, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    ws = _weights(sig_scores, sig_weights, "signal")
    wb = _weights(bkg_scores, bkg_weights, "background")

    def passing(scores, w):
        # cumulative weight from the top: sum of w where score >= t, by sorting once
        order = np.argsort(scores, kind="stable")
        s_sorted, w_sorted = scores[order], w[order]
        tail = np.concatenate([np.cumsum(w_sorted[::-1])[::-1], [0.0]])
        return tail[np.searchsorted(s_sorted, thresholds, side="left")]

    s, b = passing(sig_scores, ws), passing(bkg_scores, wb)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(b > 0, s / np.sqrt(np.where(b > 0, b, 1.0)), np.nan)
    return s, b, z


def best_significance(thresholds, significance) -> tuple[float, float]:
    """(threshold, S/sqrt(B)) of the largest finite S/sqrt(B); the lowest such threshold on ties."""
    z = np.asarray(significance, dtype=np.float64)
    finite = np.isfinite(z)
    if not finite.any():
        raise ValueError("S/sqrt(B) scan: no threshold leaves background (every B is 0)")
    i = int(np.argmax(np.where(finite, z, -np.inf)))
    return float(np.asarray(thresholds)[i]), float(z[i])


def validate_parameters(params_by_dataset: Mapping[str, Mapping], where: str) -> list[str]:
    """Check per-dataset signal parameters (numbers, the same keys everywhere); return the keys.

    Raises ValueError naming ``where.<dataset>.parameters`` for the first bad entry.
    """
    keys: list[str] | None = None
    first = None
    for ds, params in params_by_dataset.items():
        key = f"{where}.{ds}.parameters"
        if not isinstance(params, Mapping) or not params:
            raise ValueError(f"{key}: expected a non-empty mapping of parameter names to numbers")
        for name, value in params.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{key}.{name}: expected a finite number, got {value!r}")
        if keys is None:
            keys, first = sorted(params), ds
        elif sorted(params) != keys:
            raise ValueError(f"{key}: keys {sorted(params)} differ from {first}'s {keys}")
    return keys or []


def efficiency_map(sig_scores, datasets, parameters: Mapping[str, Mapping], thresholds: Sequence[float],
                   sig_weights=None) -> list[dict]:
    """Signal efficiency per signal dataset with parameters, at each threshold.

    ``datasets`` names the dataset of every signal candidate. Returns one row per dataset of
    ``parameters`` (sorted by its parameter values), ``{"dataset", "parameters", "n", "efficiency"}``
    with ``efficiency[k]`` = weighted fraction of its candidates with ``score >= thresholds[k]``
    (NaN when the dataset has no candidate or zero total weight).
    """
    sig_scores = np.asarray(sig_scores, dtype=np.float64)
    datasets = np.asarray(datasets)
    w = _weights(sig_scores, sig_weights, "signal")
    cuts = np.asarray(thresholds, dtype=np.float64)
    keys = sorted(next(iter(parameters.values()))) if parameters else []
    rows = []
    for ds in sorted(parameters, key=lambda d: tuple(parameters[d][k] for k in keys) + (d,)):
        sel = datasets == ds
        total = float(w[sel].sum())
        if total > 0:
            eff = [float(w[sel][sig_scores[sel] >= c].sum() / total) for c in cuts]
        else:
            eff = [math.nan] * len(cuts)
        rows.append({"dataset": ds, "parameters": {k: parameters[ds][k] for k in keys},
                     "n": int(sel.sum()), "efficiency": eff})
    return rows
