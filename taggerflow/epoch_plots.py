"""The per-epoch plots of the adversarial training (taggerflow.adversarial), drawn off the
training's critical path.

Each epoch the training writes the plots' inputs (validation and control scores, labels, pT, the
history so far) to ``plot-inputs-epoch-<n>.npz`` in the checkpoint directory, before it commits the
epoch's state, and hands the file to :class:`EpochPlotter`: one helper process (spawned, so that it
never inherits TensorFlow's threads) draws the epoch's folder under a temporary name, renames it into
place and removes the inputs, while the next epoch trains. A file of inputs left beside a committed
state (a kill before its plots were done) is drawn when the training resumes; one of an epoch the
state does not hold is removed (that epoch runs again). The training waits for its last plots
before it returns, so the folders are those of an uninterrupted run, byte for byte.

Only numpy, matplotlib and taggerflow.utils are imported here (the helper starts in a second).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence

import numpy as np

from taggerflow.utils import atomic_path

INPUTS = re.compile(r"^plot-inputs-epoch-(\d{4})\.npz$")


def plot_epoch(folder: str, epoch: int, classes: Sequence[str], val_scores: np.ndarray, val_labels: np.ndarray,
               ctrl_scores: np.ndarray, ctrl_is_data: np.ndarray, ctrl_weights: np.ndarray, ctrl_pt,
               pt_edges, history: Sequence[dict]) -> list[str]:
    """The plots of one epoch: scores per true class (validation), data vs MC on the control
    validation sample (inclusive and in three pT bins, overlaid: one panel per output), and loss,
    accuracy, KS against epoch. Kept cheap (rendering the axes is most of the cost): few panels and
    ticks, histograms as steps of np.histogram, matplotlib's Figure without pyplot, 60 dpi."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogLocator, MaxNLocator, NullLocator

    os.makedirs(folder, exist_ok=True)
    bins = np.linspace(0, 1, 31)
    paths = []

    def figure(n_panels):
        fig = Figure(figsize=(4.2 * n_panels, 3.4))
        fig.subplots_adjust(bottom=0.16, top=0.88)   # room for the x labels and the title
        FigureCanvasAgg(fig)
        return fig, [fig.add_subplot(1, n_panels, i + 1) for i in range(n_panels)]

    def save(fig, name):
        # few ticks and no minor ones: creating tick artists is most of the drawing time
        for ax in fig.axes:
            for axis in (ax.xaxis, ax.yaxis):
                if axis.get_scale() == "log":
                    axis.set_major_locator(LogLocator(numticks=4))
                else:
                    axis.set_major_locator(MaxNLocator(4))
                axis.set_minor_locator(NullLocator())
        path = os.path.join(folder, name)
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=60)
        paths.append(path)

    def steps(ax, values, weights=None, **kw):
        h, _ = np.histogram(values, bins=bins, weights=weights)
        total = h.sum()
        if total > 0:
            ax.stairs(h / (total * np.diff(bins)), bins, **kw)

    n = len(classes)
    fig, axes = figure(n)
    for i, (ax, c) in enumerate(zip(axes, classes)):
        for j, t in enumerate(classes):
            steps(ax, val_scores[val_labels == j, i], label=f"true {t}")
        ax.set_xlabel(f"p({c})")
        ax.set_yscale("log")
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"validation, epoch {epoch}")
    save(fig, "scores.png")

    data = ctrl_is_data > 0.5
    ranges = [("inclusive", np.ones(len(data), bool))]
    if ctrl_pt is not None:
        pt = np.asarray(ctrl_pt)
        for k in range(3):
            lo, hi = pt_edges[k], pt_edges[k + 1]
            ranges.append((f"pT {lo:.3g}-{hi:.3g}", (pt >= lo) & ((pt < hi) if k < 2 else (pt <= hi))))
    fig, axes = figure(n)
    for i, (ax, c) in enumerate(zip(axes, classes)):
        for r, (label, sel) in enumerate(ranges):
            color = f"C{r}"
            steps(ax, ctrl_scores[sel & data, i], ctrl_weights[sel & data], color=color, label=f"data, {label}")
            steps(ax, ctrl_scores[sel & ~data, i], ctrl_weights[sel & ~data], color=color, linestyle="--",
                  label=f"MC, {label}")
        ax.set_xlabel(f"p({c})")
        ax.legend(fontsize=6, loc="upper right")
    fig.suptitle(f"control validation, data (solid) vs MC (dashed), epoch {epoch}")
    save(fig, "control.png")

    epochs = [int(r["epoch"]) for r in history]
    panels = [("loss", ["loss", "val_loss", "adv_loss", "val_adv_loss"]),
              ("accuracy", ["accuracy", "val_accuracy", "adv_accuracy", "val_adv_accuracy"]),
              ("KS data vs MC", [f"ks_{c}" for c in classes])]
    fig, axes = figure(3)
    for ax, (title, keys) in zip(axes, panels):
        for k in keys:
            ax.plot(epochs, [float(r[k]) for r in history], "-o", markersize=3, label=k)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend(fontsize=7, loc="upper right")
    save(fig, "history.png")
    return paths


def inputs_path(ckpt_dir: str, epoch: int) -> str:
    """The plots' inputs of ``epoch`` (0-based; the file and the folder count from 1)."""
    return os.path.join(ckpt_dir, f"plot-inputs-epoch-{epoch + 1:04d}.npz")


def write_inputs(path: str, folder: str, epoch: int, classes: Sequence[str], val_scores, val_labels, ctrl_scores,
                 ctrl_is_data, ctrl_weights, ctrl_pt, pt_edges, history: Sequence[dict]) -> None:
    """What :func:`plot_epoch` draws for one epoch, in one file (written whole or not at all)."""
    meta = {"folder": os.path.basename(folder), "epoch": int(epoch), "classes": list(classes),
            "history": [dict(r) for r in history]}
    arrays = {"val_scores": np.asarray(val_scores), "val_labels": np.asarray(val_labels),
              "ctrl_scores": np.asarray(ctrl_scores), "ctrl_is_data": np.asarray(ctrl_is_data),
              "ctrl_weights": np.asarray(ctrl_weights)}
    if ctrl_pt is not None:
        arrays["ctrl_pt"], arrays["pt_edges"] = np.asarray(ctrl_pt), np.asarray(pt_edges)
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.asarray(json.dumps(meta)), **arrays)


def draw_inputs(path: str, plots_dir: str) -> str:
    """The folder of the epoch whose inputs are ``path``, drawn under a temporary name and renamed
    into ``plots_dir``; then the inputs are removed. Returns the folder."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        arrays = {k: z[k] for k in z.files if k != "meta"}
    folder = os.path.join(plots_dir, meta["folder"])
    tmp = os.path.join(plots_dir, f".{meta['folder']}.part")
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    plot_epoch(tmp, meta["epoch"], meta["classes"], arrays["val_scores"], arrays["val_labels"],
               arrays["ctrl_scores"], arrays["ctrl_is_data"], arrays["ctrl_weights"], arrays.get("ctrl_pt"),
               arrays.get("pt_edges"), meta["history"])
    if os.path.exists(folder):
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    os.remove(path)
    return folder


def left_inputs(ckpt_dir: str) -> dict[int, str]:
    """{epoch (0-based): path} of the plots' inputs in ``ckpt_dir``."""
    out = {}
    for name in os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else ():
        m = INPUTS.match(name)
        if m:
            out[int(m.group(1)) - 1] = os.path.join(ckpt_dir, name)
    return out


def _die_with_parent() -> None:
    """The helper ends with the training's process (Linux: a SIGKILL of the training, as in a batch
    job's kill, must not leave it drawing into the folder a resumed training draws again)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class EpochPlotter:
    """Draws the epochs' plots in one helper process, in the order given; :meth:`wait` returns when
    all are done (and raises the first error of a drawing)."""

    def __init__(self, plots_dir: str):
        self.plots_dir = plots_dir
        self._pool = None
        self._pending = []

    def submit(self, path: str) -> None:
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            os.makedirs(self.plots_dir, exist_ok=True)
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_die_with_parent)
        self._pending.append(self._pool.submit(draw_inputs, path, self.plots_dir))

    def wait(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def close(self, wait: bool = True) -> None:
        try:
            if wait:
                self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=wait, cancel_futures=not wait)
                self._pool = None
