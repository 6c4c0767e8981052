"""Evaluation of a trained tagger on the test split: ROC curves, AUCs, working points, and the
same in bins of pt and |eta|. numpy only; predictions are computed by the caller.

Discriminants are pairwise, as in tau ID (one discriminant against each background):
D(s vs b) = p_s / (p_s + p_b). A working point is a signal efficiency; its threshold is the
(1 - eff) quantile of D on the signal, and the background rejection is 1 / (background efficiency).
"""

from __future__ import annotations

from collections.abc import Sequence

import h5py
import numpy as np

from taggerflow.metrics import discriminant, roc_auc
from taggerflow.utils import atomic_path


def roc_curve(sig: np.ndarray, bkg: np.ndarray, n_points: int = 200) -> dict[str, np.ndarray]:
    """Signal efficiency and background rejection on a grid of signal efficiencies."""
    sig = np.sort(np.asarray(sig, dtype=np.float64))
    bkg = np.sort(np.asarray(bkg, dtype=np.float64))
    eff = np.linspace(0.01, 1.0, n_points)
    thr = np.quantile(sig, 1.0 - eff) if len(sig) else np.full(n_points, np.nan)
    bkg_eff = (len(bkg) - np.searchsorted(bkg, thr, side="left")) / max(len(bkg), 1)
    with np.errstate(divide="ignore"):
        rej = np.where(bkg_eff > 0, 1.0 / np.maximum(bkg_eff, 1e-300), np.inf)
    return {"signal_efficiency": eff, "background_rejection": rej, "threshold": thr}


def working_point(sig: np.ndarray, bkg: np.ndarray, efficiency: float) -> dict[str, float]:
    """Threshold giving ``efficiency`` on the signal, and what it does to the background."""
    thr = float(np.quantile(sig, 1.0 - efficiency)) if len(sig) else float("nan")
    eff_s = float(np.mean(sig >= thr)) if len(sig) else float("nan")
    eff_b = float(np.mean(bkg >= thr)) if len(bkg) else float("nan")
    return {"threshold": thr, "signal_efficiency": eff_s, "background_efficiency": eff_b,
            "background_rejection": (1.0 / eff_b) if eff_b > 0 else float("inf")}


def _bin_of(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    idx = np.searchsorted(np.asarray(edges, dtype=float), values, side="right") - 1
    idx[(values < edges[0]) | (values >= edges[-1])] = -1
    return idx


def evaluate(probs: np.ndarray, labels: np.ndarray, classes: list[str], signals: list[str],
             working_points: Sequence[float], pt: np.ndarray, eta: np.ndarray,
             pt_bins: Sequence[float], eta_bins: Sequence[float]) -> dict:
    """Metrics of every signal class against every other class: AUC, ROC curve, working points
    (thresholds fixed on the whole sample), and efficiency/rejection at those thresholds in bins of
    pt and |eta|."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    abs_eta = np.abs(np.asarray(eta, dtype=np.float64))
    pt = np.asarray(pt, dtype=np.float64)
    out: dict = {"n": int(len(labels)), "per_class": {c: int(np.sum(labels == i)) for i, c in enumerate(classes)},
                 "accuracy": float(np.mean(np.argmax(probs, axis=1) == labels)) if len(labels) else float("nan"),
                 "pairs": {}}
    for s in signals:
        si = classes.index(s)
        for bi, b in enumerate(classes):
            if bi == si:
                continue
            d = discriminant(probs, si, bi)
            sig, bkg = d[labels == si], d[labels == bi]
            pair = {"auc": roc_auc(sig, bkg), "roc": {k: v.tolist() for k, v in roc_curve(sig, bkg).items()},
                    "working_points": {}, "binned": {}}
            for wp in working_points:
                w = working_point(sig, bkg, wp)
                pair["working_points"][f"{wp:g}"] = w
                binned = {}
                for var, values, edges in (("pt", pt, pt_bins), ("abs_eta", abs_eta, eta_bins)):
                    b_idx = _bin_of(values, edges)
                    rows = []
                    for k in range(len(edges) - 1):
                        in_s = (labels == si) & (b_idx == k)
                        in_b = (labels == bi) & (b_idx == k)
                        eff_s = float(np.mean(d[in_s] >= w["threshold"])) if in_s.any() else float("nan")
                        eff_b = float(np.mean(d[in_b] >= w["threshold"])) if in_b.any() else float("nan")
                        rows.append({"low": float(edges[k]), "high": float(edges[k + 1]),
                                     "n_signal": int(in_s.sum()), "n_background": int(in_b.sum()),
                                     "signal_efficiency": eff_s, "background_efficiency": eff_b})
                    binned[var] = rows
                pair["binned"][f"{wp:g}"] = binned
            out["pairs"][f"{s}_vs_{b}"] = pair
    return out


def thresholds(metrics: dict) -> dict:
    """The working-point thresholds alone: {pair: {efficiency: threshold}} (the file analyses use)."""
    return {pair: {wp: v["threshold"] for wp, v in m["working_points"].items()} for pair, m in metrics["pairs"].items()}


def write_predictions(path: str, probs: np.ndarray, arrays: dict[str, np.ndarray], classes: list[str]) -> None:
    """Scores beside the values they came from: jets/scores (n, n_classes), labels, raw pt/eta, ids."""
    with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        g = f.create_group("jets")
        g.create_dataset("scores", data=np.asarray(probs, dtype=np.float32), compression="gzip").attrs["classes"] = classes
        for key in ("labels", "pt", "eta", "event", "dataset_id"):
            if f"jets/{key}" in arrays:
                g.create_dataset(key, data=arrays[f"jets/{key}"], compression="gzip")
        f.attrs["classes"] = classes
