"""Training and evaluation plots (matplotlib + mplhep), written as PNG.

matplotlib is imported inside the functions (Agg backend), so importing this module is cheap.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from taggerflow.utils import atomic_path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep

    plt.style.use(mplhep.style.ROOT)
    plt.rcParams.update({"figure.figsize": (8, 6), "font.size": 14, "savefig.dpi": 90})
    return plt


def _save(fig, path: str) -> str:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def plot_history(rows: list[dict], path: str, title: str = "") -> str:
    """Loss and accuracy per epoch (training and validation) from the CSV history."""
    plt = _plt()
    epochs = np.array([int(r["epoch"]) + 1 for r in rows])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5.5))
    for ax, key in ((ax1, "loss"), (ax2, "accuracy")):
        for prefix, style in (("", "-o"), ("val_", "--s")):
            if rows and prefix + key in rows[0]:
                ax.plot(epochs, [float(r[prefix + key]) for r in rows], style, label=("validation " if prefix else "training ") + key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend()
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_scores(probs: np.ndarray, labels: np.ndarray, classes: list[str], signal: str, path: str) -> str:
    """Distribution of the signal-class score for each true class."""
    plt = _plt()
    si = classes.index(signal)
    fig, ax = plt.subplots()
    bins = np.linspace(0, 1, 41)
    for i, c in enumerate(classes):
        sel = labels == i
        if sel.any():
            ax.hist(probs[sel, si], bins=bins, histtype="step", density=True, linewidth=2, label=f"true {c}")
    ax.set_yscale("log")
    ax.set_xlabel(f"score p({signal})")
    ax.set_ylabel("normalised entries")
    ax.legend()
    return _save(fig, path)


def plot_rocs(curves: dict[str, dict], pair: str, path: str) -> str:
    """ROC curves (background rejection vs signal efficiency) of several trainings, with the ratio
    to the first one in a lower panel."""
    plt = _plt()
    fig, (ax, rax) = plt.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]}, figsize=(8, 8))
    ref_name = next(iter(curves))
    ref = np.asarray(curves[ref_name]["background_rejection"], dtype=float)
    for name, c in curves.items():
        eff = np.asarray(c["signal_efficiency"], dtype=float)
        rej = np.asarray(c["background_rejection"], dtype=float)
        ax.plot(eff, rej, label=f"{name} (AUC {c['auc']:.4f})" if "auc" in c else name)
        with np.errstate(divide="ignore", invalid="ignore"):
            rax.plot(eff, rej / ref)
    ax.set_yscale("log")
    ax.set_ylabel("background rejection")
    ax.set_title(pair.replace("_vs_", " vs "))
    ax.legend()
    rax.set_xlabel("signal efficiency")
    rax.set_ylabel(f"ratio to {ref_name}", fontsize=11)
    rax.set_xlim(0.2, 1.0)
    return _save(fig, path)


def plot_efficiency_binned(binned: dict[str, dict], var: str, path: str, what: str = "signal_efficiency",
                           label: str = "", logy: bool = False) -> str:
    """Efficiency (or any other per-bin value, ``what``) in bins of ``var`` for each working point
    ({wp: {var: [rows]}}). Undefined (None, NaN) and infinite values are left out."""
    plt = _plt()
    fig, ax = plt.subplots()
    positive = False
    for wp, by_var in binned.items():
        rows = by_var[var]
        lo = np.array([r["low"] for r in rows])
        hi = np.array([r["high"] for r in rows])
        val = np.array([np.nan if r.get(what) is None else r[what] for r in rows], dtype=float)
        ok = np.isfinite(val)
        positive |= bool(np.any(val[ok] > 0))
        centers = 0.5 * (lo + hi)
        ax.errorbar(centers[ok], val[ok], xerr=0.5 * (hi - lo)[ok], fmt="o", label=f"WP {float(wp):.0%}")
    if var == "pt":
        ax.set_xscale("log")
    if logy and positive:  # (a log axis needs a positive value; e.g. no background passing anywhere)
        ax.set_yscale("log")
    ax.set_xlabel({"pt": "pt [GeV]", "abs_eta": "|eta|"}.get(var, var))
    ax.set_ylabel(label or what.replace("_", " "))
    ax.legend()
    return _save(fig, path)


def plot_binned_rejections(metrics: dict, out: dict[str, str]) -> list[str]:
    """The binned rejection plots (taggerflow.training.BINNED_PLOT_KINDS) from evaluate()'s metrics,
    each written where ``out`` says (keys missing from ``out`` are skipped). Returns the paths written."""
    written = []
    for pair, m in metrics["pairs"].items():
        bkg = pair.split("_vs_")[1]
        specs = {"rej_abs_eta": ("abs_eta", "background_efficiency", f"{bkg} mis-id rate", False),
                 "rej_flat_pt": ("pt", "bin_background_rejection", f"{bkg} rejection (flat efficiency)", True),
                 "rej_flat_abs_eta": ("abs_eta", "bin_background_rejection", f"{bkg} rejection (flat efficiency)",
                                      True)}
        for kind, (var, what, label, logy) in specs.items():
            key = f"{kind}_{pair}"
            if key in out:
                written.append(plot_efficiency_binned(m["binned"], var, out[key], what=what, label=label, logy=logy))
    return written


def markdown_report(title: str, sections: Sequence[tuple[str, Sequence[str], str]], path: str) -> str:
    """A markdown page: per section a heading, a text block and images (paths relative to the page)."""
    base = os.path.dirname(os.path.abspath(path))
    lines = [f"# {title}", ""]
    for heading, images, text in sections:
        lines += [f"## {heading}", ""]
        if text:
            lines += [text, ""]
        for img in images:
            rel = os.path.relpath(os.path.abspath(img), base)
            lines += [f"![{os.path.basename(img)}]({rel})", ""]
    with atomic_path(path, suffix=".md") as tmp:
        with open(tmp, "w") as f:
            f.write("\n".join(lines))
    return path
