"""Recurrent lwtnn layers (``lstm``, ``gru``) for :mod:`taggerflow.lwtnn_eval`, as lwtnn's
``src/Stack.cxx`` computes them (``LSTMLayer::step``, ``GRULayer::step``; zero initial state, every
given step run in order, no masking), and its ``sequence`` graph node (``src/Graph.cxx``
``SequenceNode::compute``: the last step's output, zeros for an empty sequence). Per gate,
``weights`` is ``[n_out][n_in]`` row-major, ``U`` ``[n_out][n_out]``, ``bias`` ``[n_out]``:

* lstm (gates ``i``, ``f``, ``o`` use ``inner_activation``, ``c`` uses ``activation``)::

    i = inner(W_i x + b_i + U_i h);  f = inner(W_f x + b_f + U_f h);  o = inner(W_o x + b_o + U_o h)
    C = f * C + i * act(W_c x + b_c + U_c h);  h = o * act(C)

* gru::

    z = inner(W_z x + b_z + U_z h);  r = inner(W_r x + b_r + U_r h)
    h = z * h + (1 - z) * act(W_h x + b_h + U_h (r * h))
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from taggerflow.lwtnn_eval_primitives import activation_function, component as _component, matrix as _matrix

GATES = {"lstm": "ifco", "gru": "zrh"}


def _gate(comps: Mapping[str, Any], gate: str, n_in: int, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if gate not in comps:
        raise ValueError(f"{where}: missing component {gate!r}")
    comp = comps[gate]
    W, b = _component(comp, n_in, f"{where} {gate}")
    if "U" not in comp:
        raise ValueError(f"{where} {gate}: needs 'U' (recurrent weights)")
    U = _matrix(comp["U"], W.shape[0], f"{where} {gate} U")
    if U.shape != (W.shape[0], W.shape[0]):
        raise ValueError(f"{where} {gate}: U of shape {U.shape} for {W.shape[0]} outputs")
    return W, U, b


def build_recurrent(layer: Mapping[str, Any], n_in: int, where: str = "layer") -> tuple[Callable, int]:
    """(``final(steps (N, T, n_in), counts (N,)) -> (N, n_out)``, n_out): candidate k runs its first
    ``counts[k]`` steps only; the state after its last one (zeros if none) is its output."""
    arch = layer.get("architecture")
    if arch not in GATES:
        raise ValueError(f"{where}: recurrent architecture {arch!r} is not supported by this evaluator "
                         f"(supported: {sorted(GATES)})")
    comps = layer.get("components") or {}
    for key in ("activation", "inner_activation"):
        if key not in layer:
            raise ValueError(f"{where}: {arch} needs {key!r}")
    act = activation_function(layer["activation"], f"{where} activation")
    inner = activation_function(layer["inner_activation"], f"{where} inner_activation")
    gates = {g: _gate(comps, g, n_in, where) for g in GATES[arch]}
    n_out = {W.shape[0] for W, _, _ in gates.values()}
    if len(n_out) != 1:
        raise ValueError(f"{where}: gates of different widths {sorted(n_out)}")
    n_out = n_out.pop()

    def pre(g: str, x: np.ndarray, h: np.ndarray) -> np.ndarray:
        W, U, b = gates[g]
        return x @ W.T + b + h @ U.T

    def final(steps: np.ndarray, counts: np.ndarray) -> np.ndarray:
        n = counts.size
        h = np.zeros((n, n_out))
        c = np.zeros((n, n_out))
        for t in range(steps.shape[1] if steps.ndim == 3 else 0):
            live = (counts > t)[:, None]
            x = steps[:, t]
            if arch == "lstm":
                i, f, o = inner(pre("i", x, h)), inner(pre("f", x, h)), inner(pre("o", x, h))
                c_new = f * c + i * act(pre("c", x, h))
                h_new = o * act(c_new)
                c = np.where(live, c_new, c)
            else:
                z, r = inner(pre("z", x, h)), inner(pre("r", x, h))
                W, U, b = gates["h"]
                hh = act(x @ W.T + b + (r * h) @ U.T)
                h_new = z * h + (1.0 - z) * hh
            h = np.where(live, h_new, h)
        return h
    return final, n_out


def pad_flat(flat: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Flat real constituents + counts -> ``(N, max T, n)`` (zero padded; the padding is never run)."""
    counts = np.asarray(counts, dtype=np.int64)
    out = np.zeros((counts.size, int(counts.max()) if counts.size else 0, flat.shape[1]))
    rows = np.repeat(np.arange(counts.size), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if counts.size else counts
    cols = np.arange(flat.shape[0]) - np.repeat(starts, counts)
    out[rows, cols] = flat
    return out
