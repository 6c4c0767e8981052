"""Plots of the feature scaling (matplotlib with the Agg backend, mplhep style), PNG.

Per input (the candidate, or a collection in one cone: 'candidate', 'pfcand', 'pfcand_inner'):

* ``convergence_<input>.png``: the cumulative mean and std after every snapshot (every log_step
  files), relative to the final value: (mean_i - mean_final) / std_final and std_i / std_final - 1;
* ``ranges_<input>.png``: per variable, in scaled units (x - mean) / std, the per-file quantile
  bands (Phi(+-1), Phi(+-2), Phi(+-3), Phi(+-5)), median and min/max against the clamp range
  [lim_min, lim_max] (raw: [mean + lim_min std, mean + lim_max std]); variables flagged by
  :func:`taggerflow.scaling.suspicious_variables` are labelled in red with their flag codes.

Only this module imports matplotlib.
"""

from __future__ import annotations

import math
import os

import numpy as np

from taggerflow.scaling import type_cones, variable_types
from taggerflow.utils import atomic_path

_BANDS = (("q_m5", "q_p5", 1.0, "#c6dbef", r"$\Phi(\pm5)$"), ("q_m3", "q_p3", 2.5, "#9ecae1", r"$\Phi(\pm3)$"),
          ("q_m2", "q_p2", 4.5, "#4292c6", r"$\Phi(\pm2)$"), ("q_m1", "q_p1", 7.0, "#08519c", r"$\Phi(\pm1)$"))
_MAX_FILES_DRAWN = 24


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import mplhep

    return plt, mplhep


def _save(fig, path: str, plt) -> str:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path


def _inputs(cfg):
    cones = type_cones(cfg)
    for t, variables in variable_types(cfg).items():
        for c in cones[t]:
            yield t, c, (t if c == "global" else f"{t}_{c}"), [v.name for v in variables]


def plot_convergence(cfg, snapshots: list[dict], out_dir: str) -> list[str]:
    """One PNG per input: cumulative mean and std over the snapshots, relative to the final one."""
    plt, hep = _pyplot()
    paths = []
    if not snapshots:
        return paths
    final = snapshots[-1]["moments"]
    x = [s["n_files"] for s in snapshots]
    for t, c, name, variables in _inputs(cfg):
        with plt.rc_context(hep.style.ROOT):
            fig, (ax_m, ax_s) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
            for v in variables:
                f = final[t][v][c]
                if not f["num"]:
                    continue
                std_f = math.sqrt(f["m2"] / f["num"])
                ms, ss = [], []
                for s in snapshots:
                    m = s["moments"][t][v][c]
                    if m["num"] and std_f > 0:
                        ms.append((m["mean"] - f["mean"]) / std_f)
                        ss.append(math.sqrt(m["m2"] / m["num"]) / std_f - 1)
                    else:
                        ms.append(np.nan)
                        ss.append(np.nan)
                ax_m.plot(x, ms, marker="o", ms=3, lw=1, label=v)
                ax_s.plot(x, ss, marker="o", ms=3, lw=1, label=v)
            ax_m.axhline(0, color="k", lw=0.8)
            ax_s.axhline(0, color="k", lw=0.8)
            ax_m.set_ylabel(r"$(\mu_i - \mu_{final}) / \sigma_{final}$", fontsize=12)
            ax_s.set_ylabel(r"$\sigma_i / \sigma_{final} - 1$", fontsize=12)
            ax_s.set_xlabel("files processed", fontsize=12)
            ax_m.set_title(f"{name}: convergence of the scaling", fontsize=12)
            ax_m.legend(fontsize=7, ncol=3, loc="best")
            fig.tight_layout()
            paths.append(_save(fig, os.path.join(out_dir, f"convergence_{name}.png"), plt))
    return paths


def plot_ranges(cfg, scaling: dict, quantiles: list[dict], flags: list[dict], out_dir: str) -> list[str]:
    """One PNG per input: per-file quantile bands and min/max against the clamp range, in scaled units."""
    plt, hep = _pyplot()
    paths = []
    flagged: dict = {}
    for f in flags:
        flagged.setdefault((f["type"], f["variable"], f["cone"]), []).append(f["code"])
    files = quantiles
    if len(files) > _MAX_FILES_DRAWN:  # an even selection of the files
        files = [files[i] for i in np.linspace(0, len(files) - 1, _MAX_FILES_DRAWN).round().astype(int)]
    for t, c, name, variables in _inputs(cfg):
        with plt.rc_context(hep.style.ROOT):
            fig, ax = plt.subplots(figsize=(10, 1.0 + 0.55 * len(variables)))
            labels = []
            for row, v in enumerate(variables):
                e = scaling[t][v][c]
                mean, std = e["mean"], e["std"]
                nf = max(1, len(files))
                for k, pf in enumerate(files):
                    q = pf["quantiles"].get(t, {}).get(v, {}).get(c)
                    if not q or q.get("median") is None:
                        continue
                    y = row + (k - (nf - 1) / 2) * (0.7 / nf)

                    def z(val):
                        return (val - mean) / std

                    for lo, hi, lw, color, _ in _BANDS:
                        if q.get(lo) is not None and q.get(hi) is not None:
                            ax.plot([z(q[lo]), z(q[hi])], [y, y], color=color, lw=lw, solid_capstyle="butt")
                    ax.plot([z(q["median"])], [y], "|", color="k", ms=6)
                    if q.get("min") is not None:
                        ax.plot([z(q["min"]), z(q["max"])], [y, y], "x", color="grey", ms=4)
                for lim in (e["lim_min"], e["lim_max"]):
                    if lim is not None:
                        ax.plot([lim, lim], [row - 0.42, row + 0.42], color="red", lw=2)
                codes = flagged.get((t, v, c))
                labels.append(f"{v} [{', '.join(sorted(set(codes)))}]" if codes else v)
            ax.set_yticks(range(len(variables)))
            ax.set_yticklabels(labels, fontsize=9)
            for tick, v in zip(ax.get_yticklabels(), variables):
                if (t, v, c) in flagged:
                    tick.set_color("red")
            ax.set_xscale("symlog", linthresh=1.0)
            ax.set_ylim(-0.6, len(variables) - 0.4)
            ax.invert_yaxis()
            ax.set_xlabel(r"scaled value $(x - \mu)/\sigma$", fontsize=12)
            ax.set_title(f"{name}: per-file quantiles vs clamp range (red)", fontsize=12)
            handles = [plt.Line2D([], [], color=col, lw=lw, label=lab) for _, _, lw, col, lab in _BANDS]
            handles += [plt.Line2D([], [], color="k", marker="|", ls="", label="median"),
                        plt.Line2D([], [], color="grey", marker="x", ls="", label="min / max"),
                        plt.Line2D([], [], color="red", lw=2, label="clamp")]
            ax.legend(handles=handles, fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.3 / len(variables)),
                      frameon=False)
            fig.tight_layout()
            paths.append(_save(fig, os.path.join(out_dir, f"ranges_{name}.png"), plt))
    return paths


def plot_all(cfg, merged: dict, out_dir: str) -> list[str]:
    """Every plot of a :func:`taggerflow.scaling.merge_jobs` result into ``out_dir``; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    return plot_convergence(cfg, merged["snapshots"], out_dir) + \
        plot_ranges(cfg, merged["scaling"], merged["quantiles"], merged["report"]["flags"], out_dir)
