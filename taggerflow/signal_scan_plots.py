"""Plots of taggerflow.signal_scan: S/sqrt(B) against the threshold, signal efficiency over (m_H, m_S)."""

from __future__ import annotations

import numpy as np

from taggerflow.plotting import _plt, _save


def plot_significance(summary: dict, path: str, title: str = "") -> str:
    plt = _plt()
    fig, ax = plt.subplots()
    scan = summary["scan"]
    z = np.array([np.nan if v is None else v for v in scan["significance"]])
    ax.plot(scan["threshold"], z, drawstyle="steps-post")
    best = summary["best"]
    if best["threshold"] is not None:
        ax.axvline(best["threshold"], ls="--", color="grey",
                   label=f"best {best['significance']:.2f} at {best['threshold']:.2f}")
        ax.legend()
    ax.set_xlabel(f"{summary['signal']} score threshold")
    ax.set_ylabel("S / sqrt(B)" + (" (weighted)" if summary["weighted"] else ""))
    ax.set_title(title, fontsize=12)
    return _save(fig, path)


def plot_efficiency_map(summary: dict, path: str, title: str = "") -> str:
    """One panel per working point: the signal efficiency of each parameter point as a coloured
    marker over its first two parameters (e.g. m_H, m_S), the value written next to it."""
    plt = _plt()
    rows = summary.get("efficiency_map") or []
    wps = list(summary.get("working_points", {}))
    fig, axes = plt.subplots(1, max(len(wps), 1), figsize=(6 * max(len(wps), 1), 4.5), squeeze=False)
    keys = list(rows[0]["parameters"]) if rows else ["parameter"]
    x = np.array([r["parameters"][keys[0]] for r in rows], dtype=float)
    y = (np.array([r["parameters"][keys[1]] for r in rows], dtype=float) if len(keys) > 1
         else np.zeros(len(rows)))
    for k, (ax, wp) in enumerate(zip(axes[0], wps)):
        eff = np.array([r["efficiency"][k] for r in rows], dtype=float)
        sc = ax.scatter(x, y, c=eff, vmin=0.0, vmax=1.0, s=250, cmap="viridis")
        for xi, yi, e in zip(x, y, eff):
            ax.annotate(f"{e:.2f}", (xi, yi), textcoords="offset points", xytext=(0, 12), ha="center", fontsize=10)
        ax.set_xlabel(keys[0])
        ax.set_ylabel(keys[1] if len(keys) > 1 else "")
        ax.set_title(f"WP {float(wp):.0%} {title}", fontsize=11)
        fig.colorbar(sc, ax=ax, label="signal efficiency")
    return _save(fig, path)
