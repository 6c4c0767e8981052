"""Independent numpy (float64) evaluator of lwtnn JSON files, written from the format description
(``shared/references/lwtnn-json-format.md``, lwtnn 2.14.1), not from the converter. It never imports
Keras or TensorFlow.

* :class:`LwtnnGraph`: graph format, ``lwt::LightweightGraph::compute`` semantics. Node types
  ``input``, ``input_sequence``, ``feed_forward``, ``time_distributed``, ``sum``, ``concatenate``,
  ``add``, and ``sequence`` with ``lstm``/``gru`` layers (:mod:`taggerflow.lwtnn_eval_rnn`).
* :class:`LwtnnSequential`: sequential format, ``lwt::LightweightNeuralNetwork`` semantics.

Layers: ``dense``, ``normalization``, ``maxout``, ``highway``; every activation of lwtnn in string
or ``{"function", "alpha"}`` form. Where lwtnn would silently produce NaN (``"leakyrelu"`` or
``"swish"`` as plain strings, whose alpha is then NaN) a ValueError is raised instead. Inputs are
preprocessed as ``x' = (x + offset) * scale``. Numbers may be JSON numbers or strings, as in lwtnn.

``compute`` evaluates one candidate from name-keyed maps (like lwtnn); ``compute_batch`` evaluates
many at once from arrays, with the sequences given flat (the real constituents of all candidates one
after the other) plus a count per candidate; :func:`flatten_padded` builds those from padded arrays.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping

import numpy as np

# the format's numbers, activations and weight blocks, shared with the recurrent layers
from taggerflow.lwtnn_eval_primitives import activation_function  # noqa: F401  (public: lwtnn_eval.activation_function)
from taggerflow.lwtnn_eval_primitives import component as _component, matrix as _matrix, sigmoid as _sigmoid, vector as _vec

__all__ = ["LwtnnGraph", "LwtnnSequential", "flatten_padded", "activation_function", "segment_sum"]

Array = np.ndarray
_RECURRENT = ("lstm", "gru", "simplernn", "conv1d", "embedding")


def _load(config: Mapping[str, Any] | str | os.PathLike) -> Mapping[str, Any]:
    if isinstance(config, Mapping):
        return config
    with open(config) as handle:
        return json.load(handle)


# ----------------------------------------------------------------------------------------------
# layers: each built for a given input width into f(x[..., n_in]) -> y[..., n_out]


def build_layer(layer: Mapping[str, Any], n_in: int, where: str = "layer") -> tuple[Callable[[Array], Array], int]:
    """Build one lwtnn LAYER for inputs of width ``n_in``; returns (function, output width)."""
    if not isinstance(layer, Mapping) or "architecture" not in layer:
        raise ValueError(f"{where}: no 'architecture'")
    arch = layer["architecture"]
    if arch == "dense":
        if "weights" not in layer or "bias" not in layer:
            raise ValueError(f"{where}: a dense layer needs 'weights' and 'bias' (possibly [])")
        if "activation" not in layer:
            raise ValueError(f"{where}: a dense layer without 'activation' (lwtnn: 'Got undefined activation "
                             "function'); use \"linear\"")
        act = activation_function(layer["activation"], f"{where} activation")
        n_out = n_in
        W = None
        if len(layer["weights"]) > 0:
            W = _matrix(layer["weights"], n_in, where)
            n_out = W.shape[0]
        b = _vec(layer["bias"], f"{where} bias") if len(layer["bias"]) > 0 else None
        if b is not None and b.size != n_out:
            raise ValueError(f"{where}: tried to add a bias layer with {b.size} entries, previous layer had "
                             f"{n_out} outputs")

        def dense(x: Array) -> Array:
            if W is not None:
                x = x @ W.T
            if b is not None:
                x = x + b
            return act(x)
        return dense, n_out
    if arch == "normalization":
        if "weights" not in layer or "bias" not in layer:
            raise ValueError(f"{where}: a normalization layer needs 'weights' and 'bias'")
        w, b = _vec(layer["weights"], f"{where} weights"), _vec(layer["bias"], f"{where} bias")
        if w.size < 1 or w.size != b.size:
            raise ValueError(f"{where}: normalization weights ({w.size}) and bias ({b.size}) must be equal, non-empty")
        if w.size != n_in:
            raise ValueError(f"{where}: normalization of {w.size} features applied to {n_in}")
        return (lambda x: w * (x + b)), n_in
    if arch == "maxout":
        subs = layer.get("sublayers") or []
        if not subs:
            raise ValueError(f"{where}: maxout without sublayers")
        units = [_component(s, n_in, f"{where} sublayer {k}") for k, s in enumerate(subs)]
        if len({W.shape[0] for W, _ in units}) != 1:
            raise ValueError(f"{where}: uneven matrices for maxout")

        def maxout(x: Array) -> Array:
            return np.max(np.stack([x @ W.T + b for W, b in units]), axis=0)
        return maxout, units[0][0].shape[0]
    if arch == "highway":
        comps = layer.get("components") or {}
        if "t" not in comps or "carry" not in comps or "activation" not in layer:
            raise ValueError(f"{where}: highway needs components 't', 'carry' and an activation")
        Wt, bt = _component(comps["t"], n_in, f"{where} t")
        Wc, bc = _component(comps["carry"], n_in, f"{where} carry")
        if Wt.shape[0] != n_in or Wc.shape[0] != n_in:
            raise ValueError(f"{where}: highway matrices must be {n_in}x{n_in}")
        act = activation_function(layer["activation"], f"{where} activation")

        def highway(x: Array) -> Array:
            c = _sigmoid(x @ Wc.T + bc)
            return c * act(x @ Wt.T + bt) + (1.0 - c) * x
        return highway, n_in
    if arch in _RECURRENT:
        raise ValueError(f"{where}: architecture {arch!r} (recurrent/sequence layers) is not supported "
                         "by this evaluator")
    raise ValueError(f"{where}: architecture {arch!r} not recognized")


# ----------------------------------------------------------------------------------------------
# inputs


class _InputBlock:
    def __init__(self, block: Mapping[str, Any], where: str) -> None:
        if "name" not in block or "variables" not in block:
            raise ValueError(f"{where}: needs 'name' and 'variables'")
        self.name = str(block["name"])
        self.variables = [str(v["name"]) for v in block["variables"]]
        if len(set(self.variables)) != len(self.variables):
            raise ValueError(f"{where} {self.name!r}: duplicate variable names")
        self.offset = np.asarray([float(v["offset"]) for v in block["variables"]], dtype=np.float64)
        self.scale = np.asarray([float(v["scale"]) for v in block["variables"]], dtype=np.float64)

    def preprocess(self, x: Array) -> Array:
        return (x + self.offset) * self.scale

    def from_map(self, values: Mapping[str, Any], what: str) -> list[Any]:
        out = []
        for var in self.variables:
            if var not in values:
                raise KeyError(f"can't find input: {var!r} (variable of {what} {self.name!r})")
            out.append(values[var])
        return out


def segment_sum(values: Array, counts: Array) -> Array:
    """Sums of consecutive row blocks of ``values`` of lengths ``counts`` (zeros for empty blocks)."""
    counts = np.asarray(counts, dtype=np.int64)
    out = np.zeros((counts.size,) + values.shape[1:], dtype=np.float64)
    nonempty = counts > 0
    if values.shape[0] and np.any(nonempty):
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        out[nonempty] = np.add.reduceat(values, starts[nonempty], axis=0)
    return out


def flatten_padded(values: Array, valid: Array) -> tuple[Array, Array]:
    """``(N, n_max, n_vars)`` padded constituents + ``(N, n_max)`` 0/1 mask -> (flat real constituents
    ``(sum T_i, n_vars)`` in candidate order, counts ``(N,)``), as :meth:`LwtnnGraph.compute_batch` takes them."""
    values = np.asarray(values)
    keep = np.asarray(valid) > 0.5
    if values.ndim != 3 or keep.shape != values.shape[:2]:
        raise ValueError(f"flatten_padded: values {values.shape} and valid {keep.shape} do not match")
    return values[keep], keep.sum(axis=1)


def _check_counts(counts: Any, n_rows: int, where: str) -> Array:
    counts = np.asarray(counts)
    if counts.ndim != 1 or (counts.size and not np.issubdtype(counts.dtype, np.integer)) or np.any(counts < 0):
        raise ValueError(f"{where}: counts must be a 1-D array of non-negative integers")
    if int(counts.sum()) != n_rows:
        raise ValueError(f"{where}: counts sum to {int(counts.sum())} but {n_rows} constituent rows were given")
    return counts.astype(np.int64)


# ----------------------------------------------------------------------------------------------
# graph


class LwtnnGraph:
    """Evaluate an lwtnn graph-format network (``LightweightGraph``) in float64 numpy."""

    def __init__(self, config: Mapping[str, Any] | str | os.PathLike) -> None:
        cfg = _load(config)
        for key in ("inputs", "input_sequences", "nodes", "layers", "outputs"):
            if key not in cfg:
                raise ValueError(f"lwtnn graph: missing required key {key!r}")
        self.config = cfg
        self.inputs = [_InputBlock(b, "inputs") for b in cfg["inputs"]]
        self.sequences = [_InputBlock(b, "input_sequences") for b in cfg["input_sequences"]]
        self.layers = list(cfg["layers"])
        self.nodes = [dict(n) for n in cfg["nodes"]]
        self.outputs = {str(name): (list(map(str, o["labels"])), int(o["node_index"]))
                        for name, o in cfg["outputs"].items()}
        self._kind: dict[int, str] = {}
        self._width: dict[int, int] = {}
        self._fn: dict[int, Callable[[Array], Array]] = {}
        self._built_layers: dict[int, tuple[int, Callable, int]] = {}
        for i in range(len(self.nodes)):   # lwtnn builds every node, used or not
            self._build(i, ())
        for name, (labels, idx) in self.outputs.items():
            if idx < 0 or idx >= len(self.nodes):
                raise ValueError(f"output {name!r}: no node {idx}")
            if self._kind[idx] != "vector":
                raise ValueError(f"output {name!r}: node {idx} is a sequence")
            if len(labels) != self._width[idx]:
                raise ValueError(f"output {name!r}: {len(labels)} labels for a node of width {self._width[idx]}")

    # -- structure ------------------------------------------------------------------------------
    def _layer(self, index: int, n_in: int, where: str) -> tuple[Callable[[Array], Array], int]:
        if not 0 <= index < len(self.layers):
            raise ValueError(f"{where}: no layer number {index}")
        if index in self._built_layers:
            built_in, fn, n_out = self._built_layers[index]
            if built_in != n_in:
                raise ValueError(f"{where}: layer {index} used with input widths {built_in} and {n_in}")
            return fn, n_out
        fn, n_out = build_layer(self.layers[index], n_in, f"layer {index}")
        self._built_layers[index] = (n_in, fn, n_out)
        return fn, n_out

    def _recurrent(self, index: int, n_in: int, where: str) -> tuple[Callable, int]:
        from taggerflow.lwtnn_eval_rnn import build_recurrent  # noqa: PLC0415

        if not 0 <= index < len(self.layers):
            raise ValueError(f"{where}: no layer number {index}")
        return build_recurrent(self.layers[index], n_in, f"layer {index}")

    def _build(self, i: int, stack: tuple[int, ...]) -> None:
        if i in self._kind:
            return
        if i < 0 or i >= len(self.nodes):
            raise ValueError(f"lwtnn graph: no node index {i}")
        if i in stack:
            raise ValueError("lwtnn graph: found cycle in graph")
        node = self.nodes[i]
        where = f"node {i}"
        ntype = node.get("type")
        sources = [int(s) for s in node.get("sources", [])]
        if any(s < 0 for s in sources):
            raise ValueError(f"{where}: node source number must be positive")
        node["sources"] = sources
        if ntype in ("input", "input_sequence"):
            blocks = self.inputs if ntype == "input" else self.sequences
            if len(sources) != 1 or not 0 <= sources[0] < len(blocks):
                raise ValueError(f"{where}: {ntype} node needs one valid source, got {sources}")
            size = int(node["size"])
            if size != len(blocks[sources[0]].variables):
                raise ValueError(f"{where}: size {size} but {len(blocks[sources[0]].variables)} variables")
            self._kind[i] = "vector" if ntype == "input" else "sequence"
            self._width[i] = size
            return
        for s in sources:
            self._build(s, stack + (i,))
        kinds = [self._kind[s] for s in sources]
        widths = [self._width[s] for s in sources]
        if ntype in ("feed_forward", "time_distributed"):
            want = "vector" if ntype == "feed_forward" else "sequence"
            if len(sources) != 1 or kinds[0] != want:
                raise ValueError(f"{where}: {ntype} needs one {want} source")
            fn, n_out = self._layer(int(node["layer_index"]), widths[0], where)
            self._fn[i] = fn
            self._kind[i], self._width[i] = want, n_out
        elif ntype == "sum":
            if len(sources) != 1 or kinds[0] != "sequence":
                raise ValueError(f"{where}: sum needs one sequence source")
            self._kind[i], self._width[i] = "vector", widths[0]
        elif ntype in ("concatenate", "add"):
            if not sources or any(k != "vector" for k in kinds):
                raise ValueError(f"{where}: {ntype} needs vector sources")
            if ntype == "add" and len(set(widths)) != 1:
                raise ValueError(f"{where}: add of different widths {widths}")
            self._kind[i] = "vector"
            self._width[i] = sum(widths) if ntype == "concatenate" else widths[0]
        elif ntype == "sequence":  # lstm/gru (taggerflow.lwtnn_eval_rnn), read as its final state
            if len(sources) != 1 or kinds[0] != "sequence":
                raise ValueError(f"{where}: sequence needs one sequence source")
            fn, n_out = self._recurrent(int(node["layer_index"]), widths[0], where)
            self._fn[i] = fn
            self._kind[i], self._width[i] = "vector", n_out
        else:
            raise ValueError(f"{where}: no node type {ntype!r}")

    def _output(self, output: str | None) -> tuple[str, list[str], int]:
        if output is None:
            if len(self.outputs) != 1:
                raise ValueError(f"several outputs {sorted(self.outputs)}: name the one to compute")
            output = next(iter(self.outputs))
        if output not in self.outputs:
            raise KeyError(f"no output {output!r} (have {sorted(self.outputs)})")
        labels, idx = self.outputs[output]
        return output, labels, idx

    # -- evaluation -----------------------------------------------------------------------------
    def _evaluate(self, idx: int, vectors: list[Array], seqs: list[tuple[Array, Array]],
                  memo: dict[int, Any]) -> Any:
        """Batched: vector nodes (N, w); sequence nodes (flat (S, w), counts (N,))."""
        if idx in memo:
            return memo[idx]
        node = self.nodes[idx]
        ntype, sources = node["type"], node["sources"]
        if ntype == "input":
            value = vectors[sources[0]]
        elif ntype == "input_sequence":
            value = seqs[sources[0]]
        elif ntype == "feed_forward":
            value = self._fn[idx](self._evaluate(sources[0], vectors, seqs, memo))
        elif ntype == "time_distributed":
            flat, counts = self._evaluate(sources[0], vectors, seqs, memo)
            value = (self._fn[idx](flat), counts)
        elif ntype == "sum":
            flat, counts = self._evaluate(sources[0], vectors, seqs, memo)
            value = segment_sum(flat, counts)
        elif ntype == "sequence":
            from taggerflow.lwtnn_eval_rnn import pad_flat  # noqa: PLC0415

            flat, counts = self._evaluate(sources[0], vectors, seqs, memo)
            value = self._fn[idx](pad_flat(flat, counts), counts)
        elif ntype == "concatenate":
            value = np.concatenate([self._evaluate(s, vectors, seqs, memo) for s in sources], axis=-1)
        else:  # add
            value = sum(self._evaluate(s, vectors, seqs, memo) for s in sources)
        memo[idx] = value
        return value

    def _evaluate_one(self, idx: int, vectors: list[Array], seqs: list[Array], memo: dict[int, Array]) -> Array:
        """One candidate, as lwtnn does it: vector nodes (w,), sequence nodes (T, w)."""
        if idx in memo:
            return memo[idx]
        node = self.nodes[idx]
        ntype, sources = node["type"], node["sources"]
        if ntype == "input":
            value = vectors[sources[0]]
        elif ntype == "input_sequence":
            value = seqs[sources[0]]
        elif ntype == "feed_forward":
            value = self._fn[idx](self._evaluate_one(sources[0], vectors, seqs, memo))
        elif ntype == "time_distributed":
            steps = self._evaluate_one(sources[0], vectors, seqs, memo)
            value = np.stack([self._fn[idx](step) for step in steps]) if len(steps) else \
                np.zeros((0, self._width[idx]))
        elif ntype == "sequence":
            steps = self._evaluate_one(sources[0], vectors, seqs, memo)
            value = self._fn[idx](np.asarray(steps, dtype=np.float64).reshape(1, len(steps), self._width[sources[0]]),
                                  np.array([len(steps)]))[0]
        elif ntype == "sum":
            steps = self._evaluate_one(sources[0], vectors, seqs, memo)
            total = np.zeros(self._width[idx])
            for step in steps:
                total = total + step
            value = total
        elif ntype == "concatenate":
            value = np.concatenate([self._evaluate_one(s, vectors, seqs, memo) for s in sources])
        else:  # add
            value = sum(self._evaluate_one(s, vectors, seqs, memo) for s in sources)
        memo[idx] = value
        return value

    def compute(self, inputs: Mapping[str, Mapping[str, float]],
                sequences: Mapping[str, Mapping[str, Any]] | None = None,
                output: str | None = None) -> dict[str, float]:
        """One candidate: ``inputs[node][variable]`` floats, ``sequences[node][variable]`` arrays of the
        T real constituents (T may be 0). Returns ``{label: score}``. Like lwtnn, every input node and
        every sequence node must be given, a sequence node's map must not be empty (``Empty input map``:
        zero constituents are empty vectors), variables are looked up by name (KeyError naming a missing
        one); extras are ignored. Inputs are used as given: non-finite values propagate, as in lwtnn
        (apply the input recipe, :func:`taggerflow.scaling.apply_raw_recipe`, first)."""
        _, labels, idx = self._output(output)
        sequences = sequences or {}
        vectors = []
        for block in self.inputs:
            if block.name not in inputs:
                raise KeyError(f"can't find input node: {block.name!r}")
            vectors.append(block.preprocess(_vec(block.from_map(inputs[block.name], "input node"), block.name)))
        seqs = []
        for block in self.sequences:
            if block.name not in sequences:
                raise KeyError(f"can't find input sequence node: {block.name!r}")
            if not sequences[block.name] and block.variables:  # lwtnn's own refusal, with its message
                raise ValueError(f"input sequence node {block.name!r}: Empty input map (pass every variable, "
                                 f"with empty vectors for zero constituents)")
            columns = [np.asarray(c, dtype=np.float64).reshape(-1)
                       for c in block.from_map(sequences[block.name], "input sequence node")]
            lengths = {c.size for c in columns}
            if len(lengths) > 1:
                raise ValueError(f"input sequence {block.name!r}: variables of different lengths {sorted(lengths)}")
            matrix = np.stack(columns, axis=1) if columns else np.zeros((0, 0))
            seqs.append(block.preprocess(matrix))
        scores = self._evaluate_one(idx, vectors, seqs, {})
        return {label: float(v) for label, v in zip(labels, scores)}

    def compute_batch(self, inputs: Mapping[str, Any],
                      sequences: Mapping[str, tuple[Any, Any]] | None = None,
                      output: str | None = None) -> Array:
        """Many candidates: ``inputs[node]`` raw values ``(N, n_vars)`` in the node's variable order;
        ``sequences[node] = (flat (sum T_i, n_vars), counts (N,))``. Returns ``(N, n_labels)`` float64."""
        _, labels, idx = self._output(output)
        sequences = sequences or {}
        n = None
        vectors, seqs = [], []

        def check_n(value: int, where: str) -> None:
            nonlocal n
            if n is None:
                n = value
            elif value != n:
                raise ValueError(f"{where}: {value} candidates, other inputs have {n}")

        for block in self.inputs:
            if block.name not in inputs:
                raise KeyError(f"can't find input node: {block.name!r}")
            x = np.asarray(inputs[block.name], dtype=np.float64)
            if x.ndim != 2 or x.shape[1] != len(block.variables):
                raise ValueError(f"input {block.name!r}: expected (N, {len(block.variables)}), got {x.shape}")
            check_n(x.shape[0], f"input {block.name!r}")
            vectors.append(block.preprocess(x))
        for block in self.sequences:
            if block.name not in sequences:
                raise KeyError(f"can't find input sequence node: {block.name!r}")
            flat, counts = sequences[block.name]
            flat = np.asarray(flat, dtype=np.float64)
            if flat.ndim != 2 or flat.shape[1] != len(block.variables):
                raise ValueError(f"input sequence {block.name!r}: expected (sum T, {len(block.variables)}), "
                                 f"got {flat.shape}")
            counts = _check_counts(counts, flat.shape[0], f"input sequence {block.name!r}")
            check_n(counts.size, f"input sequence {block.name!r}")
            seqs.append((block.preprocess(flat), counts))
        scores = self._evaluate(idx, vectors, seqs, {})
        return np.asarray(scores, dtype=np.float64).reshape(-1, len(labels))


# ----------------------------------------------------------------------------------------------
# sequential


class LwtnnSequential:
    """Evaluate an lwtnn sequential-format network (``LightweightNeuralNetwork``) in float64 numpy."""

    def __init__(self, config: Mapping[str, Any] | str | os.PathLike) -> None:
        cfg = _load(config)
        for key in ("inputs", "layers", "outputs"):
            if key not in cfg:
                raise ValueError(f"lwtnn sequential: missing required key {key!r}")
        self.config = cfg
        self.block = _InputBlock({"name": "inputs", "variables": cfg["inputs"]}, "inputs")
        self.labels = [str(o) for o in cfg["outputs"]]
        width = len(self.block.variables)
        self._fns = []
        for k, layer in enumerate(cfg["layers"]):
            fn, width = build_layer(layer, width, f"layer {k}")
            self._fns.append(fn)
        if width != len(self.labels):
            raise ValueError(f"lwtnn sequential: {len(self.labels)} outputs for a last layer of width {width}")

    def _run(self, x: Array) -> Array:
        x = self.block.preprocess(x)
        for fn in self._fns:
            x = fn(x)
        return x

    def compute(self, inputs: Mapping[str, float]) -> dict[str, float]:
        """One candidate: ``{variable: value}`` (looked up by name) -> ``{label: score}``."""
        x = _vec(self.block.from_map(inputs, "input"), "inputs")
        return {label: float(v) for label, v in zip(self.labels, self._run(x))}

    def compute_batch(self, inputs: Any) -> Array:
        """``(N, n_vars)`` raw values in the variable order -> ``(N, n_outputs)`` float64."""
        x = np.asarray(inputs, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.block.variables):
            raise ValueError(f"inputs: expected (N, {len(self.block.variables)}), got {x.shape}")
        return self._run(x)
