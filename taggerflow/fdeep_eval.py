"""Independent numpy evaluator of frugally-deep JSON files (as :mod:`taggerflow.fdeep` writes them).

It reads the document only (no Keras, no TensorFlow) and computes what ``fdeep::model::predict``
computes, following the loader's rules: the graph of ``architecture.config`` (layers called on the
tensors named by ``keras_history``, model inputs ``input_layers`` in order, outputs
``output_layers``), the parameters of ``trainable_params`` (float32; base64 or number arrays), and
for every layer other than ``Activation`` (and the recurrent layers, which use their activations
inside) an ``activation`` in its config applied after the layer, with that config's parameters
(``negative_slope`` of leaky_relu, default 0.2; ``alpha`` of elu, default 1). Arithmetic is in
float64 (frugally-deep computes in float32; the difference is far below the loader's 1e-4).

:meth:`FdeepModel.run_tests` evaluates the embedded test cases as the loader does on load.
:func:`inputs_from_raw` applies the input recipe documented under ``taggerflow`` (raw values ->
clamp to the raw bounds -> non-finite to the raw default -> (x - mean) / std; constituents padded
to n_max with a 0/1 mask), what C++ does before ``predict``.

Layer evaluators are registered per class name in :data:`EVALUATORS` (one registration per new
layer type). LSTM and GRU (both ``reset_after`` settings) follow ``recurrent_ops.hpp``: zero initial
state, gate blocks in Keras' order, activations of :func:`recurrent_activation`; a variable-length
sequence input (``null`` time dimension) is given per candidate (see :meth:`FdeepModel.predict`).
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

__all__ = ["FdeepModel", "EVALUATORS", "register_evaluator", "activation", "recurrent_activation", "inputs_from_raw",
           "load_fdeep"]

#: layers whose config ``activation`` is used inside the layer, not applied after it (the loader's list)
ACTIVATION_CONSUMERS = ("Activation", "LSTM", "GRU", "SimpleRNN", "Bidirectional", "ConvLSTM1D", "ConvLSTM2D",
                        "ConvLSTM3D")

LayerEvaluator = Callable[[Mapping[str, Any], Mapping[str, np.ndarray], list], np.ndarray]
EVALUATORS: dict[str, LayerEvaluator] = {}


def register_evaluator(*class_names: str) -> Callable[[LayerEvaluator], LayerEvaluator]:
    def deco(fn: LayerEvaluator) -> LayerEvaluator:
        for name in class_names:
            EVALUATORS[name] = fn
        return fn

    return deco


def _floats(data: Any) -> np.ndarray:
    """A float array of the file: plain numbers, or base64 float32 (a string or a list of chunks)."""
    if isinstance(data, list) and data and not isinstance(data[0], str):
        return np.asarray(data, dtype=np.float32).astype(np.float64)
    text = data if isinstance(data, str) else "".join(data)
    raw = base64.b64decode(text.encode("ascii"))
    if len(raw) % 4:
        raise ValueError(f"float array of {len(raw)} bytes is not a whole number of float32 values")
    return np.frombuffer(raw, dtype="<f4").astype(np.float64)


# ----------------------------------------------------------------------------------------------
# activations


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def activation(name: str, config: Mapping[str, Any], x: np.ndarray) -> np.ndarray:
    """frugally-deep's activation ``name``, parameters read from the layer ``config``."""
    if name == "linear":
        return x
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "sigmoid":
        return _sigmoid(x)
    if name == "tanh":
        return np.tanh(x)
    if name == "softmax":
        return _softmax(x)
    if name in ("silu", "swish"):
        return x * _sigmoid(x)
    if name == "elu":
        alpha = float(config.get("alpha", 1.0))
        return np.where(x >= 0, x, alpha * np.expm1(np.minimum(x, 0.0)))
    if name == "leaky_relu":
        slope = float(config.get("negative_slope", 0.2))
        return np.where(x > 0, x, slope * x)
    raise ValueError(f"activation {name!r} is not known to this evaluator")


# ----------------------------------------------------------------------------------------------
# layers (inputs and outputs with the batch axis first)


def _one(inputs: list, what: str) -> np.ndarray:
    if len(inputs) != 1:
        raise ValueError(f"{what}: expected one input tensor, got {len(inputs)}")
    return inputs[0]


@register_evaluator("Dense")
def _dense(config: Mapping, params: Mapping, inputs: list) -> np.ndarray:
    x = _one(inputs, "Dense")
    units = int(config["units"])
    weights = params["weights"]
    if weights.size % units:
        raise ValueError(f"Dense {config.get('name')!r}: {weights.size} weights for {units} units")
    kernel = weights.reshape(weights.size // units, units)
    bias = params["bias"] if config.get("use_bias", True) else np.zeros(units)
    if x.shape[-1] != kernel.shape[0]:
        raise ValueError(f"Dense {config.get('name')!r}: input has {x.shape[-1]} features, kernel {kernel.shape[0]}")
    return x @ kernel + bias


@register_evaluator("BatchNormalization")
def _batch_norm(config: Mapping, params: Mapping, inputs: list) -> np.ndarray:
    x = _one(inputs, "BatchNormalization")
    if int(config["axis"]) not in (-1, x.ndim - 1):
        raise ValueError(f"BatchNormalization {config.get('name')!r}: axis {config['axis']} is not the last")
    y = x - params["moving_mean"]
    if config.get("scale", True):
        y = y * params["gamma"]
    y = y / np.sqrt(params["moving_variance"] + float(config["epsilon"]))
    if config.get("center", True):
        y = y + params["beta"]
    return y


@register_evaluator("Activation")
def _activation_layer(config: Mapping, params: Mapping, inputs: list) -> np.ndarray:
    return activation(config["activation"], config, _one(inputs, "Activation"))


@register_evaluator("ReLU")
def _relu(config: Mapping, params: Mapping, inputs: list) -> np.ndarray:
    x = _one(inputs, "ReLU")
    if config.get("max_value") is None:  # the loader's plain relu
        return np.maximum(x, 0.0)
    top, slope, threshold = float(config["max_value"]), float(config["negative_slope"]), float(config["threshold"])
    return np.where(x >= top, top, np.where(x >= threshold, x, slope * (x - threshold)))


@register_evaluator("LeakyReLU")
def _leaky_relu(config: Mapping, params: Mapping, inputs: list) -> np.ndarray:
    return activation("leaky_relu", config, _one(inputs, "LeakyReLU"))


@register_evaluator("ELU")
def _elu(config: Mapping, params: Mapping, inputs: list) -> np.ndarray:
    return activation("elu", config, _one(inputs, "ELU"))


@register_evaluator("Softmax")
def _softmax_layer(config: Mapping, params: Mapping, inputs: list) -> np.ndarray:
    return _softmax(_one(inputs, "Softmax"))


@register_evaluator("Concatenate")
def _concatenate(config: Mapping, params: Mapping, inputs: list) -> np.ndarray:
    return np.concatenate(inputs, axis=int(config["axis"]))  # Keras axes count the batch axis


@register_evaluator("Add")
def _add(config: Mapping, params: Mapping, inputs: list) -> np.ndarray:
    return np.sum(np.stack(inputs), axis=0)


@register_evaluator("RepeatVector")
def _repeat_vector(config: Mapping, params: Mapping, inputs: list) -> np.ndarray:
    x = _one(inputs, "RepeatVector")
    return np.repeat(x[:, None, :], int(config["n"]), axis=1)


@register_evaluator("Dot")
def _dot(config: Mapping, params: Mapping, inputs: list) -> np.ndarray:
    """Keras' batch dot: contract axis axes[0] of a with axis axes[1] of b (axes count the batch
    axis); the result holds a's remaining axes, then b's."""
    if len(inputs) != 2:
        raise ValueError("Dot: expected two input tensors")
    if config.get("normalize", False):
        raise ValueError("Dot: normalize=True is not supported by this evaluator")
    axes = config["axes"]
    axes = [axes, axes] if isinstance(axes, int) else list(axes)
    a, b = inputs
    ax_a, ax_b = (int(x) % t.ndim for x, t in zip(axes, (a, b)))
    a2 = np.moveaxis(a, ax_a, -1)
    b2 = np.moveaxis(b, ax_b, 1)
    rest_a, rest_b = a2.shape[1:-1], b2.shape[2:]
    k = a2.shape[-1]
    out = a2.reshape(len(a), -1, k) @ b2.reshape(len(b), k, -1)
    shape = (len(a),) + tuple(rest_a) + tuple(rest_b)
    return out.reshape(shape if len(shape) > 1 else (len(a), 1))


def recurrent_activation(name: str, x: np.ndarray) -> np.ndarray:
    """An activation inside LSTM/GRU: frugally-deep's ``get_activation_func`` (recurrent_ops.hpp),
    which takes no parameters (elu with alpha 1; hard_sigmoid is Keras 3's x/6 + 1/2 clipped to [0, 1])."""
    if name in ("linear", "tanh", "sigmoid", "relu", "silu", "swish"):
        return activation(name, {}, x)
    if name == "hard_sigmoid":
        return np.clip(x / 6.0 + 0.5, 0.0, 1.0)
    if name == "elu":
        return np.where(x >= 0, x, np.expm1(np.minimum(x, 0.0)))
    if name == "selu":
        alpha, scale = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
        return scale * np.where(x >= 0, x, alpha * np.expm1(np.minimum(x, 0.0)))
    if name == "softsign":
        return x / (np.abs(x) + 1.0)
    raise ValueError(f"recurrent activation {name!r} is not known to this evaluator")


def _recurrent_params(kind: str, config: Mapping, params: Mapping, x: np.ndarray, n_gates: int):
    """(kernel, recurrent kernel, input bias, recurrent bias, activation, recurrent activation) with
    the loader's defaults (tanh, sigmoid, use_bias true, GRU reset_after true)."""
    name = config.get("name")
    if config.get("return_state", False):
        raise ValueError(f"{kind} {name!r}: return_state is not supported by this evaluator")
    if x.ndim != 3:
        raise ValueError(f"{kind} {name!r}: input of shape {x.shape}, expected (batch, T, n)")
    units = int(config["units"])
    width = n_gates * units
    kernel, recurrent = params["weights"], params["recurrent_weights"]
    if kernel.size != x.shape[-1] * width or recurrent.size != units * width:
        raise ValueError(f"{kind} {name!r}: {kernel.size} weights / {recurrent.size} recurrent weights for "
                         f"{x.shape[-1]} inputs and {n_gates} gates of {units} units")
    kernel, recurrent = kernel.reshape(-1, width), recurrent.reshape(units, width)
    reset_after = kind == "GRU" and bool(config.get("reset_after", True))
    bias_x, bias_h = np.zeros(width), np.zeros(width)
    if config.get("use_bias", True):
        bias = params["bias"]
        if bias.size != (2 * width if reset_after else width):
            raise ValueError(f"{kind} {name!r}: {bias.size} biases (reset_after={reset_after})")
        bias_x = bias[:width]
        if reset_after:
            bias_h = bias[width:]
    act = config.get("activation", "tanh")
    rec_act = config.get("recurrent_activation", "sigmoid")
    return kernel, recurrent, bias_x, bias_h, act, rec_act, units, reset_after


@register_evaluator("LSTM")
def _lstm(config: Mapping, params: Mapping, inputs: list) -> np.ndarray:
    """recurrent_ops.hpp ``lstm_impl``: gates i, f, c, o; c = f c + i act(.), h = o act(c); zero start."""
    x = _one(inputs, "LSTM")
    kernel, recurrent, bias, _, act, rec_act, n, _ = _recurrent_params("LSTM", config, params, x, 4)
    xw = x @ kernel + bias
    h = np.zeros((len(x), n))
    c = np.zeros((len(x), n))
    steps = []
    for t in range(x.shape[1]):
        z = xw[:, t] + h @ recurrent
        i, f = recurrent_activation(rec_act, z[:, :n]), recurrent_activation(rec_act, z[:, n:2 * n])
        g, o = recurrent_activation(act, z[:, 2 * n:3 * n]), recurrent_activation(rec_act, z[:, 3 * n:])
        c = f * c + i * g
        h = o * recurrent_activation(act, c)
        steps.append(h)
    if config.get("return_sequences", False):
        return np.stack(steps, axis=1) if steps else np.zeros((len(x), 0, n))
    return h


@register_evaluator("GRU")
def _gru(config: Mapping, params: Mapping, inputs: list) -> np.ndarray:
    """recurrent_ops.hpp ``gru_impl``: gates z, r, h; reset_after: h~ = act(x W_h + b_h + r (h U_h +
    b'_h)), else h~ = act(x W_h + b_h + (r h) U_h); h = z h + (1 - z) h~; zero start."""
    x = _one(inputs, "GRU")
    kernel, recurrent, bias_x, bias_h, act, rec_act, n, reset_after = _recurrent_params("GRU", config, params, x, 3)
    xw = x @ kernel + bias_x
    h = np.zeros((len(x), n))
    steps = []
    for t in range(x.shape[1]):
        if reset_after:
            uh = h @ recurrent + bias_h
            z = recurrent_activation(rec_act, xw[:, t, :n] + uh[:, :n])
            r = recurrent_activation(rec_act, xw[:, t, n:2 * n] + uh[:, n:2 * n])
            m = recurrent_activation(act, xw[:, t, 2 * n:] + r * uh[:, 2 * n:])
        else:
            z = recurrent_activation(rec_act, xw[:, t, :n] + h @ recurrent[:, :n])
            r = recurrent_activation(rec_act, xw[:, t, n:2 * n] + h @ recurrent[:, n:2 * n])
            m = recurrent_activation(act, xw[:, t, 2 * n:] + (r * h) @ recurrent[:, 2 * n:])
        h = (1.0 - z) * m + z * h
        steps.append(h)
    if config.get("return_sequences", False):
        return np.stack(steps, axis=1) if steps else np.zeros((len(x), 0, n))
    return h


# ----------------------------------------------------------------------------------------------
# the model


def _history(ref: Any) -> str:
    try:
        return str(ref["config"]["keras_history"][0])
    except (KeyError, TypeError, IndexError):
        raise ValueError(f"inbound tensor without keras_history: {ref!r}") from None


class FdeepModel:
    """A frugally-deep document ready to evaluate (``doc``: the parsed JSON or a path)."""

    def __init__(self, doc: Mapping[str, Any] | str | os.PathLike) -> None:
        if not isinstance(doc, Mapping):
            with open(doc) as f:
                doc = json.load(f)
        self.doc = doc
        if doc.get("image_data_format") != "channels_last":
            raise ValueError("image_data_format: frugally-deep accepts channels_last only")
        config = doc["architecture"]["config"]
        self.layers = {}
        for entry in config["layers"]:
            name = entry["name"]
            if name in self.layers:
                raise ValueError(f"layer {name!r} appears twice")
            nodes = entry.get("inbound_nodes") or []
            if len(nodes) > 1:
                raise ValueError(f"layer {name!r}: called more than once (not written by taggerflow)")
            sources: list[str] = []
            if nodes:
                args = nodes[0]["args"]
                refs = args[0] if args and isinstance(args[0], list) else args
                sources = [_history(r) for r in refs]
            cls = entry["class_name"]
            if cls != "InputLayer" and cls not in EVALUATORS:
                raise ValueError(f"layer {name!r}: class {cls} is not known to this evaluator")
            self.layers[name] = (cls, entry.get("config") or {}, sources)
        self.input_names = [r[0] for r in config["input_layers"]]
        self.output_names = [r[0] for r in config["output_layers"]]
        for name in self.input_names:
            if self.layers.get(name, ("",))[0] != "InputLayer":
                raise ValueError(f"input_layers: {name!r} is not an InputLayer")
        params = doc.get("trainable_params") or {}
        self.params = {layer: {k: _floats(v) for k, v in p.items()} for layer, p in params.items()}
        self.input_shapes = [list(s) for s in doc["input_shapes"]]
        self.output_shapes = [list(s) for s in doc["output_shapes"]]

    def predict(self, inputs: Sequence[Any] | Mapping[str, Any]) -> list[np.ndarray]:
        """Outputs (float64, batch axis first) for inputs in model input order or by input name. An
        input with a variable dimension (a variable-length sequence) may also be given as a list of
        per-candidate arrays without batch axis (e.g. (n_real, n_vars) each): candidates are then
        evaluated in groups of equal shapes, as frugally-deep evaluates one candidate at a time."""
        if isinstance(inputs, Mapping):
            inputs = [inputs[n] for n in self.input_names]
        if len(inputs) != len(self.input_names):
            raise ValueError(f"expected {len(self.input_names)} inputs {self.input_names}, got {len(inputs)}")
        if not any(isinstance(x, (list, tuple)) for x in inputs):
            return self._predict_batch(inputs)
        sizes = {len(x) for x in inputs}
        if len(sizes) != 1:
            raise ValueError(f"inputs with different numbers of candidates {sorted(sizes)}")
        (n,) = sizes
        groups: dict[tuple, list[int]] = {}
        for i in range(n):
            key = tuple(np.shape(x[i]) if isinstance(x, (list, tuple)) else () for x in inputs)
            groups.setdefault(key, []).append(i)
        result: list | None = None
        for rows in groups.values():
            batch = [np.stack([np.asarray(x[i], dtype=np.float64) for i in rows]) if isinstance(x, (list, tuple))
                     else np.asarray(x)[rows] for x in inputs]
            outs = self._predict_batch(batch)
            if result is None:
                result = [np.zeros((n,) + o.shape[1:]) for o in outs]
            for r, o in zip(result, outs):
                if r.shape[1:] != o.shape[1:]:
                    raise ValueError("outputs of different shapes for candidates of different input shapes")
                r[rows] = o
        return result

    def _predict_batch(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        values: dict[str, np.ndarray] = {}
        for name, x, shape in zip(self.input_names, inputs, self.input_shapes):
            x = np.asarray(x, dtype=np.float64)
            if x.ndim != len(shape) + 1 or any(s is not None and s != d for s, d in zip(shape, x.shape[1:])):
                raise ValueError(f"input {name!r}: shape {x.shape}, the model takes (batch, {shape})")
            values[name] = x
        for name in self.output_names:
            self._value(name, values)
        return [values[n] for n in self.output_names]

    def _value(self, name: str, values: dict) -> np.ndarray:
        # iterative post-order walk (deep graphs must not hit the recursion limit)
        stack = [name]
        while stack:
            top = stack[-1]
            if top in values:
                stack.pop()
                continue
            if top not in self.layers:
                raise ValueError(f"tensor of unknown layer {top!r}")
            cls, config, sources = self.layers[top]
            if cls == "InputLayer":
                raise ValueError(f"input {top!r} is not a model input")
            missing = [s for s in sources if s not in values]
            if missing:
                stack.extend(missing)
                continue
            out = EVALUATORS[cls](config, self.params.get(top, {}), [values[s] for s in sources])
            if cls not in ACTIVATION_CONSUMERS and "activation" in config:
                out = activation(config["activation"], config, out)
            values[top] = out
            stack.pop()
        return values[name]

    def test_cases(self) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
        """The embedded test cases: (inputs, expected outputs), each tensor with a batch axis of 1."""
        cases = []
        for case in self.doc.get("tests") or []:
            def tensors(entries):
                return [_floats(t["values"]).reshape([1] + list(t["shape"])) for t in entries]
            cases.append((tensors(case["inputs"]), tensors(case["outputs"])))
        return cases

    def run_tests(self) -> float:
        """Largest |evaluated - expected| over the embedded test cases (the loader fails above 1e-4)."""
        worst = 0.0
        for inputs, expected in self.test_cases():
            for got, want in zip(self.predict(inputs), expected):
                if got.shape != want.shape:
                    raise ValueError(f"test case output of shape {got.shape[1:]}, expected {want.shape[1:]}")
                worst = max(worst, float(np.max(np.abs(got - want))))
        return worst


def load_fdeep(path: str | os.PathLike) -> FdeepModel:
    return FdeepModel(path)


# ----------------------------------------------------------------------------------------------
# the documented input recipe


def _recipe(x: np.ndarray, variables: list[Mapping[str, Any]]) -> np.ndarray:
    """Raw values (one variable per last-axis column) -> clamp to [raw_min, raw_max] (null =
    unbounded) -> non-finite to raw_default -> (x - mean) / std, in float64."""
    def col(key: str, missing: float) -> np.ndarray:
        return np.array([missing if v.get(key) is None else float(v[key]) for v in variables], dtype=np.float64)

    y = np.clip(np.array(x, dtype=np.float64), col("raw_min", -np.inf), col("raw_max", np.inf))
    bad = ~np.isfinite(y)
    if bad.any():
        y[bad] = np.broadcast_to(col("raw_default", np.nan), y.shape)[bad]
    return (y - col("mean", np.nan)) / col("std", np.nan)


def inputs_from_raw(doc: Mapping[str, Any], raw: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The model inputs (float32, by input name) from raw values, with the recipe and numbers written
    under ``taggerflow.inputs``: ``raw[candidate input]`` is (n, n_vars); ``raw[sequence input]`` is
    ``(flat, counts)``, the real constituents of all candidates in order ((m, n_vars), in training
    order, at most n_max each) and their numbers per candidate; it is padded to n_max with its mask
    input 1 for real slots, or, for a sequence without mask input (variable length, recurrent layers),
    a list of per-candidate arrays (n_real, n_vars)."""
    spec = doc["taggerflow"]["inputs"]
    out: dict[str, np.ndarray] = {}
    for entry in spec:
        name, kind = entry["name"], entry["kind"]
        if kind == "candidate":
            out[name] = _recipe(raw[name], entry["variables"]).astype(np.float32)
        elif kind == "sequence":
            flat, counts = raw[name]
            counts = np.asarray(counts, dtype=np.int64)
            n_max = int(entry["n_max"])
            if counts.size and counts.max() > n_max:
                raise ValueError(f"input {name!r}: a candidate has {counts.max()} constituents, n_max is {n_max}")
            scaled = _recipe(np.asarray(flat).reshape(-1, len(entry["variables"])), entry["variables"])
            if not entry.get("mask"):  # variable length: the real constituents only, one array per candidate
                ends = np.cumsum(counts)
                out[name] = [scaled[e - c:e].astype(np.float32) for e, c in zip(ends, counts)]
                continue
            slot = np.arange(len(scaled)) - np.repeat(np.cumsum(counts) - counts, counts)
            owner = np.repeat(np.arange(len(counts)), counts)
            padded = np.zeros((len(counts), n_max, len(entry["variables"])), dtype=np.float64)
            padded[owner, slot] = scaled
            valid = np.zeros((len(counts), n_max), dtype=np.float32)
            valid[owner, slot] = 1.0
            out[name] = padded.astype(np.float32)
            if entry.get("mask"):
                out[entry["mask"]] = valid
        else:
            raise ValueError(f"input {name!r}: unknown kind {kind!r}")
    return out
