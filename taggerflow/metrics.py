"""Classifier metrics in numpy (no TensorFlow): ROC AUC, accuracy."""

from __future__ import annotations

import numpy as np


def roc_auc(scores_signal: np.ndarray, scores_background: np.ndarray) -> float:
    """Area under the ROC curve = P(score_sig > score_bkg) + 0.5 P(equal) (Mann-Whitney U)."""
    s = np.asarray(scores_signal, dtype=np.float64)
    b = np.asarray(scores_background, dtype=np.float64)
    if len(s) == 0 or len(b) == 0:
        return float("nan")
    allv = np.concatenate([s, b])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(len(allv), dtype=np.float64)
    sorted_v = allv[order]
    # average ranks of ties
    _, first, counts = np.unique(sorted_v, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[: len(s)].sum() - len(s) * (len(s) + 1) / 2.0
    return float(u / (len(s) * len(b)))


def discriminant(probs: np.ndarray, signal: int, background: int) -> np.ndarray:
    """Two-class discriminant p_sig / (p_sig + p_bkg) from multi-class scores."""
    p = np.asarray(probs, dtype=np.float64)
    return p[:, signal] / np.maximum(p[:, signal] + p[:, background], 1e-30)


def pairwise_aucs(probs: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, float]:
    """AUC of every class against every other class, 'sig_vs_bkg' -> value."""
    out = {}
    for i, si in enumerate(classes):
        for j, bj in enumerate(classes):
            if i == j:
                continue
            d = discriminant(probs, i, j)
            out[f"{si}_vs_{bj}"] = roc_auc(d[labels == i], d[labels == j])
    return out


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(probs, axis=1) == labels)) if len(labels) else float("nan")
