"""Weighted ROC, AUC, efficiencies and rejection (event weights; numpy only).

Every quantity is a ratio of sums of weights, and negative weights (NLO generators) enter those sums
as they are, as the analyses that use the tagger count them: an efficiency is sum(w of those
passing) / sum(w), the AUC is the weighted Mann-Whitney statistic
sum_ij w_i w_j ([s_i > b_j] + [s_i = b_j] / 2) / (W_s W_b). With negative weights the cumulative sums
need not grow as the threshold is lowered: the ROC may then be non-monotonic (reported as such), an
efficiency may leave [0, 1] and the AUC may leave [0, 1]; nothing is clipped or dropped. Where a
class's weight sum is not positive, its efficiencies, the rejection and the AUC are undefined
(NaN, null in JSON), named in a warning by the caller, as an absent class is.
"""

from __future__ import annotations

import numpy as np


def _as(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def weighted_roc_auc(sig, bkg, w_sig, w_bkg) -> float:
    """Weighted AUC (ties count half); NaN where a class is empty or its weight sum is not positive."""
    sig, bkg, w_sig, w_bkg = _as(sig), _as(bkg), _as(w_sig), _as(w_bkg)
    ws, wb = float(w_sig.sum()), float(w_bkg.sum())
    if len(sig) == 0 or len(bkg) == 0 or not (ws > 0 and wb > 0):
        return float("nan")
    values, inverse = np.unique(np.concatenate([sig, bkg]), return_inverse=True)
    s_w = np.bincount(inverse[:len(sig)], weights=w_sig, minlength=len(values))
    b_w = np.bincount(inverse[len(sig):], weights=w_bkg, minlength=len(values))
    below = np.cumsum(b_w) - b_w
    return float(np.sum(s_w * (below + 0.5 * b_w)) / (ws * wb))


def weighted_efficiency(x, w, thr: float) -> float:
    """sum(w of x >= thr) / sum(w); NaN for no candidates, a NaN threshold or a non-positive sum."""
    x, w = _as(x), _as(w)
    total = float(w.sum())
    if len(x) == 0 or np.isnan(thr) or not total > 0:
        return float("nan")
    return float(w[x >= thr].sum() / total)


def weighted_threshold(sig, w_sig, efficiency: float) -> float:
    """The highest threshold whose weighted signal efficiency (score >= threshold) reaches
    ``efficiency`` (whole groups of equal scores); the lowest score where none does (negative
    weights); NaN without signal or with a non-positive signal weight sum."""
    sig, w = _as(sig), _as(w_sig)
    total = float(w.sum())
    if len(sig) == 0 or not total > 0:
        return float("nan")
    values, inverse = np.unique(sig, return_inverse=True)        # ascending
    per_value = np.bincount(inverse, weights=w, minlength=len(values))[::-1]
    cum = np.cumsum(per_value) / total                            # efficiency at each value, descending
    hit = np.flatnonzero(cum >= efficiency - 1e-12)
    return float(values[::-1][hit[0]] if len(hit) else values[0])


def non_monotonic(x, w) -> bool:
    """Whether the weighted efficiency of ``score >= t`` falls anywhere as t is lowered (a group of
    equal scores with a negative weight sum)."""
    x, w = _as(x), _as(w)
    if len(x) == 0:
        return False
    _, inverse = np.unique(x, return_inverse=True)
    return bool(np.any(np.bincount(inverse, weights=w) < 0))


def rejection(eff_b: float) -> float:
    """1 / background efficiency: inf where none passes, NaN where undefined or negative."""
    if np.isnan(eff_b) or eff_b < 0:
        return float("nan")
    return 1.0 / eff_b if eff_b > 0 else float("inf")


def weighted_efficiencies(sig, bkg, w_sig, w_bkg, thr: float) -> dict[str, float]:
    eff_s = weighted_efficiency(sig, w_sig, thr)
    eff_b = weighted_efficiency(bkg, w_bkg, thr)
    return {"signal_efficiency": eff_s, "background_efficiency": eff_b, "background_rejection": rejection(eff_b)}


def weighted_working_point(sig, bkg, w_sig, w_bkg, efficiency: float) -> dict[str, float]:
    thr = weighted_threshold(sig, w_sig, efficiency)
    return {"threshold": thr, **weighted_efficiencies(sig, bkg, w_sig, w_bkg, thr)}


def weighted_roc_curve(sig, bkg, w_sig, w_bkg, n_points: int = 200) -> dict[str, np.ndarray]:
    """On the grid of target signal efficiencies of taggerflow.evaluation.roc_curve: the threshold
    reaching each, the weighted signal efficiency there and the background rejection."""
    eff = np.linspace(0.01, 1.0, n_points)
    thr = np.array([weighted_threshold(sig, w_sig, e) for e in eff])
    bkg, w_bkg = _as(bkg), _as(w_bkg)
    rej = np.array([rejection(weighted_efficiency(bkg, w_bkg, t)) for t in thr])
    return {"signal_efficiency": eff, "background_rejection": rej, "threshold": thr}


def weight_warnings(labels, weights, classes: list[str], split: str = "test") -> list[str]:
    """One line per class present in the split whose weight sum is not positive (its AUCs,
    efficiencies and rejections undefined), and per class with negative weights (non-monotonic ROC
    possible)."""
    labels, weights = np.asarray(labels), _as(weights)
    out = []
    for i, c in enumerate(classes):
        w = weights[labels == i]
        if not len(w):
            continue
        if not w.sum() > 0:
            out.append(f"class '{c}' has a non-positive sum of event weights ({w.sum():g}) in the {split} split: "
                       f"its weighted AUCs, efficiencies and rejections are undefined (null)")
        elif (w < 0).any():
            out.append(f"class '{c}' has {(w < 0).sum()} negative event weights in the {split} split (kept as "
                       f"given): its weighted ROC may be non-monotonic")
    return out
