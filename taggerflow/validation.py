"""Validation of the ShuffleMergeSpectral shards (TauMLTools' validation tool, with more checks).

* Kolmogorov-Smirnov tests of every shard against all the other shards pooled, on the class label,
  the dataset id, the group id, and pt and |eta| per class: the shards of one production must be
  samples of the same distribution. Each test has a p-value; a test fails when p is below
  ``alpha / n_tests`` (Bonferroni: the chance of any false alarm over all tests is about alpha).
  Discrete variables (class, ids) are tested on their category index; their KS p-values are
  conservative (a real difference still shows), and the per-shard fractions are reported too.
* The achieved spectrum per class (all shards) in the coarse resampling bins against the flat target:
  chi2/ndf of the counts against their mean (bins below the last pt bin with ``lastbin_takeall``;
  bins left empty by ``enable_emptybin`` are skipped; classes with ratio -1 are not flattened).

Outputs: ``report.json`` (every test, the failures, ``passed``) and PNG plots beside it.
Reads only the five columns it needs, in chunks, at most ``max_rows`` per shard (evenly spaced).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import awkward as ak
import numpy as np

from taggerflow.config import Config
from taggerflow.formats.shards import open_shard
from taggerflow.paths import portable_path
from taggerflow.utils import write_json

COLUMNS = ("class_label", "dataset_id", "dataset_group_id", "pt", "eta")
REPORT = "report.json"
#: the report of a failed strict validation: never report.json, so that the task stays incomplete
FAILED_REPORT = "report.failed.json"


def kolmogorov_sf(lam: float) -> float:
    """P(K > lam) of the Kolmogorov distribution (series; exact enough for p-values)."""
    if lam <= 0:
        return 1.0
    if lam < 0.2:
        return 1.0
    s = 0.0
    for k in range(1, 101):
        term = 2 * (-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam)
        s += term
        if abs(term) < 1e-12:
            break
    return min(1.0, max(0.0, s))


def ks_2samp(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample KS statistic D and its asymptotic p-value (Stephens' correction)."""
    a, b = np.sort(np.asarray(a, dtype=np.float64)), np.sort(np.asarray(b, dtype=np.float64))
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return float("nan"), float("nan")
    grid = np.concatenate([a, b])
    d = float(np.max(np.abs(np.searchsorted(a, grid, side="right") / n - np.searchsorted(b, grid, side="right") / m)))
    ne = n * m / (n + m)
    lam = (math.sqrt(ne) + 0.12 + 0.11 / math.sqrt(ne)) * d
    return d, kolmogorov_sf(lam)


def load_columns(cfg: Config, path: str, max_rows: int = 1_000_000) -> dict[str, np.ndarray]:
    shard = open_shard(path, cfg.tree)
    n = shard.num_entries
    stride = max(1, math.ceil(n / max_rows)) if max_rows else 1
    parts: dict[str, list[np.ndarray]] = {c: [] for c in COLUMNS}
    pos = 0
    for chunk in shard.chunks(list(COLUMNS), cfg.chunk_size):
        k = len(chunk)
        take = np.arange((-pos) % stride, k, stride)
        for c in COLUMNS:
            parts[c].append(ak.to_numpy(chunk[c])[take])
        pos += k
    shard.close()
    out = {c: (np.concatenate(v) if v else np.zeros(0)) for c, v in parts.items()}
    out["abs_eta"] = np.abs(out.pop("eta")).astype(np.float64)
    out["pt"] = out["pt"].astype(np.float64)
    return out


def _index(values: np.ndarray, categories: np.ndarray) -> np.ndarray:
    return np.searchsorted(categories, values).astype(np.float64)


def validate_shards(cfg: Config, shard_paths: Sequence[str], out_dir: str, alpha: float = 0.01,
                    max_chi2_ndf: float = 3.0, max_rows: int = 1_000_000, plots: bool = True,
                    strict: bool = False) -> dict:
    """Run every check on the shards, write ``report.json`` (+ plots) into ``out_dir``; return the report.
    With ``strict`` a failed report is written as ``report.failed.json`` instead (see
    :func:`report_name`), and a passed one removes an earlier failed report."""
    rs = cfg.raw["resampling"]
    classes = cfg.class_names
    cols = [load_columns(cfg, p, max_rows) for p in shard_paths]
    n_sh = len(cols)
    tests = []
    if n_sh >= 2:
        allc = {k: np.concatenate([c[k] for c in cols]) for k in cols[0]}
        cats = {k: np.unique(allc[k]) for k in ("dataset_id", "dataset_group_id")}
        specs = [("class_label", None), ("dataset_id", None), ("dataset_group_id", None)]
        specs += [(v, t) for t in range(len(classes)) for v in ("pt", "abs_eta")]
        for i in range(n_sh):
            rest = [c for j, c in enumerate(cols) if j != i]
            for var, t in specs:
                def pick(c, var=var, t=t):
                    x = c[var]
                    if t is not None:
                        x = x[c["class_label"] == t]
                    return _index(x, cats[var]) if var in cats else x.astype(np.float64)
                a = pick(cols[i])
                b = np.concatenate([pick(c) for c in rest])
                d, p = ks_2samp(a, b)
                tests.append({"variable": var, "class": classes[t] if t is not None else None, "shard": i,
                              "n_shard": int(len(a)), "n_rest": int(len(b)), "ks": d, "p_value": p})
    threshold = alpha / max(len(tests), 1)
    for t in tests:
        t["passed"] = bool(not (t["p_value"] < threshold))  # NaN (empty sample): not a failure
    fractions = [{c: float(np.mean(col["class_label"] == k)) if len(col["class_label"]) else 0.0
                  for k, c in enumerate(classes)} for col in cols]

    # achieved spectrum per class against the flat target
    pt_bins, eta_bins = rs["pt_bins"], rs["eta_bins"]
    takeall = bool(rs.get("lastbin_takeall", False))
    flatness = {}
    allc = {k: np.concatenate([c[k] for c in cols]) if cols else np.zeros(0) for k in ("class_label", "pt", "abs_eta")}
    for t, cls in enumerate(classes):
        r = rs["class_ratio"].get(cls, 0)
        sel = allc["class_label"] == t
        counts, _, _ = np.histogram2d(allc["pt"][sel], allc["abs_eta"][sel], bins=[pt_bins, eta_bins])
        entry = {"counts": counts.astype(np.int64).tolist(), "ratio": r}
        if r == -1 or r == 0:
            entry.update({"flattened": False, "passed": True})
        else:
            use = counts[:-1] if takeall else counts
            use = use[use > 0] if rs.get("enable_emptybin", False) else use.ravel()
            mean = use.mean() if use.size else 0.0
            ndf = max(use.size - 1, 1)
            chi2 = float(((use - mean) ** 2).sum() / mean) if mean > 0 else float("inf")
            entry.update({"flattened": True, "mean_per_bin": float(mean), "chi2": chi2, "ndf": ndf,
                          "chi2_ndf": chi2 / ndf, "passed": bool(chi2 / ndf <= max_chi2_ndf)})
        flatness[cls] = entry
    failures = [f"KS shard {t['shard']} vs the others: {t['variable']}"
                + (f" ({t['class']})" if t["class"] else "") + f": p = {t['p_value']:.3g} < {threshold:.3g}"
                for t in tests if not t["passed"]]
    failures += [f"spectrum of class '{c}' not flat: chi2/ndf = {e['chi2_ndf']:.2f} > {max_chi2_ndf}"
                 for c, e in flatness.items() if not e["passed"]]
    report = {"shards": [portable_path(p, cfg.base_dir) for p in shard_paths], "entries": [int(len(c["class_label"])) for c in cols],
              "alpha": alpha, "threshold": threshold, "n_tests": len(tests), "tests": tests,
              "class_fractions": fractions, "flatness": flatness, "max_chi2_ndf": max_chi2_ndf,
              "failures": failures, "passed": not failures,
              "note": "one shard: no KS test possible" if n_sh < 2 else ""}
    os.makedirs(out_dir, exist_ok=True)
    if plots:
        # names beside the report, not paths: the same report wherever the data directory is
        report["plots"] = [os.path.basename(p) for p in _plots(cols, classes, pt_bins, eta_bins, flatness, out_dir)]
    write_json(os.path.join(out_dir, report_name(report, strict)), report)
    if strict and report["passed"] and os.path.exists(os.path.join(out_dir, FAILED_REPORT)):
        os.remove(os.path.join(out_dir, FAILED_REPORT))
    return report


def report_name(report: dict, strict: bool) -> str:
    """The file name of a validation report: report.json, except for a failed strict validation."""
    return FAILED_REPORT if strict and not report["passed"] else REPORT


def _plots(cols, classes, pt_bins, eta_bins, flatness, out_dir) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.8 / max(len(cols), 1)
    for i, c in enumerate(cols):
        fr = [np.mean(c["class_label"] == k) if len(c["class_label"]) else 0 for k in range(len(classes))]
        ax.bar(np.arange(len(classes)) + i * width, fr, width, label=f"shard {i}")
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes)
    ax.set_ylabel("fraction")
    ax.legend(fontsize="small")
    paths.append(_save(fig, out_dir, "class_fractions.png"))
    for var, bins in (("pt", np.geomspace(max(pt_bins[0], 1e-3), pt_bins[-1], 40)), ("abs_eta", np.linspace(eta_bins[0], eta_bins[-1], 30))):
        fig, axes = plt.subplots(1, len(classes), figsize=(4 * len(classes), 3.5), squeeze=False)
        for k, cls in enumerate(classes):
            a = axes[0, k]
            for i, c in enumerate(cols):
                x = c[var][c["class_label"] == k]
                a.hist(x, bins=bins, density=True, histtype="step", label=f"shard {i}")
            a.set_title(cls)
            a.set_xlabel(var)
            if var == "pt":
                a.set_xscale("log")
        axes[0, 0].legend(fontsize="small")
        paths.append(_save(fig, out_dir, f"{var}_per_class.png"))
    fig, axes = plt.subplots(1, len(classes), figsize=(4 * len(classes), 3.5), squeeze=False)
    for k, cls in enumerate(classes):
        a = axes[0, k]
        counts = np.asarray(flatness[cls]["counts"], dtype=float)
        m = a.pcolormesh(np.arange(len(pt_bins)), np.arange(len(eta_bins)), counts.T)
        fig.colorbar(m, ax=a)
        e = flatness[cls]
        a.set_title(f"{cls}" + (f": chi2/ndf {e['chi2_ndf']:.2f}" if e.get("flattened") else " (not flattened)"))
        a.set_xticks(np.arange(len(pt_bins)), [f"{x:g}" for x in pt_bins], fontsize="x-small", rotation=90)
        a.set_yticks(np.arange(len(eta_bins)), [f"{x:g}" for x in eta_bins], fontsize="x-small")
        a.set_xlabel("pt bin")
        a.set_ylabel("|eta| bin")
    paths.append(_save(fig, out_dir, "achieved_spectrum.png"))
    return paths


def _save(fig, out_dir: str, name: str) -> str:
    import matplotlib.pyplot as plt

    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
