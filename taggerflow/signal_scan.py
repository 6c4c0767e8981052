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

__all__ = ["significance_scan", "best_significance", "efficiency_map", "validate_parameters",
           "working_point_thresholds", "signal_scan_summary", "markdown_tables"]


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


def working_point_thresholds(sig_scores, working_points: Sequence[float], sig_weights=None) -> list[float]:
    """For each signal efficiency wp, the largest signal score t with (weighted) efficiency of
    ``score >= t`` at least wp: the cut of that working point on the signal-vs-all score."""
    scores = np.asarray(sig_scores, dtype=np.float64)
    if not len(scores):
        raise ValueError("working points: no signal candidate")
    w = _weights(scores, sig_weights, "signal")
    order = np.argsort(-scores, kind="stable")
    eff = np.cumsum(w[order]) / w.sum()          # efficiency of score >= scores[order][k]
    # the first position reaching wp (a small tolerance against rounding of the cumulative sum)
    idx = [int(np.searchsorted(eff, wp - 1e-12, side="left")) for wp in working_points]
    return [float(scores[order][min(i, len(scores) - 1)]) for i in idx]


def signal_scan_summary(probs, labels, classes: Sequence[str], signal: str, working_points: Sequence[float],
                        weights=None, dataset_ids=None, parameters_by_id: Mapping[int, tuple] | None = None,
                        n_steps: int = 100) -> dict:
    """S/sqrt(B) scan of the score of class ``signal`` (background: every other class) on a grid of
    ``n_steps + 1`` thresholds in [0, 1], and the signal efficiency map at the working points.

    ``parameters_by_id``: dataset_id -> (dataset name, {parameter: value}) for the signal datasets.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    s_idx = list(classes).index(signal)
    score = probs[:, s_idx]
    is_sig = labels == s_idx
    w = np.ones(len(score)) if weights is None else np.asarray(weights, dtype=np.float64)
    grid = np.linspace(0.0, 1.0, n_steps + 1)
    s, b, z = significance_scan(score[is_sig], score[~is_sig], grid, w[is_sig], w[~is_sig])
    out: dict = {"signal": signal, "weighted": weights is not None,
                 "scan": {"threshold": grid.tolist(), "s": s.tolist(), "b": b.tolist(),
                          "significance": [None if not np.isfinite(v) else float(v) for v in z]}}
    finite = np.isfinite(z)
    out["best"] = (dict(zip(("threshold", "significance"), best_significance(grid, z))) if finite.any()
                   else {"threshold": None, "significance": None})
    if is_sig.any():
        cuts = working_point_thresholds(score[is_sig], working_points, w[is_sig])
        out["working_points"] = {str(wp): t for wp, t in zip(working_points, cuts)}
        if parameters_by_id and dataset_ids is not None:
            names = {i: name for i, (name, _) in parameters_by_id.items()}
            ds = np.array([names.get(int(i), "") for i in np.asarray(dataset_ids)[is_sig]])
            params = {name: p for name, p in parameters_by_id.values()}
            out["efficiency_map"] = efficiency_map(score[is_sig], ds, params, cuts, w[is_sig])
    return out


def markdown_tables(name: str, summary: dict) -> str:
    """The report's tables of one training: best S/sqrt(B), efficiency per parameter point."""
    best = summary["best"]
    fmt = (lambda v, f: "n/a" if v is None or v != v else format(v, f))
    text = (f"Best S/sqrt(B) of '{summary['signal']}' ({'weighted' if summary['weighted'] else 'unweighted'}): "
            f"{fmt(best['significance'], '.2f')} at score >= {fmt(best['threshold'], '.2f')}\n")
    rows = summary.get("efficiency_map")
    if rows:
        keys = list(rows[0]["parameters"])
        wps = list(summary["working_points"])
        text += ("\n| training | dataset | " + " | ".join(keys) + " | n | "
                 + " | ".join(f"eff @ WP {float(wp):.0%}" for wp in wps) + " |\n"
                 + "|---" * (3 + len(keys) + len(wps)) + "|\n")
        for r in rows:
            text += (f"| {name} | {r['dataset']} | " + " | ".join(f"{r['parameters'][k]:g}" for k in keys)
                     + f" | {r['n']} | " + " | ".join(fmt(e, ".3f") for e in r["efficiency"]) + " |\n")
    return text
