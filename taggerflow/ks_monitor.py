"""Data/MC monitoring without TensorFlow: the (weighted) two-sample Kolmogorov-Smirnov test and the
class-balancing weights of the adversarial training (taggerflow.adversarial).

The weighted KS statistic is the largest distance between the two weighted empirical CDFs; its
p-value is Smirnov's asymptotic one (as scipy.stats.ks_2samp(method="asymp")) with the effective
sample sizes (sum w)^2 / sum w^2 in place of the counts, which are the counts for unit weights.
"""

from __future__ import annotations

import numpy as np


def _weights(values: np.ndarray, weights, what: str) -> np.ndarray:
    if weights is None:
        return np.ones(len(values), dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != values.shape:
        raise ValueError(f"{what}: {len(w)} weights for {len(values)} values")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"{what}: weights must be finite and >= 0")
    return w


def weighted_ecdf(values: np.ndarray, weights: np.ndarray, at: np.ndarray) -> np.ndarray:
    """sum(weights[values <= x]) / sum(weights) for every x of ``at``."""
    order = np.argsort(values, kind="stable")
    cum = np.concatenate([[0.0], np.cumsum(weights[order])])
    return cum[np.searchsorted(values[order], at, side="right")] / cum[-1]


def effective_size(weights: np.ndarray) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2 (the count for unit weights)."""
    w = np.asarray(weights, dtype=np.float64)
    return float(w.sum() ** 2 / np.sum(w * w))


def ks_2samp_weighted(a, b, weights_a=None, weights_b=None) -> tuple[float, float]:
    """Two-sided two-sample KS test of ``a`` and ``b`` with optional non-negative weights:
    (statistic, asymptotic p-value). Unit weights give scipy.stats.ks_2samp(a, b, method="asymp")."""
    from scipy.stats import kstwo

    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    wa, wb = _weights(a, weights_a, "sample a"), _weights(b, weights_b, "sample b")
    if wa.sum() <= 0 or wb.sum() <= 0:
        raise ValueError(f"KS test needs two non-empty samples of positive total weight "
                         f"(sizes {len(a)}, {len(b)})")
    grid = np.unique(np.concatenate([a, b]))
    d = float(np.max(np.abs(weighted_ecdf(a, wa, grid) - weighted_ecdf(b, wb, grid))))
    na, nb = effective_size(wa), effective_size(wb)
    # the one-sample exact distribution at the rounded effective size, as scipy's asymp mode
    en = max(1.0, float(np.round(na * nb / (na + nb))))
    return d, float(np.clip(kstwo.sf(d, en), 0.0, 1.0))


def class_balance_weights(labels, n_classes: int, event_weights=None) -> np.ndarray:
    """Per-candidate weights (the event weights times one factor per class) giving every class the
    same total weight, sum(event weights) / n_classes, so the total is unchanged (CalRatio's "MC
    weights"). A class with no candidate, or with zero total weight, is an error."""
    labels = np.asarray(labels).ravel()
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"class labels must lie in 0..{n_classes - 1}, got {labels.min()}..{labels.max()}")
    w = _weights(labels, event_weights, "event weights")
    totals = np.bincount(labels, weights=w, minlength=n_classes)
    if np.any(totals <= 0):
        raise ValueError(f"class balancing needs every class with a positive total weight, got totals "
                         f"{totals.tolist()}")
    return w * (w.sum() / n_classes / totals)[labels]
