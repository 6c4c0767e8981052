"""Keras 3 model -> lwtnn JSON (graph format for ``lwt::LightweightGraph``, sequential format for
``lwt::LightweightNeuralNetwork``), without tf_keras or lwtnn's keras2json scripts.

The Keras functional graph is walked generically from the model output through the layers'
inbound nodes; nothing depends on layer names. Mapping (see ``shared/references/lwtnn-json-format.md``):

==============================  ===================================================================
Keras                           lwtnn
==============================  ===================================================================
Input, rank 2 (batch, n)        ``input`` node; its entry in ``inputs`` is named after the Keras input
Input, rank 3 (batch, T, n)     ``input_sequence`` node named ``sequence_names.get(name, name)``
mask input (rank 2)             dropped: an Input consumed only as the ``valid`` argument of
                                :class:`~taggerflow.models.MaskedSum` (or the ``mask`` of a
                                BatchNormalization); lwtnn is given the real constituents only
Dense                           ``dense`` layer; ``feed_forward`` node on a vector,
                                ``time_distributed`` node on a sequence
BatchNormalization              ``normalization`` layer (weights = γ/√(var+ε),
                                bias = −mean + β√(var+ε)/γ)
Activation/ReLU/LeakyReLU/      activation-only ``dense`` layer (``weights: []``, ``bias: []``)
ELU/Softmax
MaskedSum                       ``sum`` node
Concatenate / Add               ``concatenate`` / ``add`` node (vectors, Keras order)
Dropout & co, Identity          dropped (identity at inference)
==============================  ===================================================================

Activations: relu → ``rectified``, linear, sigmoid, tanh, softmax, elu → ``{"function": "elu",
"alpha": a}``, leaky_relu → ``{"function": "leakyrelu", "alpha": a}``, swish/silu →
``{"function": "swish", "alpha": 1.0}``. Anything else (gelu, selu, softplus, hard_sigmoid, whose
Keras 3 definition differs from lwtnn's, ...), any other layer type (Conv, LSTM, Lambda, pooling,
Masking, ...), a Dense on a tensor that is neither a vector nor a sequence, or a model lwtnn would
evaluate differently raises :class:`LwtnnConversionError` naming the layer, before anything is
returned.

Numbers are written as Python floats (float32 weights converted exactly to float64), so the JSON
text round-trips bit for bit. Keras is imported lazily: this module can be imported without it.
"""

from __future__ import annotations

import inspect
import json
import math
import os
from functools import partial
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from taggerflow.utils import atomic_path

__all__ = ["LwtnnConversionError", "keras_to_lwtnn", "keras_to_lwtnn_sequential", "graph_to_sequential",
           "write_lwtnn"]


class LwtnnConversionError(ValueError):
    """The model (or the variables given with it) cannot be expressed in / evaluated by lwtnn."""


# lwtnn activation names of the Keras activations that need no parameter
_PLAIN_ACTIVATIONS = {"relu": "rectified", "linear": "linear", "sigmoid": "sigmoid", "tanh": "tanh",
                      "softmax": "softmax"}
_SUPPORTED_ACTIVATIONS = sorted(list(_PLAIN_ACTIVATIONS) + ["elu", "leaky_relu", "silu", "swish"])


def _keras():
    import keras  # noqa: PLC0415  (lazy: the module must import without TensorFlow)

    return keras


def _numpy(value: Any) -> np.ndarray:
    """float64 copy of a Keras variable / tensor (float32 values convert exactly)."""
    to_numpy = getattr(value, "numpy", None)  # KerasVariable / eager tensor (avoids np.array(tf_tensor))
    array = to_numpy() if callable(to_numpy) else _keras().ops.convert_to_numpy(value)
    return np.array(array, dtype=np.float64)


def _floats(array: np.ndarray, where: str) -> list[float]:
    array = np.asarray(array, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise LwtnnConversionError(f"{where}: non-finite value(s) cannot be written to lwtnn JSON")
    return array.ravel().tolist()


def _default_arg(fn: Any, arg: str, fallback: float) -> float:
    try:
        value = inspect.signature(fn).parameters[arg].default
    except (TypeError, ValueError, KeyError):
        return fallback
    return float(value) if isinstance(value, (int, float)) else fallback


def _activation_from_function(fn: Any, where: str) -> str | dict:
    """lwtnn ACT of a Keras activation function (as held by Dense.activation / Activation.activation)."""
    keras = _keras()
    try:
        name = keras.activations.serialize(fn)
    except Exception:  # noqa: BLE001  (an unregistered callable)
        name = getattr(fn, "__name__", repr(fn))
    if not isinstance(name, str):
        name = getattr(fn, "__name__", repr(fn))
    if name in _PLAIN_ACTIVATIONS:
        return _PLAIN_ACTIVATIONS[name]
    if name == "leaky_relu":
        alpha = _default_arg(keras.activations.leaky_relu, "negative_slope", 0.2)
        return {"function": "leakyrelu", "alpha": alpha}
    if name == "elu":
        return {"function": "elu", "alpha": _default_arg(keras.activations.elu, "alpha", 1.0)}
    if name in ("silu", "swish"):
        return {"function": "swish", "alpha": 1.0}
    raise LwtnnConversionError(f"{where}: activation {name!r} cannot be evaluated by lwtnn "
                               f"(supported: {', '.join(_SUPPORTED_ACTIVATIONS)})")


# ----------------------------------------------------------------------------------------------
# graph walk


@dataclass
class _Node:
    spec: dict                 # lwtnn node; "sources" hold internal node ids until renumbering
    kind: str                  # "vector" or "sequence"
    width: int
    root: str | None = None    # Keras input a sequence node derives from
    n_max: int | None = None   # padded length of that sequence input


@dataclass
class _Walk:
    nodes: list[_Node] = field(default_factory=list)
    layers: list[dict] = field(default_factory=list)
    layer_index: dict = field(default_factory=dict)       # (id(layer), n_in) -> lwtnn layer index
    memo: dict = field(default_factory=dict)              # KerasTensor history key -> node id (or -1: dropped)
    input_node: dict = field(default_factory=dict)        # Keras input name -> node id
    data_inputs: set = field(default_factory=set)         # inputs reached as data
    mask_of: dict = field(default_factory=dict)           # mask input name -> sequence input name
    seq_mask: dict = field(default_factory=dict)          # sequence input name -> mask input name


def _history(tensor: Any, where: str) -> tuple[Any, int, int]:
    hist = getattr(tensor, "_keras_history", None)
    if hist is None or hist[0] is None:
        raise LwtnnConversionError(f"{where}: tensor {tensor!r} is not produced by a Keras layer")
    return hist[0], int(hist[1]), int(hist[2])


def _is_keras_tensor(obj: Any) -> bool:
    return type(obj).__name__ == "KerasTensor" or hasattr(obj, "_keras_history")


class _Converter:
    def __init__(self, model: Any) -> None:
        keras = _keras()
        for layer in getattr(model, "layers", []):
            if type(layer).__name__ == "RepeatVector":
                raise LwtnnConversionError(
                    f"layer '{layer.name}' (RepeatVector): conditional inputs (candidate variables appended to every "
                    "constituent inside the model) cannot be expressed in lwtnn; use train_sample.concat_jet_tracks, "
                    "which makes them constituent variables, or deploy this model with ONNX")
        from taggerflow.models import MaskedSum  # noqa: PLC0415

        self.keras = keras
        self.model = model
        self.walk = _Walk()
        L = keras.layers
        self.input_cls = L.InputLayer
        self.masked_sum_cls = MaskedSum
        self.dropped = tuple(c for c in (getattr(L, n, None) for n in (
            "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout",
            "GaussianNoise", "AlphaDropout", "Identity", "ActivityRegularization")) if c is not None)
        self.handlers = {
            L.Dense: self._dense,
            L.BatchNormalization: self._batch_norm,
            L.Activation: self._activation_layer,
            L.ReLU: self._activation_layer,
            L.LeakyReLU: self._activation_layer,
            L.ELU: self._activation_layer,
            L.Softmax: self._activation_layer,
            L.Concatenate: self._merge,
            L.Add: self._merge,
            MaskedSum: self._masked_sum,
        }
        from taggerflow.model_families import lwtnn_layers  # noqa: PLC0415  (e.g. rnn: LSTM/GRU sequence nodes)
        self.handlers.update({getattr(L, cls): partial(fn, self) for cls, fn in lwtnn_layers().items()})

    # -- helpers -------------------------------------------------------------------------------
    def _where(self, layer: Any) -> str:
        return f"layer {getattr(layer, 'name', '?')!r} ({type(layer).__name__})"

    def _new_node(self, node: _Node) -> int:
        self.walk.nodes.append(node)
        return len(self.walk.nodes) - 1

    def _add_layer(self, layer: Any, n_in: int, spec: dict, shareable: bool = True) -> int:
        key = (id(layer), n_in)
        if shareable and key in self.walk.layer_index:
            return self.walk.layer_index[key]
        self.walk.layers.append(spec)
        index = len(self.walk.layers) - 1
        if shareable:
            self.walk.layer_index[key] = index
        return index

    def _single_input(self, layer: Any, knode: Any, mask_ok: bool = False) -> tuple[Any, Any]:
        """The one data tensor a layer was called on (a vector or a sequence), and its ``mask`` (or None)."""
        where = self._where(layer)
        args, kwargs = knode.arguments.args, knode.arguments.kwargs
        if len(args) < 1 or not _is_keras_tensor(args[0]):
            raise LwtnnConversionError(f"{where}: expected to be called on one tensor")
        if self._rank(args[0]) not in (2, 3):
            raise LwtnnConversionError(
                f"{where}: applied to a tensor of shape {tuple(args[0].shape)}; lwtnn supports vectors "
                "(batch, n) and sequences (batch, T, n) only")
        extra = [a for a in self.keras.tree.flatten(list(args[1:])) if _is_keras_tensor(a)]
        mask = kwargs.get("mask")
        for key, value in kwargs.items():
            if key == "mask":
                continue
            if any(_is_keras_tensor(v) for v in self.keras.tree.flatten(value)):
                extra.append(value)
        if extra:
            raise LwtnnConversionError(f"{where}: called with more than one input tensor; lwtnn cannot express it")
        if mask is not None and not _is_keras_tensor(mask):
            raise LwtnnConversionError(f"{where}: called with a non-symbolic mask")
        if mask is not None and not mask_ok:
            raise LwtnnConversionError(f"{where}: called with a mask; lwtnn has no masking")
        return args[0], mask

    def _rank(self, tensor: Any) -> int:
        return len(tensor.shape)

    def _check_rank(self, layer: Any, tensor: Any, node: _Node) -> None:
        rank = self._rank(tensor)
        expected = {"vector": 2, "sequence": 3}[node.kind]
        if rank != expected:
            raise LwtnnConversionError(
                f"{self._where(layer)}: applied to a tensor of shape {tuple(tensor.shape)}; lwtnn supports "
                f"vectors (batch, n) and sequences (batch, T, n) only")

    def _resolve_mask(self, layer: Any, mask: Any, data: _Node) -> None:
        """A mask argument must be a rank-2 model input paired one-to-one with the data's sequence input."""
        where = self._where(layer)
        op, _, _ = _history(mask, where)
        if type(op) is not self.input_cls or self._rank(mask) != 2:
            raise LwtnnConversionError(f"{where}: its mask must be a model input of shape (batch, n_max), "
                                       f"got {type(op).__name__} {getattr(op, 'name', '?')!r}")
        if data.kind != "sequence":
            raise LwtnnConversionError(f"{where}: a mask applied to a vector cannot be expressed in lwtnn")
        name, seq = op.name, data.root
        if mask.shape[1] is not None and data.n_max is not None and int(mask.shape[1]) != data.n_max:
            raise LwtnnConversionError(f"{where}: mask {name!r} has {mask.shape[1]} slots but sequence "
                                       f"{seq!r} has {data.n_max}")
        if self.walk.mask_of.get(name, seq) != seq:
            raise LwtnnConversionError(f"{where}: mask {name!r} is used with two sequences "
                                       f"({self.walk.mask_of[name]!r} and {seq!r})")
        if self.walk.seq_mask.get(seq, name) != name:
            raise LwtnnConversionError(f"{where}: sequence {seq!r} is masked by two inputs "
                                       f"({self.walk.seq_mask[seq]!r} and {name!r})")
        self.walk.mask_of[name] = seq
        self.walk.seq_mask[seq] = name

    # -- the walk ------------------------------------------------------------------------------
    def visit(self, tensor: Any) -> int:
        op, node_index, tensor_index = _history(tensor, "model graph")
        key = (id(op), node_index, tensor_index)
        if key not in self.walk.memo:
            self.walk.memo[key] = self._convert(op, node_index, tensor_index, tensor)
        return self.walk.memo[key]

    def _convert(self, layer: Any, node_index: int, tensor_index: int, tensor: Any) -> int:
        where = self._where(layer)
        if tensor_index != 0:
            raise LwtnnConversionError(f"{where}: layers with several outputs are not supported")
        cls = type(layer)
        if cls is self.input_cls:
            return self._input(layer, tensor)
        knode = layer._inbound_nodes[node_index]
        if cls in self.dropped:
            x, _ = self._single_input(layer, knode)
            return self.visit(x)
        handler = self.handlers.get(cls)
        if handler is None:
            if hasattr(layer, "layers") and hasattr(layer, "_inbound_nodes"):
                raise LwtnnConversionError(f"{where}: nested models are not supported; build one flat model")
            raise LwtnnConversionError(f"{where}: layer type {cls.__name__} cannot be converted to lwtnn "
                                       "(supported: Dense, BatchNormalization, Activation, ReLU, LeakyReLU, "
                                       "ELU, Softmax, Concatenate, Add, MaskedSum, Dropout)")
        return handler(layer, knode, tensor)

    def _input(self, layer: Any, tensor: Any) -> int:
        name = layer.name
        rank = self._rank(tensor)
        self.walk.data_inputs.add(name)
        return self._input_node(name, rank, tensor, self._where(layer))

    def _input_node(self, name: str, rank: int, tensor: Any, where: str) -> int:
        if name in self.walk.input_node:
            return self.walk.input_node[name]
        width = tensor.shape[-1]
        if width is None:
            raise LwtnnConversionError(f"{where}: input {name!r} has an undefined width")
        if rank == 2:
            node = _Node({"type": "input"}, "vector", int(width))
        elif rank == 3:
            n_max = tensor.shape[1]
            node = _Node({"type": "input_sequence"}, "sequence", int(width), root=name,
                         n_max=None if n_max is None else int(n_max))
        else:
            raise LwtnnConversionError(f"{where}: input {name!r} of shape {tuple(tensor.shape)}; lwtnn takes "
                                       "vectors (batch, n) and sequences (batch, T, n) only")
        node_id = self._new_node(node)
        self.walk.input_node[name] = node_id
        return node_id

    def _layer_node(self, layer: Any, tensor: Any, source: int, spec: dict, width: int,
                    shareable: bool = True) -> int:
        src = self.walk.nodes[source]
        self._check_rank(layer, tensor, src)
        index = self._add_layer(layer, src.width, spec, shareable)
        ntype = "feed_forward" if src.kind == "vector" else "time_distributed"
        return self._new_node(_Node({"type": ntype, "sources": [source], "layer_index": index},
                                    src.kind, width, src.root, src.n_max))

    def _dense(self, layer: Any, knode: Any, tensor: Any) -> int:
        where = self._where(layer)
        x, _ = self._single_input(layer, knode)
        if getattr(layer, "quantization_mode", None):
            raise LwtnnConversionError(f"{where}: quantized Dense layers are not supported")
        kernel = _numpy(layer.kernel)
        if kernel.ndim != 2:
            raise LwtnnConversionError(f"{where}: kernel of shape {kernel.shape} is not a matrix")
        n_in, n_out = kernel.shape
        bias = _numpy(layer.bias) if getattr(layer, "bias", None) is not None else np.zeros(n_out)
        activation = _activation_from_function(layer.activation, where)
        source = self.visit(x)
        src = self.walk.nodes[source]
        self._check_rank(layer, x, src)
        if src.width != n_in:
            raise LwtnnConversionError(f"{where}: kernel expects {n_in} inputs, the graph gives {src.width}")
        spec = {"architecture": "dense", "weights": _floats(kernel.T, where), "bias": _floats(bias, where),
                "activation": activation}
        return self._layer_node(layer, x, source, spec, int(n_out))

    def _batch_norm(self, layer: Any, knode: Any, tensor: Any) -> int:
        where = self._where(layer)
        x, mask = self._single_input(layer, knode, mask_ok=True)
        source = self.visit(x)
        src = self.walk.nodes[source]
        self._check_rank(layer, x, src)
        rank = self._rank(x)
        axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        if [int(a) % rank for a in axes] != [rank - 1]:
            raise LwtnnConversionError(f"{where}: normalises axis {layer.axis}; lwtnn can only normalise "
                                       "the feature (last) axis")
        if mask is not None:
            self._resolve_mask(layer, mask, src)  # the mask only matters for the training statistics
        mean, var = _numpy(layer.moving_mean), _numpy(layer.moving_variance)
        n = mean.shape[0]
        gamma = getattr(layer, "gamma", None) if getattr(layer, "scale", True) else None
        beta = getattr(layer, "beta", None) if getattr(layer, "center", True) else None
        gamma = np.ones(n) if gamma is None else _numpy(gamma)
        beta = np.zeros(n) if beta is None else _numpy(beta)
        if n != src.width:
            raise LwtnnConversionError(f"{where}: normalises {n} features, the graph gives {src.width}")
        if np.any(gamma == 0.0):
            raise LwtnnConversionError(f"{where}: a zero gamma cannot be written as an lwtnn normalization layer")
        std = np.sqrt(var + float(layer.epsilon))
        spec = {"architecture": "normalization", "weights": _floats(gamma / std, where),
                "bias": _floats(-mean + beta * std / gamma, where)}
        return self._layer_node(layer, x, source, spec, src.width)

    def _activation_layer(self, layer: Any, knode: Any, tensor: Any) -> int:
        where = self._where(layer)
        L = self.keras.layers
        cls = type(layer)
        x, mask = self._single_input(layer, knode, mask_ok=cls is L.Softmax)
        if mask is not None:
            raise LwtnnConversionError(f"{where}: a masked softmax cannot be expressed in lwtnn")
        if cls is L.Activation:
            activation = _activation_from_function(layer.activation, where)
        elif cls is L.ReLU:
            if layer.max_value is not None or float(layer.threshold) != 0.0:
                raise LwtnnConversionError(f"{where}: ReLU with max_value/threshold cannot be evaluated by lwtnn")
            slope = float(layer.negative_slope)
            activation = "rectified" if slope == 0.0 else {"function": "leakyrelu", "alpha": slope}
        elif cls is L.LeakyReLU:
            activation = {"function": "leakyrelu", "alpha": float(layer.negative_slope)}
        elif cls is L.ELU:
            activation = {"function": "elu", "alpha": float(layer.alpha)}
        else:  # Softmax
            rank = self._rank(x)
            axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
            if [int(a) % rank for a in axes] != [rank - 1]:
                raise LwtnnConversionError(f"{where}: softmax over axis {layer.axis}; lwtnn only takes the "
                                           "softmax over the features (last axis)")
            activation = "softmax"
        source = self.visit(x)
        if activation == "linear":
            self._check_rank(layer, x, self.walk.nodes[source])
            return source
        width = self.walk.nodes[source].width
        spec = {"architecture": "dense", "weights": [], "bias": [], "activation": activation}
        return self._layer_node(layer, x, source, spec, width)

    def _merge(self, layer: Any, knode: Any, tensor: Any) -> int:
        where = self._where(layer)
        args, kwargs = knode.arguments.args, knode.arguments.kwargs
        if len(args) != 1 or not isinstance(args[0], (list, tuple)) or any(
                _is_keras_tensor(v) for v in self.keras.tree.flatten(list(kwargs.values()))):
            raise LwtnnConversionError(f"{where}: expected to be called on one list of tensors")
        sources = []
        for t in args[0]:
            source = self.visit(t)
            src = self.walk.nodes[source]
            if src.kind != "vector" or self._rank(t) != 2:
                raise LwtnnConversionError(f"{where}: lwtnn merges vectors only, got a tensor of shape "
                                           f"{tuple(t.shape)}")
            sources.append(source)
        widths = [self.walk.nodes[s].width for s in sources]
        if type(layer) is self.keras.layers.Concatenate:
            if int(layer.axis) not in (-1, 1):
                raise LwtnnConversionError(f"{where}: concatenation along axis {layer.axis} of vectors")
            return self._new_node(_Node({"type": "concatenate", "sources": sources}, "vector", sum(widths)))
        if len(set(widths)) != 1:
            raise LwtnnConversionError(f"{where}: adds vectors of different widths {widths}")
        return self._new_node(_Node({"type": "add", "sources": sources}, "vector", widths[0]))

    def _masked_sum(self, layer: Any, knode: Any, tensor: Any) -> int:
        where = self._where(layer)
        args, kwargs = knode.arguments.args, knode.arguments.kwargs
        if (len(args) != 1 or not isinstance(args[0], (list, tuple)) or len(args[0]) != 2
                or any(_is_keras_tensor(v) for v in self.keras.tree.flatten(list(kwargs.values())))):
            raise LwtnnConversionError(f"{where}: expected to be called on [values, valid]")
        values, valid = args[0]
        source = self.visit(values)
        src = self.walk.nodes[source]
        if src.kind != "sequence" or self._rank(values) != 3:
            raise LwtnnConversionError(f"{where}: sums a tensor of shape {tuple(values.shape)}; lwtnn sums "
                                       "sequences (batch, T, n) only")
        self._resolve_mask(layer, valid, src)
        return self._new_node(_Node({"type": "sum", "sources": [source]}, "vector", src.width))


# ----------------------------------------------------------------------------------------------
# variables and the final document


def _variable_entries(where: str, variables: Any, width: int) -> list[dict]:
    if not isinstance(variables, Sequence) or isinstance(variables, (str, bytes)):
        raise LwtnnConversionError(f"{where}: variables must be a list of {{name, offset, scale, default}}")
    if len(variables) != width:
        raise LwtnnConversionError(f"{where}: {len(variables)} variables given, the model input has {width}")
    entries, seen = [], set()
    for i, var in enumerate(variables):
        if not isinstance(var, Mapping):
            raise LwtnnConversionError(f"{where}: variable {i} is not a mapping")
        name = var.get("name")
        if not isinstance(name, str) or not name:
            raise LwtnnConversionError(f"{where}: variable {i} has no name")
        if name in seen:
            raise LwtnnConversionError(f"{where}: variable {name!r} appears twice (lwtnn looks inputs up by name)")
        seen.add(name)
        entry = {"name": name}
        for key in ("offset", "scale", "default"):
            if key not in var:
                if key == "default":
                    continue
                raise LwtnnConversionError(f"{where}: variable {name!r} has no {key!r}")
            value = var[key]
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(float(value)):
                raise LwtnnConversionError(f"{where}: variable {name!r}: {key} must be a finite number, got {value!r}")
            entry[key] = float(value)
        entries.append(entry)
    return entries


def _string_list(where: str, values: Any) -> list[str]:
    if not isinstance(values, Sequence) or isinstance(values, (str, bytes)) or not values \
            or not all(isinstance(v, str) and v for v in values):
        raise LwtnnConversionError(f"{where}: expected a non-empty list of strings, got {values!r}")
    if len(set(values)) != len(values):
        raise LwtnnConversionError(f"{where}: duplicate entries in {list(values)}")
    return list(values)


def _miscellaneous(miscellaneous: Mapping[str, str] | None) -> dict[str, str] | None:
    if miscellaneous is None:
        return None
    if not isinstance(miscellaneous, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in miscellaneous.items()):
        raise LwtnnConversionError("miscellaneous: must be a string -> string mapping")
    return dict(miscellaneous)


def keras_to_lwtnn(model: Any, candidate_variables: list[dict] | Mapping[str, list[dict]],
                   sequence_variables: Mapping[str, list[dict]], class_labels: list[str],
                   sequence_names: Mapping[str, str] | None = None, output_name: str = "tagger",
                   miscellaneous: Mapping[str, str] | None = None) -> dict:
    """Convert a Keras 3 functional model to an lwtnn graph-format document (a JSON-ready dict).

    ``candidate_variables``: the variables of the model's vector input (a list, for a model with one
    vector input) or a mapping ``{input name: variables}``. ``sequence_variables``: ``{sequence input
    name: variables}``; entries for inputs the model does not have are ignored. Variables are
    ``{"name", "offset", "scale", "default"}`` in the input's column order, ``default`` optional.
    ``sequence_names`` renames sequence inputs in the JSON (entries for absent inputs are ignored).
    The single model output becomes ``outputs[output_name]`` with ``class_labels``.
    """
    sequence_names = dict(sequence_names or {})
    labels = _string_list("class_labels", class_labels)
    if not isinstance(output_name, str) or not output_name:
        raise LwtnnConversionError(f"output_name: expected a non-empty string, got {output_name!r}")
    misc = _miscellaneous(miscellaneous)
    outputs = getattr(model, "outputs", None)
    model_inputs = getattr(model, "inputs", None)
    if not outputs or not model_inputs:
        raise LwtnnConversionError("model: not a built functional Keras model (no inputs/outputs)")
    if len(outputs) != 1:
        raise LwtnnConversionError(f"model: has {len(outputs)} outputs; one output is supported")

    conv = _Converter(model)
    walk = conv.walk
    out_id = conv.visit(outputs[0])
    out_node = walk.nodes[out_id]
    if out_node.kind != "vector":
        raise LwtnnConversionError(f"model output is a sequence of shape {tuple(outputs[0].shape)}; lwtnn "
                                   "outputs are vectors")
    if out_node.width != len(labels):
        raise LwtnnConversionError(f"class_labels: {len(labels)} labels for a model output of width {out_node.width}")

    # every model input: data (vector/sequence) or mask
    vector_inputs, sequence_inputs = [], []
    for tensor in model_inputs:
        op, _, _ = _history(tensor, "model input")
        name = op.name
        if name in walk.mask_of:
            if name in walk.data_inputs:
                raise LwtnnConversionError(f"input {name!r}: used both as a mask and as data; lwtnn only "
                                           "receives the real constituents, not the mask")
            continue
        node_id = conv._input_node(name, len(tensor.shape), tensor, f"input {name!r}")
        (vector_inputs if walk.nodes[node_id].kind == "vector" else sequence_inputs).append((name, node_id))

    if isinstance(candidate_variables, Mapping):
        vector_vars = dict(candidate_variables)
    else:
        if len(vector_inputs) != 1:
            raise LwtnnConversionError(f"candidate_variables: a list needs a model with exactly one vector input, "
                                       f"this one has {[n for n, _ in vector_inputs]}; pass {{input name: variables}}")
        vector_vars = {vector_inputs[0][0]: candidate_variables}
    sequence_variables = dict(sequence_variables or {})

    json_inputs, json_sequences = [], []
    for k, (name, node_id) in enumerate(vector_inputs):
        if name not in vector_vars:
            raise LwtnnConversionError(f"candidate_variables: none given for input {name!r}")
        variables = _variable_entries(f"input {name!r}", vector_vars[name], walk.nodes[node_id].width)
        json_inputs.append({"name": name, "variables": variables})
        walk.nodes[node_id].spec.update({"sources": [k], "size": len(variables)})
    for k, (name, node_id) in enumerate(sequence_inputs):
        if name not in sequence_variables:
            raise LwtnnConversionError(f"sequence_variables: none given for sequence input {name!r}")
        lwtnn_name = sequence_names.get(name, name)
        if not isinstance(lwtnn_name, str) or not lwtnn_name:
            raise LwtnnConversionError(f"sequence_names[{name!r}]: expected a non-empty string")
        variables = _variable_entries(f"sequence input {name!r}", sequence_variables[name], walk.nodes[node_id].width)
        json_sequences.append({"name": lwtnn_name, "variables": variables})
        walk.nodes[node_id].spec.update({"sources": [k], "size": len(variables)})
    for kind, block in (("inputs", json_inputs), ("input_sequences", json_sequences)):
        names = [b["name"] for b in block]
        if len(set(names)) != len(names):
            raise LwtnnConversionError(f"{kind}: duplicate node names {names}")

    # order: input nodes, sequence input nodes, then the rest in dependency (post-)order
    input_ids = [i for _, i in vector_inputs] + [i for _, i in sequence_inputs]
    others = [i for i in range(len(walk.nodes)) if i not in set(input_ids)]
    final = {old: new for new, old in enumerate(input_ids + others)}
    nodes = []
    for old in input_ids + others:
        spec = dict(walk.nodes[old].spec)
        if spec["type"] not in ("input", "input_sequence"):
            spec["sources"] = [final[s] for s in spec["sources"]]
        nodes.append(spec)

    doc = {
        "inputs": json_inputs,
        "input_sequences": json_sequences,
        "nodes": nodes,
        "layers": walk.layers,
        "outputs": {output_name: {"labels": labels, "node_index": final[out_id]}},
    }
    if misc is not None:
        doc["miscellaneous"] = misc
    return doc


def graph_to_sequential(graph: Mapping[str, Any], output_name: str | None = None) -> dict:
    """Turn a graph document that is a plain chain (one input -> feed_forward ... -> output) into the
    sequential format (inputs/layers/outputs/defaults[/miscellaneous])."""
    if graph.get("input_sequences"):
        raise LwtnnConversionError("sequential format: the model has sequence inputs; use the graph format")
    if len(graph.get("inputs", [])) != 1:
        raise LwtnnConversionError("sequential format: the model must have exactly one input")
    outputs = graph["outputs"]
    if output_name is None:
        if len(outputs) != 1:
            raise LwtnnConversionError("sequential format: several outputs, name one")
        output_name = next(iter(outputs))
    out = outputs[output_name]
    nodes, chain = graph["nodes"], []
    index = out["node_index"]
    while nodes[index]["type"] == "feed_forward":
        chain.append(nodes[index]["layer_index"])
        index = nodes[index]["sources"][0]
    if nodes[index]["type"] != "input":
        raise LwtnnConversionError(f"sequential format: the model is not a single chain of layers (found a "
                                   f"{nodes[index]['type']!r} node); use the graph format")
    variables = graph["inputs"][0]["variables"]
    doc = {
        "inputs": [dict(v) for v in variables],
        "layers": [graph["layers"][i] for i in reversed(chain)],
        "outputs": list(out["labels"]),
        "defaults": {v["name"]: v["default"] for v in variables if "default" in v},
    }
    if "miscellaneous" in graph:
        doc["miscellaneous"] = dict(graph["miscellaneous"])
    return doc


def keras_to_lwtnn_sequential(model: Any, variables: list[dict], class_labels: list[str],
                              miscellaneous: Mapping[str, str] | None = None) -> dict:
    """Convert a single-input feed-forward Keras model (e.g. the ``dense`` model) to lwtnn's sequential
    format, for ``lwt::LightweightNeuralNetwork``."""
    ranks = [len(t.shape) for t in (getattr(model, "inputs", None) or [])]
    if len(ranks) != 1 or ranks[0] != 2:
        raise LwtnnConversionError(f"sequential format: needs a model with exactly one vector input, this one has "
                                   f"inputs of shapes {[tuple(t.shape) for t in model.inputs or []]}; use "
                                   "keras_to_lwtnn (graph format)")
    graph = keras_to_lwtnn(model, variables, {}, class_labels, miscellaneous=miscellaneous)
    return graph_to_sequential(graph)


def write_lwtnn(json_dict: Mapping[str, Any], path: str | os.PathLike) -> str:
    """Write an lwtnn document atomically (temporary file in the same folder, then rename); indent 1."""
    text = json.dumps(json_dict, indent=1, allow_nan=False) + "\n"
    path = os.fspath(path)
    with atomic_path(path, suffix=".tmp") as tmp, open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return path
