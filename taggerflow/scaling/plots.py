"""Plots of the feature scaling (matplotlib with the Agg backend, mplhep style), PNG.

Per input (the candidate, or a collection in one cone: 'candidate', 'pfcand', 'pfcand_inner'):

* ``convergence_<input>.png``: the cumulative mean and std after every snapshot (every log_step
  files), relative to the final value: (mean_i - mean_final) / std_final and std_i / std_final - 1;
* ``ranges_<input>.png``: per variable, in scaled units (x - mean) / std, the per-file quantile
  bands (Phi(+-1), Phi(+-2), Phi(+-3), Phi(+-5)), median and min/max against the clamp range
  [lim_min, lim_max] (raw: [mean + lim_min std, mean + lim_max std]); variables flagged by
  :func:`taggerflow.scaling.flags.suspicious_variables` are labelled in red with their flag codes.

Only this module imports matplotlib.
"""

from __future__ import annotations

import math
import os

import numpy as np

from taggerflow.scaling.names import input_name, type_cones, variable_types
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
            yield t, c, input_name(t, c), [v.name for v in variables]


def plot_convergence(cfg, snapshots: list[dict], out_dir: str) -> list[str]:
    """One PNG per input: cumulative mean and std over the snapshots, relative to the final one."""
    plt, hep = _pyplot()
    from matplotlib.ticker import MaxNLocator

    paths = []
    if not snapshots:
        return paths
    final = snapshots[-1]["moments"]
    x = [s["n_files"] for s in snapshots]
    for t, c, name, variables in _inputs(cfg):
        with plt.rc_context(hep.style.ROOT):
            fig, (ax_m, ax_s) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
            colors = plt.get_cmap("tab20")
            for i, v in enumerate(variables):
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
                style = {"marker": "o", "ms": 3, "lw": 1, "color": colors(i % 20), "ls": "-" if i < 20 else "--"}
                ax_m.plot(x, ms, label=v, **style)
                ax_s.plot(x, ss, label=v, **style)
            for ax in (ax_m, ax_s):
                ax.axhline(0, color="k", lw=0.8)
                ax.minorticks_off()
                ax.tick_params(labelsize=10)
                ax.yaxis.get_offset_text().set_fontsize(9)
            ax_s.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax_m.set_ylabel(r"$(\mu_i - \mu_{final}) / \sigma_{final}$", fontsize=12)
            ax_s.set_ylabel(r"$\sigma_i / \sigma_{final} - 1$", fontsize=12)
            ax_s.set_xlabel("files processed", fontsize=12)
            ax_m.set_title(f"{name}: convergence of the scaling", fontsize=12)
            ax_m.legend(fontsize=7, ncol=3, loc="best")
            fig.subplots_adjust(left=0.14, right=0.97, top=0.94, bottom=0.1, hspace=0.08)
            paths.append(_save(fig, os.path.join(out_dir, f"convergence_{name}.png"), plt))
    return paths


def plot_ranges(cfg, scaling: dict, quantiles: list[dict], flags: list[dict], out_dir: str) -> list[str]:
    """One PNG per input: per-file quantile bands and min/max against the clamp range, in scaled units."""
    plt, hep = _pyplot()
    from matplotlib.collections import LineCollection

    paths = []
    flagged: dict = {}
    for f in flags:
        flagged.setdefault((f["type"], f["variable"], f["cone"]), []).append(f["code"])
    files = quantiles
    if len(files) > _MAX_FILES_DRAWN:  # an even selection of the files
        files = [files[i] for i in np.linspace(0, len(files) - 1, _MAX_FILES_DRAWN).round().astype(int)]
    nf = max(1, len(files))
    for t, c, name, variables in _inputs(cfg):
        with plt.rc_context(hep.style.ROOT):
            height = 1.6 + 0.5 * len(variables)
            fig, ax = plt.subplots(figsize=(10, height))
            bands = {lo: [] for lo, *_ in _BANDS}
            med, ext, clamps = ([], []), ([], []), []
            labels = []
            for row, v in enumerate(variables):
                e = scaling[t][v][c]
                mean, std = e["mean"], e["std"]
                for k, pf in enumerate(files):
                    q = pf["quantiles"].get(t, {}).get(v, {}).get(c)
                    if not q or q.get("median") is None:
                        continue
                    y = row + (k - (nf - 1) / 2) * (0.7 / nf)
                    for lo, hi, *_ in _BANDS:
                        if q.get(lo) is not None and q.get(hi) is not None:
                            bands[lo].append([((q[lo] - mean) / std, y), ((q[hi] - mean) / std, y)])
                    med[0].append((q["median"] - mean) / std)
                    med[1].append(y)
                    if q.get("min") is not None:
                        ext[0].extend([(q["min"] - mean) / std, (q["max"] - mean) / std])
                        ext[1].extend([y, y])
                for lim in (e["lim_min"], e["lim_max"]):
                    if lim is not None:
                        clamps.append([(lim, row - 0.42), (lim, row + 0.42)])
                codes = flagged.get((t, v, c))
                labels.append(f"{v} [{', '.join(sorted(set(codes)))}]" if codes else v)
            for lo, _, lw, color, _ in _BANDS:
                ax.add_collection(LineCollection(bands[lo], linewidths=lw, colors=color, capstyle="butt"))
            ax.add_collection(LineCollection(clamps, linewidths=2, colors="red"))
            ax.plot(med[0], med[1], "|", color="k", ms=6)
            ax.plot(ext[0], ext[1], "x", color="grey", ms=4)
            ax.autoscale_view()
            ax.set_yticks(range(len(variables)))
            ax.set_yticklabels(labels, fontsize=9)
            for tick, v in zip(ax.get_yticklabels(), variables):
                if (t, v, c) in flagged:
                    tick.set_color("red")
            ax.set_xscale("symlog", linthresh=1.0)
            ax.minorticks_off()
            ax.tick_params(axis="x", labelsize=10)
            ax.set_ylim(len(variables) - 0.4, -0.6)
            ax.set_xlabel(r"scaled value $(x - \mu)/\sigma$", fontsize=12)
            ax.set_title(f"{name}: per-file quantiles vs clamp range (red)", fontsize=12)
            handles = [plt.Line2D([], [], color=col, lw=lw, label=lab) for _, _, lw, col, lab in _BANDS]
            handles += [plt.Line2D([], [], color="k", marker="|", ls="", label="median"),
                        plt.Line2D([], [], color="grey", marker="x", ls="", label="min / max"),
                        plt.Line2D([], [], color="red", lw=2, label="clamp")]
            fig.legend(handles=handles, fontsize=7, ncol=7, loc="lower center", frameon=False)
            fig.subplots_adjust(left=0.3, right=0.97, top=1 - 0.45 / height, bottom=1.05 / height)
            paths.append(_save(fig, os.path.join(out_dir, f"ranges_{name}.png"), plt))
    return paths


def plot_all(cfg, merged: dict, out_dir: str) -> list[str]:
    """Every plot of a :func:`taggerflow.scaling.merge.merge_jobs` result into ``out_dir``; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    return plot_convergence(cfg, merged["snapshots"], out_dir) + \
        plot_ranges(cfg, merged["scaling"], merged["quantiles"], merged["report"]["flags"], out_dir)
