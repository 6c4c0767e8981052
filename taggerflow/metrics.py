"""Classifier metrics in numpy (no TensorFlow): ROC AUC, accuracy, and the warnings of a split
that lacks a class (its AUCs are undefined: None, i.e. JSON null, never a silent NaN)."""

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


def pairwise_aucs(probs: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, float | None]:
    """AUC of every class against every other class, 'sig_vs_bkg' -> value; None where either
    class has no candidate (see :func:`absent_class_warnings`)."""
    out: dict[str, float | None] = {}
    for i, si in enumerate(classes):
        for j, bj in enumerate(classes):
            if i == j:
                continue
            d = discriminant(probs, i, j)
            auc = roc_auc(d[labels == i], d[labels == j])
            out[f"{si}_vs_{bj}"] = None if np.isnan(auc) else auc
    return out


def class_counts(labels: np.ndarray, classes: list[str]) -> dict[str, int]:
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=len(classes)) if len(labels) else np.zeros(len(classes), np.int64)
    return {c: int(counts[i]) for i, c in enumerate(classes)}


def absent_class_warnings(labels: np.ndarray, classes: list[str], split: str = "test") -> list[str]:
    """One line per class without a candidate in the split, naming the AUCs it leaves undefined."""
    out = []
    for c, n in class_counts(labels, classes).items():
        if n == 0:
            others = ", ".join(f"{c} vs {o}" for o in classes if o != c)
            out.append(f"class '{c}' has no candidates in the {split} split: AUC {others} (and the reverse) "
                       f"undefined (null)")
    return out


def split_metrics(probs: np.ndarray, labels: np.ndarray, classes: list[str], split: str = "test") -> dict:
    """Accuracy, pairwise AUCs, candidates per class and the absent-class warnings of one split."""
    return {"n": int(len(labels)), "accuracy": accuracy(probs, labels), "auc": pairwise_aucs(probs, labels, classes),
            "per_class": class_counts(labels, classes), "warnings": absent_class_warnings(labels, classes, split)}


def headline_pairs(classes: list[str], signal: str | None = None) -> list[str]:
    """The pairs a one-line summary shows: the signal (default: the first class) against every
    other class, named as in the metrics ('sig_vs_bkg')."""
    s = signal or classes[0]
    return [f"{s}_vs_{b}" for b in classes if b != s]


def format_aucs(aucs: dict, pairs: list[str]) -> str:
    """'AUC b vs c 0.9123, b vs light n/a (a class absent)' for the given pairs."""
    def one(p):
        v = aucs.get(p)
        return f"{p.replace('_vs_', ' vs ')} " + ("n/a (a class absent)" if v is None or np.isnan(v) else f"{v:.4f}")
    return "AUC " + ", ".join(one(p) for p in pairs)


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(probs, axis=1) == labels)) if len(labels) else float("nan")
