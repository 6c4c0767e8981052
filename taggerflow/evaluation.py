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

from taggerflow import weighted_metrics as wm
from taggerflow.metrics import absent_class_warnings, discriminant, roc_auc
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
    """Threshold giving ``efficiency`` on the signal, and what it does to the background.
    Without signal the threshold is NaN; without background the efficiency and rejection are NaN
    (no background passing gives rejection inf)."""
    thr = float(np.quantile(sig, 1.0 - efficiency)) if len(sig) else float("nan")
    return {"threshold": thr, **_efficiencies(sig, bkg, thr)}


def _efficiencies(sig: np.ndarray, bkg: np.ndarray, thr: float) -> dict[str, float]:
    """Signal and background efficiency of ``score >= thr`` and the rejection 1 / background eff.
    (all NaN for a NaN threshold: no signal to derive it from)."""
    defined = not np.isnan(thr)
    eff_s = float(np.mean(sig >= thr)) if len(sig) and defined else float("nan")
    eff_b = float(np.mean(bkg >= thr)) if len(bkg) and defined else float("nan")
    rej = float("nan") if np.isnan(eff_b) else (1.0 / eff_b if eff_b > 0 else float("inf"))
    return {"signal_efficiency": eff_s, "background_efficiency": eff_b, "background_rejection": rej}


def _null(x):
    """NaN (undefined: an empty bin, a class absent from it) -> None, i.e. null in JSON."""
    if isinstance(x, float) and np.isnan(x):
        return None
    return x


def _bin_of(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    idx = np.searchsorted(np.asarray(edges, dtype=float), values, side="right") - 1
    idx[(values < edges[0]) | (values >= edges[-1]) | np.isnan(values)] = -1
    return idx


class _Weighted:
    """The metric functions of one pair, unweighted (``w`` None: the functions above) or weighted by
    the event weights (taggerflow.weighted_metrics); called with boolean masks of the candidates."""

    def __init__(self, d: np.ndarray, w: np.ndarray | None):
        self.d, self.w = d, w

    def auc(self, s, b):
        if self.w is None:
            return roc_auc(self.d[s], self.d[b])
        return wm.weighted_roc_auc(self.d[s], self.d[b], self.w[s], self.w[b])

    def roc(self, s, b, n_points=200):
        if self.w is None:
            return roc_curve(self.d[s], self.d[b], n_points)
        return wm.weighted_roc_curve(self.d[s], self.d[b], self.w[s], self.w[b], n_points)

    def working_point(self, s, b, eff):
        if self.w is None:
            return working_point(self.d[s], self.d[b], eff)
        return wm.weighted_working_point(self.d[s], self.d[b], self.w[s], self.w[b], eff)

    def efficiencies(self, s, b, thr):
        if self.w is None:
            return _efficiencies(self.d[s], self.d[b], thr)
        return wm.weighted_efficiencies(self.d[s], self.d[b], self.w[s], self.w[b], thr)

    def sums(self, s, b) -> dict:
        if self.w is None:
            return {}
        return {"sum_weights_signal": float(self.w[s].sum()), "sum_weights_background": float(self.w[b].sum())}


def evaluate(probs: np.ndarray, labels: np.ndarray, classes: list[str], signals: list[str],
             working_points: Sequence[float], pt: np.ndarray, eta: np.ndarray,
             pt_bins: Sequence[float], eta_bins: Sequence[float], n_roc_points_binned: int = 100,
             weights: np.ndarray | None = None) -> dict:
    """Metrics of every signal class against every other class: AUC, ROC curve, working points
    (thresholds fixed on the whole sample), and the same in bins of pt and |eta|.

    Per pair (``pairs[s_vs_b]``):

    - ``auc``, ``roc``, ``working_points[wp]``: on the whole sample;
    - ``binned_roc[var]`` (var: ``pt``, ``abs_eta``): one row per bin with ``low``, ``high``,
      ``n_signal``, ``n_background``, ``auc`` and ``roc`` (``n_roc_points_binned`` points) of the
      candidates in that bin;
    - ``binned[wp][var]``: one row per bin with, at the inclusive threshold of the working point,
      ``signal_efficiency``, ``background_efficiency``, ``background_rejection``, and, at the
      threshold derived in that bin (flat signal efficiency), ``bin_threshold``,
      ``bin_signal_efficiency``, ``bin_background_efficiency``, ``bin_background_rejection``.

    Values that are undefined (no signal, or no background, in the sample or the bin) are None (JSON null);
    a rejection where no background passes is inf. A class without a candidate in the sample makes
    its pairs' ``auc`` None and is named in ``warnings`` (one line per absent class).

    ``weights`` (the event weights, ``evaluation.event_weights``): every AUC, ROC, threshold,
    efficiency and rejection is weighted (taggerflow.weighted_metrics; negative weights kept as
    given), the sample gets ``weighted: true`` and ``sum_weights`` per class, each row and pair its
    ``sum_weights_signal``/``sum_weights_background``, each pair ``roc_non_monotonic``; a class with a
    non-positive weight sum leaves its values null and is named in ``warnings``.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    abs_eta = np.abs(np.asarray(eta, dtype=np.float64))
    pt = np.asarray(pt, dtype=np.float64)
    binnings = [(var, _bin_of(values, edges), [float(e) for e in edges])
                for var, values, edges in (("pt", pt, pt_bins), ("abs_eta", abs_eta, eta_bins))]
    out: dict = {"n": int(len(labels)), "per_class": {c: int(np.sum(labels == i)) for i, c in enumerate(classes)},
                 "accuracy": float(np.mean(np.argmax(probs, axis=1) == labels)) if len(labels) else float("nan"),
                 "warnings": absent_class_warnings(labels, classes), "pairs": {}}
    w = None
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        out["weighted"] = True
        out["sum_weights"] = {c: float(w[labels == i].sum()) for i, c in enumerate(classes)}
        out["warnings"] += wm.weight_warnings(labels, w, classes)
    for s in signals:
        si = classes.index(s)
        for bi, b in enumerate(classes):
            if bi == si:
                continue
            d = discriminant(probs, si, bi)
            is_s, is_b = labels == si, labels == bi
            m = _Weighted(d, w)
            pair = {"auc": _null(m.auc(is_s, is_b)),
                    "roc": {k: [_null(float(x)) for x in v] for k, v in m.roc(is_s, is_b).items()},
                    "working_points": {}, "binned": {}, "binned_roc": {}}
            if w is not None:
                pair.update(m.sums(is_s, is_b))
                pair["roc_non_monotonic"] = wm.non_monotonic(d[is_s], w[is_s]) or wm.non_monotonic(d[is_b], w[is_b])
            effs = {f"{wp:g}": float(wp) for wp in working_points}
            wps = {key: m.working_point(is_s, is_b, eff) for key, eff in effs.items()}
            pair["working_points"] = {key: {k2: _null(v) for k2, v in wp.items()} for key, wp in wps.items()}
            binned: dict = {key: {} for key in wps}
            for var, b_idx, edges in binnings:
                roc_rows = []
                rows: dict = {key: [] for key in wps}
                for k in range(len(edges) - 1):
                    s_k, b_k = is_s & (b_idx == k), is_b & (b_idx == k)
                    head = {"low": edges[k], "high": edges[k + 1],
                            "n_signal": int(s_k.sum()), "n_background": int(b_k.sum()), **m.sums(s_k, b_k)}
                    roc_k = None
                    if s_k.any():
                        roc_k = {key: [_null(float(x)) for x in v]
                                 for key, v in m.roc(s_k, b_k, n_roc_points_binned).items()}
                    roc_rows.append({**head, "auc": _null(m.auc(s_k, b_k)), "roc": roc_k})
                    for key, wp in wps.items():
                        inclusive = m.efficiencies(s_k, b_k, wp["threshold"])
                        local = m.working_point(s_k, b_k, effs[key])
                        rows[key].append({**head, **{k2: _null(v) for k2, v in inclusive.items()},
                                          **{f"bin_{k2}": _null(v) for k2, v in local.items()}})
                pair["binned_roc"][var] = roc_rows
                for key in wps:
                    binned[key][var] = rows[key]
            pair["binned"] = binned
            out["pairs"][f"{s}_vs_{b}"] = pair
    return out


def thresholds(metrics: dict) -> dict:
    """The working-point thresholds (the file analyses use): {pair: {efficiency: threshold}} on the
    whole sample, and under ``binned`` the thresholds derived in each bin (flat signal efficiency):
    {"binned": {pair: {efficiency: {"pt" | "abs_eta": [{low, high, threshold, n_signal}]}}}}, the
    threshold None (null) in a bin without signal."""
    out: dict = {pair: {wp: v["threshold"] for wp, v in m["working_points"].items()}
                 for pair, m in metrics["pairs"].items()}
    out["binned"] = {pair: {wp: {var: [{"low": r["low"], "high": r["high"], "threshold": r["bin_threshold"],
                                        "n_signal": r["n_signal"]} for r in rows]
                                 for var, rows in by_var.items()}
                            for wp, by_var in m["binned"].items()}
                     for pair, m in metrics["pairs"].items()}
    return out


def write_predictions(path: str, probs: np.ndarray, arrays: dict[str, np.ndarray], classes: list[str]) -> None:
    """Scores beside the values they came from: jets/scores (n, n_classes), labels, raw pt/eta, ids."""
    with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        g = f.create_group("jets")
        g.create_dataset("scores", data=np.asarray(probs, dtype=np.float32), compression="gzip").attrs["classes"] = classes
        for key in ("labels", "pt", "eta", "event", "dataset_id", "event_weight"):
            if f"jets/{key}" in arrays:
                g.create_dataset(key, data=arrays[f"jets/{key}"], compression="gzip")
        f.attrs["classes"] = classes
