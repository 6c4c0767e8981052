"""Keras 3 model -> frugally-deep JSON (``fdeep::load_model``), written from the format that
frugally-deep's loader reads (``include/fdeep/import_model.hpp``, its layer files and the Keras 3
``keras_export/convert_model.py``), without frugally-deep's converter.

The document (top-level keys; frugally-deep ignores keys it does not know):

``architecture``
    a Keras 3 functional-model config: ``{"class_name": "Functional", "config": {"name", "layers",
    "input_layers", "output_layers"}}``. Each layer is ``{"class_name", "name", "config",
    "inbound_nodes"}``; an inbound node is ``{"args": [...], "kwargs": {}}`` whose arguments are
    ``__keras_tensor__`` references carrying ``keras_history = [layer, node_index, tensor_index]``
    (a list of them inside ``args`` for merging layers), as Keras 3 serialises them. The layer
    ``config`` holds only what the loader reads (e.g. a Dense layer's ``activation`` string is
    applied by the loader after the layer; a key it does not expect could change the result).
``trainable_params``
    ``{layer name: {param: floats}}`` with the loader's parameter names and layouts (see the table);
    floats are little-endian float32 bytes, base64 encoded, in chunks of 1024 characters (the
    loader's ``decode_floats`` accepts this, or plain number arrays).
``input_shapes``, ``output_shapes``
    the shapes without the batch axis, in model input / output order.
``tests``
    test cases the loader runs on load (``fdeep::load_model(path)`` verifies by default, within
    1e-4): ``[{"inputs": [tensor, ...], "outputs": [tensor, ...]}]``, a tensor being ``{"shape":
    [dims without batch], "values": floats}``. They hold what Keras computes on the given inputs.
``image_data_format``
    ``"channels_last"`` (the only one the loader accepts).
``hash``
    frugally-deep's model hash: sha256 over the Keras layers in model order, each layer's weight
    arrays (float32 bytes, Keras ``get_weights`` order) then its name (``fdeep::model::hash()``).
``taggerflow``
    this project's documentation of the file (inputs, their scaling, the input recipe, classes), if given.

Layer mapping (Keras -> written layer, ``trainable_params``):

==========================  ======================================================================
Keras                       frugally-deep
==========================  ======================================================================
InputLayer                  ``InputLayer`` (``batch_shape``)
Dense                       ``Dense`` (``units``, ``use_bias``, ``activation``); ``weights`` = kernel
                            (n_in, units) row-major, ``bias``; applied to the last axis
BatchNormalization          ``BatchNormalization`` (last axis, ``epsilon``, ``center``, ``scale``);
                            ``moving_mean``, ``moving_variance``, ``gamma``, ``beta``
Activation, ReLU,           ``Activation`` / ``ReLU`` / ``LeakyReLU`` (``negative_slope``) /
LeakyReLU, ELU, Softmax     ``ELU`` (``alpha``) / ``Softmax`` (last axis)
Concatenate, Add            ``Concatenate`` (last axis) / ``Add``
RepeatVector                ``RepeatVector`` (``n``)
MaskedSum (taggerflow)      ``Dot`` with ``axes = [1, 1]`` on ``[valid, values]``: the sum of the
                            constituents weighted by the 0/1 mask (padded slots must be finite)
LSTM, GRU                   ``LSTM`` / ``GRU`` (``units``, ``activation``, ``recurrent_activation``,
                            ``use_bias``, ``return_sequences``/``return_state`` false, GRU
                            ``reset_after`` either way); ``weights`` = kernel (n_in, G*units),
                            ``recurrent_weights`` (units, G*units), ``bias`` (G*units, or (2, 3*units)
                            for a reset_after GRU), Keras' gate order (i f c o / z r h), row-major
PaddingMask (taggerflow)    left out with its mask input: the sequence input it reads becomes
                            variable-length (``batch_shape [null, null, n_vars]``), see below
Dropout & co, Identity      left out (identity at inference)
==========================  ======================================================================

Activations: linear, relu, sigmoid, tanh, softmax, elu (alpha 1), leaky_relu (slope 0.2), silu/swish;
inside LSTM/GRU those of :data:`RNN_ACTIVATIONS`. Any other layer (Keras ``Masking`` with a reason),
activation, axis, a layer called more than once, a nested model or a layer called with
``training=True`` raises :class:`FdeepConversionError` with a one-line message naming the layer.

Masking. frugally-deep's loader has no masks: ``Masking`` is an identity layer there and LSTM/GRU run
over every step they are given, from a zero state. A Keras RNN skips masked steps (carrying the state
over), so its final state over n_max slots of which the real ones are marked is exactly the state
after running over the real constituents only, in order (the zero state for none). A sequence input
read through :class:`taggerflow.models_rnn.PaddingMask` is therefore written with a variable time
dimension and no mask input: C++ passes a tensor ``(n_real, n_vars)`` of the real constituents. This
holds only if masked LSTM/GRU layers are its only readers, which is checked (anything else reading it
or its mask is refused). The embedded test cases take each row's real slots (at least one).

New layer types are added with one registration: ``@register_layer("ClassName")`` on a function
``(conv, layer, inputs, where) -> FdeepLayer`` (or an already written tensor id for an identity), and
the matching evaluator in :mod:`taggerflow.fdeep_eval`. Keras is imported lazily: this
module imports without TensorFlow.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from taggerflow.utils import atomic_path

__all__ = ["FdeepConversionError", "FdeepLayer", "LAYER_CONVERTERS", "register_layer", "keras_to_fdeep", "keras_outputs", "written_input_names",
           "fdeep_json_text", "write_fdeep", "encode_floats", "decode_floats", "model_hash",
           "SUPPORTED_ACTIVATIONS"]

BASE64_CHUNK = 1024
SUPPORTED_ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "softmax", "elu", "leaky_relu", "silu", "swish")
#: activations of LSTM/GRU: the names both frugally-deep's ``get_activation_func`` (recurrent_ops.hpp)
#: and :mod:`taggerflow.fdeep_eval` compute, with Keras' meaning (elu with alpha 1, Keras 3's hard_sigmoid)
RNN_ACTIVATIONS = ("linear", "tanh", "sigmoid", "hard_sigmoid", "relu", "elu", "selu", "softsign", "silu", "swish")
#: Keras layers refused with a reason (frugally-deep reads them, but not as Keras computes them)
REFUSED_LAYERS = {
    "Masking": "Keras Masking is an identity layer in frugally-deep (no mask propagation), so a masked RNN would "
               "run over the padded steps; feed the sequence through taggerflow's PaddingMask instead (exported as "
               "a variable-length input holding the real constituents only)",
}
#: layers frugally-deep evaluates as identity: left out of the written graph
IDENTITY_LAYERS = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout",
                   "GaussianNoise", "AlphaDropout", "Identity", "ActivityRegularization")


class FdeepConversionError(ValueError):
    """The model cannot be written as (or would be evaluated differently by) frugally-deep."""


def _keras():
    import keras  # noqa: PLC0415  (lazy: the module must import without TensorFlow)

    return keras


# ----------------------------------------------------------------------------------------------
# float encoding


def encode_floats(values: Any) -> list[str]:
    """float32 little-endian bytes of ``values`` (flattened, C order), base64, in 1024-char chunks."""
    data = np.ascontiguousarray(np.asarray(values, dtype="<f4")).ravel().tobytes()
    text = base64.b64encode(data).decode("ascii")
    return [text[i:i + BASE64_CHUNK] for i in range(0, len(text), BASE64_CHUNK)] or [""]


def decode_floats(data: Any) -> np.ndarray:
    """Inverse of :func:`encode_floats`; also a plain array of numbers (both forms the loader reads)."""
    if isinstance(data, list) and data and not isinstance(data[0], str):
        return np.asarray(data, dtype=np.float32)
    text = data if isinstance(data, str) else "".join(data)
    raw = base64.b64decode(text.encode("ascii"))
    if len(raw) % 4:
        raise ValueError(f"float array of {len(raw)} bytes is not a whole number of float32 values")
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)


def _tensor_entry(array: np.ndarray) -> dict:
    """A test-case tensor: shape without the batch axis, values."""
    array = np.asarray(array, dtype=np.float32)
    return {"shape": [int(d) for d in array.shape], "values": encode_floats(array)}


# ----------------------------------------------------------------------------------------------
# registry


@dataclass
class FdeepLayer:
    """One written layer: its class name, the config the loader reads, its parameters and the
    internal ids of the tensors it is called on (a list: a merging layer)."""

    class_name: str
    config: dict
    params: dict = field(default_factory=dict)
    inputs: list = field(default_factory=list)
    merge: bool = False           # called on a list of tensors (args = [[t1, t2, ...]])
    name: str | None = None       # written name; default: the Keras layer's


#: a converter returns the written layer, or the id of an already written tensor (an identity layer)
LayerConverter = Callable[["_Converter", Any, list, str], "FdeepLayer | str"]
#: Keras class name -> converter (one registration per layer type)
LAYER_CONVERTERS: dict[str, LayerConverter] = {}


def register_layer(*class_names: str) -> Callable[[LayerConverter], LayerConverter]:
    def deco(fn: LayerConverter) -> LayerConverter:
        for name in class_names:
            LAYER_CONVERTERS[name] = fn
        return fn

    return deco


def _supported_layers() -> str:
    return ", ".join(sorted(set(LAYER_CONVERTERS) | {"InputLayer"} | set(IDENTITY_LAYERS[:1])))


# ----------------------------------------------------------------------------------------------
# the walk


def _history(tensor: Any, where: str) -> tuple[Any, int, int]:
    hist = getattr(tensor, "_keras_history", None)
    if hist is None or hist[0] is None:
        raise FdeepConversionError(f"{where}: tensor {tensor!r} is not produced by a Keras layer")
    return hist[0], int(hist[1]), int(hist[2])


def _is_keras_tensor(obj: Any) -> bool:
    return type(obj).__name__ == "KerasTensor" or hasattr(obj, "_keras_history")


def _shape(tensor: Any) -> list:
    return [None if d is None else int(d) for d in tensor.shape]


class _Converter:
    def __init__(self, model: Any) -> None:
        self.keras = _keras()
        self.model = model
        self.layers: list[tuple[str, FdeepLayer]] = []   # (written name, layer) in dependency order
        self.memo: dict = {}                             # Keras tensor history key -> written tensor id
        self.tensor_shape: dict = {}                     # written tensor id -> shape (with batch axis)
        self.used_names: set = set()
        self.called: dict = {}                           # id(layer) -> node index converted
        self.variable_length: dict = {}                  # sequence input read through PaddingMask -> its mask input
        self.masked_readers: dict = {}                   # such a sequence input -> names of the RNNs reading it

    @staticmethod
    def where(layer: Any) -> str:
        return f"layer '{getattr(layer, 'name', '?')}' ({type(layer).__name__})"

    def visit(self, tensor: Any) -> str:
        layer, node_index, tensor_index = _history(tensor, "model graph")
        key = (id(layer), node_index, tensor_index)
        if key not in self.memo:
            self.memo[key] = self._convert(layer, node_index, tensor_index, tensor)
        return self.memo[key]

    def _inputs_of(self, layer: Any, node: Any) -> tuple[list, bool]:
        """The tensors a layer was called on (flattened) and whether they came as one list."""
        where = self.where(layer)
        args, kwargs = node.arguments.args, node.arguments.kwargs
        if kwargs.get("training") is True:
            raise FdeepConversionError(f"{where}: called with training=True; frugally-deep evaluates inference only")
        for key, value in kwargs.items():
            if key == "mask":  # a mask only matters for training statistics (BatchNormalization)
                continue
            if any(_is_keras_tensor(v) for v in self.keras.tree.flatten(value)):
                raise FdeepConversionError(f"{where}: called with a tensor keyword argument {key!r}")
        if len(args) == 1 and isinstance(args[0], (list, tuple)):
            tensors = list(args[0])
            merge = True
        else:
            tensors = [a for a in args if _is_keras_tensor(a)]
            merge = False
        if not tensors or not all(_is_keras_tensor(t) for t in tensors):
            raise FdeepConversionError(f"{where}: expected to be called on Keras tensors")
        return tensors, merge

    def _convert(self, layer: Any, node_index: int, tensor_index: int, tensor: Any) -> str:
        where = self.where(layer)
        cls = type(layer).__name__
        if tensor_index != 0:
            raise FdeepConversionError(f"{where}: layers with several outputs are not supported")
        if cls == "InputLayer":
            return self._input(layer, tensor)
        if hasattr(layer, "layers") and hasattr(layer, "_inbound_nodes"):
            raise FdeepConversionError(f"{where}: nested models are not supported; build one flat model")
        if self.called.setdefault(id(layer), node_index) != node_index:
            raise FdeepConversionError(f"{where}: called more than once; the frugally-deep export needs each "
                                       "layer called once")
        node = layer._inbound_nodes[node_index]
        tensors, merge = self._inputs_of(layer, node)
        if cls in IDENTITY_LAYERS:
            if len(tensors) != 1:
                raise FdeepConversionError(f"{where}: expected one input tensor")
            return self.visit(tensors[0])
        if cls in REFUSED_LAYERS:
            raise FdeepConversionError(f"{where}: {REFUSED_LAYERS[cls]}")
        convert = LAYER_CONVERTERS.get(cls)
        if convert is None:
            raise FdeepConversionError(f"{where}: layer type {cls} is not supported by the frugally-deep export "
                                       f"(supported: {_supported_layers()})")
        spec = convert(self, layer, tensors, where)
        if isinstance(spec, str):  # the layer is an identity in the written graph (PaddingMask)
            return spec
        spec.merge = spec.merge or merge
        name = spec.name or layer.name
        return self._add(name, spec, _shape(tensor), where)

    def _add(self, name: str, spec: FdeepLayer, shape: list, where: str) -> str:
        if not isinstance(name, str) or not name or not name.isascii():
            raise FdeepConversionError(f"{where}: layer names must be non-empty ASCII (frugally-deep looks "
                                       f"parameters up by name), got {name!r}")
        if name in self.used_names:
            raise FdeepConversionError(f"{where}: duplicate layer name {name!r}")
        self.used_names.add(name)
        spec.config = {"name": name, **spec.config}
        self.layers.append((name, spec))
        self.tensor_shape[name] = shape
        return name

    def _input(self, layer: Any, tensor: Any) -> str:
        key = ("input", id(layer))
        if key in self.memo:
            return self.memo[key]
        shape = _shape(tensor)
        if len(shape) < 2 or len(shape) > 6:
            raise FdeepConversionError(f"{self.where(layer)}: input of shape {tuple(shape)}; frugally-deep "
                                       "takes 1 to 5 dimensions besides the batch axis")
        spec = FdeepLayer("InputLayer", {"batch_shape": shape, "dtype": "float32", "sparse": False})
        self.memo[key] = self._add(layer.name, spec, shape, self.where(layer))
        return self.memo[key]


# ----------------------------------------------------------------------------------------------
# layer converters


def _numpy(value: Any) -> np.ndarray:
    to_numpy = getattr(value, "numpy", None)
    array = to_numpy() if callable(to_numpy) else _keras().ops.convert_to_numpy(value)
    return np.asarray(array, dtype=np.float32)


def _finite(array: np.ndarray, where: str, what: str) -> np.ndarray:
    if not np.all(np.isfinite(array)):
        raise FdeepConversionError(f"{where}: non-finite {what} cannot be written")
    return array


def _activation_name(value: Any, where: str) -> str:
    name = value if isinstance(value, str) else _keras().activations.serialize(value)
    if not isinstance(name, str):
        name = getattr(value, "__name__", repr(value))
    if name not in SUPPORTED_ACTIVATIONS:
        raise FdeepConversionError(f"{where}: activation {name!r} is not supported by the frugally-deep export "
                                   f"(supported: {', '.join(SUPPORTED_ACTIVATIONS)})")
    return name


def _last_axis(axis: Any, rank: int, where: str, what: str) -> None:
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    if len(axes) != 1 or int(axes[0]) % rank != rank - 1:
        raise FdeepConversionError(f"{where}: {what} over axis {axis}; only the last axis is supported")


def _one(tensors: list, where: str) -> Any:
    if len(tensors) != 1:
        raise FdeepConversionError(f"{where}: expected one input tensor, got {len(tensors)}")
    return tensors[0]


@register_layer("Dense")
def _dense(conv: _Converter, layer: Any, tensors: list, where: str) -> FdeepLayer:
    x = _one(tensors, where)
    if getattr(layer, "quantization_mode", None) or getattr(layer, "lora_enabled", False):
        raise FdeepConversionError(f"{where}: quantized / LoRA Dense layers are not supported")
    kernel = _finite(_numpy(layer.kernel), where, "kernel")
    if kernel.ndim != 2:
        raise FdeepConversionError(f"{where}: kernel of shape {kernel.shape} is not a matrix")
    use_bias = getattr(layer, "bias", None) is not None
    params = {"weights": encode_floats(kernel)}
    if use_bias:
        params["bias"] = encode_floats(_finite(_numpy(layer.bias), where, "bias"))
    activation = _activation_name(layer.get_config().get("activation", "linear"), where)
    return FdeepLayer("Dense", {"units": int(kernel.shape[1]), "use_bias": bool(use_bias),
                                "activation": activation}, params, [conv.visit(x)])


@register_layer("BatchNormalization")
def _batch_norm(conv: _Converter, layer: Any, tensors: list, where: str) -> FdeepLayer:
    x = _one(tensors, where)
    _last_axis(layer.axis, len(x.shape), where, "normalises")
    params = {"moving_mean": encode_floats(_finite(_numpy(layer.moving_mean), where, "moving mean")),
              "moving_variance": encode_floats(_finite(_numpy(layer.moving_variance), where, "moving variance"))}
    if layer.scale:
        params["gamma"] = encode_floats(_finite(_numpy(layer.gamma), where, "gamma"))
    if layer.center:
        params["beta"] = encode_floats(_finite(_numpy(layer.beta), where, "beta"))
    return FdeepLayer("BatchNormalization", {"axis": -1, "epsilon": float(layer.epsilon),
                                             "center": bool(layer.center), "scale": bool(layer.scale)},
                      params, [conv.visit(x)])


@register_layer("Activation")
def _activation(conv: _Converter, layer: Any, tensors: list, where: str) -> FdeepLayer:
    x = _one(tensors, where)
    name = _activation_name(layer.get_config().get("activation"), where)
    return FdeepLayer("Activation", {"activation": name}, {}, [conv.visit(x)])


@register_layer("ReLU")
def _relu(conv: _Converter, layer: Any, tensors: list, where: str) -> FdeepLayer:
    x = _one(tensors, where)
    slope, threshold = float(layer.negative_slope), float(layer.threshold)
    if slope != 0.0 or threshold != 0.0:
        # the loader reads them only together with a max_value, and older loaders not at all
        raise FdeepConversionError(f"{where}: ReLU with negative_slope/threshold is not supported by the "
                                   "frugally-deep export (use LeakyReLU)")
    if layer.max_value is None:
        return FdeepLayer("ReLU", {}, {}, [conv.visit(x)])
    return FdeepLayer("ReLU", {"max_value": float(layer.max_value), "negative_slope": 0.0, "threshold": 0.0},
                      {}, [conv.visit(x)])


@register_layer("LeakyReLU")
def _leaky_relu(conv: _Converter, layer: Any, tensors: list, where: str) -> FdeepLayer:
    return FdeepLayer("LeakyReLU", {"negative_slope": float(layer.negative_slope)}, {},
                      [conv.visit(_one(tensors, where))])


@register_layer("ELU")
def _elu(conv: _Converter, layer: Any, tensors: list, where: str) -> FdeepLayer:
    return FdeepLayer("ELU", {"alpha": float(layer.alpha)}, {}, [conv.visit(_one(tensors, where))])


@register_layer("Softmax")
def _softmax(conv: _Converter, layer: Any, tensors: list, where: str) -> FdeepLayer:
    x = _one(tensors, where)
    _last_axis(layer.axis, len(x.shape), where, "softmax")
    return FdeepLayer("Softmax", {"axis": -1}, {}, [conv.visit(x)])


@register_layer("Concatenate")
def _concatenate(conv: _Converter, layer: Any, tensors: list, where: str) -> FdeepLayer:
    ranks = {len(t.shape) for t in tensors}
    if len(ranks) != 1:
        raise FdeepConversionError(f"{where}: concatenates tensors of different ranks")
    _last_axis(layer.axis, ranks.pop(), where, "concatenation")
    return FdeepLayer("Concatenate", {"axis": -1}, {}, [conv.visit(t) for t in tensors], merge=True)


@register_layer("Add")
def _add(conv: _Converter, layer: Any, tensors: list, where: str) -> FdeepLayer:
    shapes = {tuple(t.shape[1:]) for t in tensors}
    if len(shapes) != 1:
        raise FdeepConversionError(f"{where}: adds tensors of different shapes {sorted(map(str, shapes))}")
    return FdeepLayer("Add", {}, {}, [conv.visit(t) for t in tensors], merge=True)


@register_layer("RepeatVector")
def _repeat_vector(conv: _Converter, layer: Any, tensors: list, where: str) -> FdeepLayer:
    return FdeepLayer("RepeatVector", {"n": int(layer.n)}, {}, [conv.visit(_one(tensors, where))])


@register_layer("MaskedSum")
def _masked_sum(conv: _Converter, layer: Any, tensors: list, where: str) -> FdeepLayer:
    if len(tensors) != 2:
        raise FdeepConversionError(f"{where}: expected to be called on [values, valid]")
    values, valid = tensors
    if len(values.shape) != 3 or len(valid.shape) != 2:
        raise FdeepConversionError(f"{where}: expected values (batch, n_max, n) and valid (batch, n_max), got "
                                   f"{tuple(values.shape)} and {tuple(valid.shape)}")
    # sum_t valid[t] * values[t, :]: Keras' Dot over axis 1 of both; equal to the select of MaskedSum
    # for a 0/1 mask and finite padded slots
    return FdeepLayer("Dot", {"axes": [1, 1], "normalize": False}, {}, [conv.visit(valid), conv.visit(values)],
                      merge=True)


@register_layer("PaddingMask")
def _padding_mask(conv: _Converter, layer: Any, tensors: list, where: str) -> str:
    """taggerflow's PaddingMask ``[values, valid]`` (zeroes padded slots, attaches the mask ``valid >
    0.5``): an identity, the sequence input becoming variable-length (its real constituents only) and
    its mask input left out. That this is exact for the recurrent layers that read it, and that nothing
    else does, is checked once the graph is walked (:func:`_resolve_variable_length`)."""
    if len(tensors) != 2:
        raise FdeepConversionError(f"{where}: expected to be called on [values, valid]")
    values, valid = tensors
    ops = [_history(t, where)[0] for t in (values, valid)]
    if any(type(op).__name__ != "InputLayer" for op in ops) or len(values.shape) != 3 or len(valid.shape) != 2:
        raise FdeepConversionError(f"{where}: must be called on a sequence input (batch, n_max, n) and its mask "
                                   f"input (batch, n_max), got {tuple(values.shape)} and {tuple(valid.shape)} "
                                   "(frugally-deep is given the real constituents of a model input)")
    seq, mask = conv.visit(values), conv.visit(valid)
    if conv.variable_length.setdefault(seq, mask) != mask:
        raise FdeepConversionError(f"{where}: sequence input {seq!r} is masked by two inputs "
                                   f"({conv.variable_length[seq]!r} and {mask!r})")
    if list(conv.variable_length.values()).count(mask) > 1:
        raise FdeepConversionError(f"{where}: mask input {mask!r} masks two sequence inputs")
    return seq


def _recurrent_activation(cfg: Mapping[str, Any], key: str, where: str) -> str:
    name = cfg.get(key)
    if not isinstance(name, str) or name not in RNN_ACTIVATIONS:
        raise FdeepConversionError(f"{where}: {key} {name!r} is not supported by the frugally-deep export of "
                                   f"recurrent layers (supported: {', '.join(RNN_ACTIVATIONS)})")
    return name


@register_layer("LSTM", "GRU")
def _recurrent(conv: _Converter, layer: Any, tensors: list, where: str) -> FdeepLayer:
    """Keras LSTM / GRU -> the loader's ``create_lstm_layer`` / ``create_gru_layer``: config ``units``,
    ``activation``, ``recurrent_activation``, ``use_bias``, ``return_sequences``, ``return_state`` (GRU:
    ``reset_after``); params ``weights`` = kernel (n_in, G*units) row-major, ``recurrent_weights`` =
    recurrent kernel (units, G*units), ``bias`` (G*units; a reset_after GRU (2, 3*units): input bias, then
    recurrent bias), the gate blocks in Keras' order (LSTM i, f, c, o; GRU z, r, h), as
    ``recurrent_ops.hpp`` reads them and frugally-deep's converter writes ``get_weights()``. The state
    starts at zero and the layer is read as its final state."""
    cls = type(layer).__name__
    x = _one(tensors, where)
    cfg = layer.get_config()
    for key in ("return_sequences", "return_state", "go_backwards", "stateful"):
        if cfg.get(key):
            # the loader reads no go_backwards/stateful for LSTM/GRU; sequences/states are never our output
            raise FdeepConversionError(f"{where}: {key}=True is not supported by the frugally-deep export "
                                       "(a recurrent layer is exported as its final state)")
    if len(x.shape) != 3:
        raise FdeepConversionError(f"{where}: runs over a tensor of shape {tuple(x.shape)}, expected (batch, T, n)")
    producer = _history(x, where)[0]
    source = conv.visit(x)  # first: a refused producer (Masking) names itself
    node = layer._inbound_nodes[conv.called[id(layer)]]
    masked = type(producer).__name__ == "PaddingMask"
    if node.arguments.kwargs.get("mask") is not None and not masked:
        raise FdeepConversionError(f"{where}: masked by {type(producer).__name__} '{producer.name}'; frugally-deep "
                                   "has no masking: read the sequence through taggerflow's PaddingMask")
    if masked:
        conv.masked_readers.setdefault(source, set()).add(layer.name)
    cell = layer.cell
    n_gates = 4 if cls == "LSTM" else 3
    kernel = _finite(_numpy(cell.kernel), where, "kernel")
    recurrent = _finite(_numpy(cell.recurrent_kernel), where, "recurrent kernel")
    units = int(cfg["units"])
    if kernel.shape != (int(x.shape[-1]), n_gates * units) or recurrent.shape != (units, n_gates * units):
        raise FdeepConversionError(f"{where}: kernel {kernel.shape} / recurrent kernel {recurrent.shape} do not "
                                   f"match {x.shape[-1]} inputs and {n_gates} gates of {units} units")
    use_bias = bool(cfg.get("use_bias", True)) and getattr(cell, "bias", None) is not None
    config = {"units": units, "activation": _recurrent_activation(cfg, "activation", where),
              "recurrent_activation": _recurrent_activation(cfg, "recurrent_activation", where),
              "use_bias": use_bias, "return_sequences": False, "return_state": False}
    params = {"weights": encode_floats(kernel), "recurrent_weights": encode_floats(recurrent)}
    if cls == "GRU":
        config["reset_after"] = bool(cfg.get("reset_after", True))
    if use_bias:
        bias = _finite(_numpy(cell.bias), where, "bias")
        want = (2, 3 * units) if cls == "GRU" and config["reset_after"] else (n_gates * units,)
        if bias.shape != want:
            raise FdeepConversionError(f"{where}: bias of shape {bias.shape}, expected {want}")
        params["bias"] = encode_floats(bias)
    return FdeepLayer(cls, config, params, [source])


def _resolve_variable_length(conv: _Converter) -> set:
    """Sequence inputs read through PaddingMask become variable-length (``batch_shape [null, null,
    n]``: C++ passes the real constituents only) and their mask inputs are left out; returns the
    left-out mask inputs. Exact because a Keras RNN skips masked steps (the state is carried over),
    so the final state over n_max masked slots is the state after the real constituents in order,
    the zero state without any; hence only masked LSTM/GRU layers may read such an input."""
    dropped = {mask: seq for seq, mask in conv.variable_length.items()}
    for name, spec in conv.layers:
        for src in spec.inputs:
            if src in dropped:
                raise FdeepConversionError(f"layer '{name}' ({spec.class_name}): reads input {src!r}, the mask of "
                                           f"sequence {dropped[src]!r} that recurrent layers read through "
                                           "PaddingMask; frugally-deep gets that sequence's real constituents only "
                                           "(variable length) and no mask")
            if src in conv.variable_length and name not in conv.masked_readers.get(src, ()):
                raise FdeepConversionError(f"layer '{name}' ({spec.class_name}): reads sequence input {src!r} "
                                           "through PaddingMask; only LSTM/GRU layers may (frugally-deep gets its "
                                           "real constituents only, a variable-length sequence)")
    conv.layers = [(n, s) for n, s in conv.layers if n not in dropped]
    written = dict(conv.layers)
    for seq in conv.variable_length:
        shape = [None, None] + list(conv.tensor_shape[seq][2:])
        conv.tensor_shape[seq] = shape
        written[seq].config["batch_shape"] = shape
    return set(dropped)


# ----------------------------------------------------------------------------------------------
# the document


def model_hash(model: Any) -> str:
    """frugally-deep's model hash (its converter's definition): sha256 over the layers in model
    order, each layer's weights (float32 bytes, ``get_weights`` order), then its name."""
    digest = hashlib.sha256()
    for layer in model.layers:
        for weights in layer.get_weights():
            if isinstance(weights, np.ndarray):
                digest.update(np.ascontiguousarray(weights).tobytes())
        digest.update(layer.name.encode("ascii"))
    return digest.hexdigest()


def _tensor_ref(name: str, shape: list) -> dict:
    return {"class_name": "__keras_tensor__",
            "config": {"shape": shape, "dtype": "float32", "keras_history": [name, 0, 0]}}


def _layer_entry(name: str, spec: FdeepLayer, shapes: dict) -> dict:
    refs = [_tensor_ref(t, shapes[t]) for t in spec.inputs]
    nodes = [] if spec.class_name == "InputLayer" else [{"args": [refs] if spec.merge else refs, "kwargs": {}}]
    # module/registered_name: not read by frugally-deep; they make the architecture a config Keras loads
    return {"module": "keras.layers", "class_name": spec.class_name, "registered_name": None, "name": name,
            "config": spec.config, "inbound_nodes": nodes}


def _model_inputs(model: Any) -> list:
    inputs = getattr(model, "inputs", None)
    outputs = getattr(model, "outputs", None)
    if not inputs or not outputs:
        raise FdeepConversionError("model: not a built functional Keras model (no inputs/outputs)")
    return list(inputs)


def keras_to_fdeep(model: Any, test_inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray] | None = None,
                   n_tests: int = 2, seed: int = 0, documentation: Mapping[str, Any] | None = None) -> dict:
    """The frugally-deep document of a Keras 3 functional model (a JSON-ready dict).

    ``test_inputs``: the inputs of the embedded test cases, one array (with batch axis) per Keras
    model input in model order or ``{input name: array}``; each batch row becomes one test case, whose
    outputs Keras computes. A variable-length sequence (read through PaddingMask) is written with the
    row's real slots only (``valid > 0.5``, in order; a row without any is refused: the embedded cases
    hold at least one constituent per such sequence). Without them, ``n_tests`` cases of seeded normal
    values are made (0/1 masks with 1 .. n_max real slots first). ``documentation`` is written under
    ``taggerflow``. Raises :class:`FdeepConversionError` before anything is returned.
    """
    model_inputs = _model_inputs(model)
    conv = _Converter(model)
    keras_names = [conv.visit(t) for t in model_inputs]  # inputs first, in model order
    keras_shapes = {n: list(conv.tensor_shape[n]) for n in keras_names}
    output_names = [conv.visit(t) for t in model.outputs]
    dropped = _resolve_variable_length(conv)
    input_names = [n for n in keras_names if n not in dropped]
    names = [n for n, _ in conv.layers]
    written = dict(conv.layers)
    mask_inputs = {s.inputs[0] for s in written.values() if s.class_name == "Dot" and s.inputs[0] in input_names}
    mask_inputs |= dropped

    if test_inputs is None:
        test_inputs = _seeded_inputs(keras_shapes, keras_names, mask_inputs, n_tests, seed)
    elif isinstance(test_inputs, Mapping):
        missing = [n for n in keras_names if n not in test_inputs]
        if missing:
            raise FdeepConversionError(f"test_inputs: no values for model input(s) {missing}")
        test_inputs = [test_inputs[n] for n in keras_names]
    test_inputs = [np.asarray(x, dtype=np.float32) for x in test_inputs]
    if len(test_inputs) != len(keras_names) or len({len(x) for x in test_inputs}) != 1 or len(test_inputs[0]) < 1:
        raise FdeepConversionError(f"test_inputs: expected one array per model input ({keras_names}) with the "
                                   "same number of rows (at least 1)")
    for name, x in zip(keras_names, test_inputs):
        want = keras_shapes[name][1:]
        if x.ndim != len(want) + 1 or any(w is not None and w != d for w, d in zip(want, x.shape[1:])):
            raise FdeepConversionError(f"test_inputs: input {name!r} has shape {x.shape}, the model takes "
                                       f"(batch, {', '.join(map(str, want))})")
    outputs = keras_outputs(model, test_inputs)
    by_name = dict(zip(keras_names, test_inputs))

    def written_input(name: str, row: int) -> np.ndarray:
        x = by_name[name][row]
        if name not in conv.variable_length:
            return x
        real = x[by_name[conv.variable_length[name]][row] > 0.5]
        if not len(real):
            raise FdeepConversionError(f"test_inputs: row {row} has no constituent in sequence {name!r}; the "
                                       "embedded test cases need at least one per variable-length sequence")
        return real

    tests = [{"inputs": [_tensor_entry(written_input(n, i)) for n in input_names],
              "outputs": [_tensor_entry(o[i]) for o in outputs]} for i in range(len(test_inputs[0]))]

    layers = [_layer_entry(n, written[n], conv.tensor_shape) for n in names]
    doc = {
        "architecture": {"module": "keras.src.models.functional", "class_name": "Functional", "registered_name": "Functional",
                         "config": {"name": str(model.name), "layers": layers,
                                    "input_layers": [[n, 0, 0] for n in input_names],
                                    "output_layers": [[n, 0, 0] for n in output_names]}},
        "image_data_format": "channels_last",
        "input_shapes": [conv.tensor_shape[n][1:] for n in input_names],
        "output_shapes": [conv.tensor_shape[n][1:] for n in output_names],
        "tests": tests,
        "trainable_params": {n: written[n].params for n in names if written[n].params},
        "hash": model_hash(model),
    }
    if documentation is not None:
        doc["taggerflow"] = json.loads(json.dumps(documentation, allow_nan=False))
    return doc


def keras_outputs(model: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Keras' outputs (float32) for the embedded test cases: one eager call on exactly these inputs.
    Not ``model.predict``, whose traced function depends on the batch shapes it has seen before (it
    relaxes them after a few), which changes the last bit of some scores and so the file's bytes."""
    outputs = model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return [np.asarray(_keras().ops.convert_to_numpy(o), dtype=np.float32) for o in outputs]


def written_input_names(doc: Mapping[str, Any]) -> list[str]:
    """The written model's inputs, in the order ``fdeep::model::predict`` takes them."""
    return [str(ref[0]) for ref in doc["architecture"]["config"]["input_layers"]]


def _seeded_inputs(shapes: Mapping[str, list], names: list, mask_inputs: set, n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for name in names:
        shape = [int(n)] + [d if d is not None else 4 for d in shapes[name][1:]]
        if name in mask_inputs:  # k real slots then padding, k = 1 .. n_max
            n_max = shape[1]
            k = rng.integers(1, n_max + 1, size=shape[0])
            out.append((np.arange(n_max)[None, :] < k[:, None]).astype(np.float32))
        else:
            out.append(rng.normal(size=shape).astype(np.float32))
    return out


def fdeep_json_text(doc: Mapping[str, Any]) -> str:
    """The bytes written: sorted keys, compact separators, strict JSON (no NaN), newline at the end."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"


def write_fdeep(doc: Mapping[str, Any], path: str | os.PathLike) -> str:
    """Write a frugally-deep document atomically (temporary file in the same folder, then rename)."""
    text = fdeep_json_text(doc)
    path = os.fspath(path)
    with atomic_path(path, suffix=".tmp") as tmp, open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return path
