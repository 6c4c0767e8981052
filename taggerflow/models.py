"""Keras 3 models of taggerflow: a DIPS-like deep-sets tagger and a DL1-like dense tagger.

Inputs, in this order (the contract with the loaders and the lwtnn converter):

* ``candidate``: ``(n_candidate_vars,)`` scaled candidate variables;
* for each collection ``coll`` of ``sequences`` (in the dict's order):
  ``coll``: ``(n_max, n_vars)`` scaled, padded constituents, then
  ``coll_valid``: ``(n_max,)`` float 0/1, 1 for a real constituent.

The deep-sets model applies the per-constituent network phi (Dense layers on the 3-D tensor act per
constituent), sums phi over the real constituents with :class:`MaskedSum` (padded slots contribute
exactly zero whatever they hold, even inf/NaN), concatenates the pooled vectors of all collections
with the candidate input and applies the dense network F and a softmax output layer named ``output``.
The dense model uses the candidate input only.

Every layer is one lwtnn can evaluate (see :mod:`taggerflow.lwtnn`): Dense, BatchNormalization,
activation layers, Dropout, Concatenate and :class:`MaskedSum`.

Model configuration keys (``model_cfg``; each family's schema, defaults, checks and builder are in
its module of :mod:`taggerflow.model_families`):

``type``
    a registered family: ``"deepsets"``, ``"dense"`` or ``"rnn"`` (:mod:`taggerflow.models_rnn`) (required).
``phi_layers``
    widths of the per-constituent Dense layers (default ``[64, 64]``; ignored by ``dense``).
``f_layers``
    widths of the Dense layers after pooling / on the candidate (default ``[64, 32]``).
``activation``
    ``relu`` (default), ``linear``, ``sigmoid``, ``tanh``, ``elu``, ``leaky_relu``, ``swish``/``silu``.
``alpha``
    parameter of ``leaky_relu`` (negative slope, default 0.2) or ``elu`` (default 1.0); only for those.
``batch_norm``
    bool (default False): Dense (linear, no bias) -> BatchNormalization -> activation for every hidden layer.
    In the phi network the BatchNormalization statistics are computed over real constituents only.
``dropout``
    float in [0, 1) (default 0): Dropout after every hidden activation (dropped by the lwtnn export).
"""

from __future__ import annotations

import json
import zipfile
from typing import Any, Mapping

import keras
import numpy as np
from keras import ops

from taggerflow import model_families
from taggerflow.model_families._common import ACTIVATIONS, DEFAULT_ALPHA as _DEFAULT_ALPHA  # noqa: F401

#: the registered model families (taggerflow/model_families/: builder, schema, exporters of each)
MODEL_TYPES = model_families.NAMES
ADD_VARS_INPUT = "add_vars"

CANDIDATE_INPUT = "candidate"
#: the time stamp of every entry of a .keras file written by save_model (the earliest a zip can hold)
KERAS_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
VALID_SUFFIX = "_valid"
OUTPUT_LAYER = "output"


@keras.saving.register_keras_serializable(package="taggerflow")
class MaskedSum(keras.layers.Layer):
    """Sum over the constituent axis of ``values`` keeping only the slots with ``valid > 0.5``.

    Called as ``MaskedSum()([values, valid])`` with ``values`` of shape ``(batch, n_max, n)`` and
    ``valid`` of shape ``(batch, n_max)`` (float 0/1); returns ``(batch, n)``. Padded slots are
    removed with a select, not a product, so they contribute exactly nothing even if they hold
    inf or NaN. The lwtnn export turns this layer into a ``sum`` node (lwtnn receives only the real
    constituents).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # A Keras mask arriving with ``values`` (e.g. from a masked BatchNormalization) is consumed
        # here: the pooled output has no constituent axis left to mask.
        self.supports_masking = True

    def compute_mask(self, inputs: Any, mask: Any = None) -> None:
        return None

    def build(self, input_shape: Any) -> None:
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2:
            raise ValueError(f"{self.name}: MaskedSum expects [values, valid], got input shape {input_shape}")
        values_shape, valid_shape = input_shape
        if len(values_shape) != 3 or len(valid_shape) != 2:
            raise ValueError(f"{self.name}: MaskedSum expects values (batch, n_max, n) and valid (batch, n_max), "
                             f"got {values_shape} and {valid_shape}")
        if (values_shape[1] is not None and valid_shape[1] is not None
                and values_shape[1] != valid_shape[1]):
            raise ValueError(f"{self.name}: values have {values_shape[1]} slots but valid has {valid_shape[1]}")
        self.built = True

    def call(self, inputs: Any) -> Any:
        values, valid = inputs
        keep = ops.expand_dims(ops.greater(valid, 0.5), axis=-1)
        return ops.sum(ops.where(keep, values, ops.zeros_like(values)), axis=1)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        values_shape = input_shape[0]
        return (values_shape[0], values_shape[-1])


# ----------------------------------------------------------------------------------------------
# configuration


def parse_model_config(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``model_cfg`` and return it with every default filled in (raises ValueError); by
    the family of its ``type`` (taggerflow.model_families)."""
    return model_families.parse_config(model_cfg)


# ----------------------------------------------------------------------------------------------
# building blocks


def check_collection_name(coll: Any) -> None:
    if not isinstance(coll, str) or not coll or "/" in coll or coll == CANDIDATE_INPUT \
            or coll.endswith(VALID_SUFFIX):
        raise ValueError(f"sequences: invalid collection name {coll!r}")


def check_sequence_shape(coll: str, shape: Any) -> tuple[int, int]:
    n_max, n_vars = (int(s) for s in shape)
    if n_max < 1 or n_vars < 1:
        raise ValueError(f"sequences[{coll!r}]: expected (n_max >= 1, n_vars >= 1), got {shape!r}")
    return n_max, n_vars


class _Seeds:
    """Distinct, reproducible integer seeds for the initialisers and dropouts of one model."""

    def __init__(self, seed: int) -> None:
        self._seed = int(seed) & 0xFFFFFFFF
        self._n = 0

    def next(self) -> int:
        self._n += 1
        return int(np.random.SeedSequence([self._seed, self._n]).generate_state(1)[0] & 0x7FFFFFFF)


def _activation_layer(activation: str, alpha: float | None, name: str) -> keras.layers.Layer:
    if activation == "leaky_relu":
        return keras.layers.LeakyReLU(negative_slope=alpha, name=name)
    if activation == "elu":
        return keras.layers.ELU(alpha=alpha, name=name)
    return keras.layers.Activation(activation, name=name)


def _inline_activation(activation: str, alpha: float | None) -> str | None:
    """The activation string a Dense layer can carry itself, or None if it needs its own layer."""
    if activation in ("leaky_relu", "elu") and alpha != _DEFAULT_ALPHA[activation]:
        return None
    return activation


def _hidden(x: Any, width: int, cfg: dict[str, Any], seeds: _Seeds, name: str, bn_mask: Any = None) -> Any:
    """One hidden layer: Dense + activation (or Dense -> BatchNorm -> activation) [-> Dropout]."""
    act, alpha = cfg["activation"], cfg["alpha"]
    init = keras.initializers.GlorotUniform(seed=seeds.next())
    if cfg["batch_norm"]:
        x = keras.layers.Dense(width, use_bias=False, kernel_initializer=init, name=name)(x)
        bn = keras.layers.BatchNormalization(name=f"{name}_bn")
        x = bn(x, mask=bn_mask) if bn_mask is not None else bn(x)
        x = _activation_layer(act, alpha, f"{name}_act")(x)
    else:
        inline = _inline_activation(act, alpha)
        x = keras.layers.Dense(width, activation=inline or "linear", kernel_initializer=init, name=name)(x)
        if inline is None:
            x = _activation_layer(act, alpha, f"{name}_act")(x)
    if cfg["dropout"] > 0.0:
        x = keras.layers.Dropout(cfg["dropout"], seed=seeds.next(), name=f"{name}_dropout")(x)
    return x


def build_model(model_cfg: dict, n_candidate_vars: int, sequences: dict[str, tuple[int, int]], n_classes: int,
                seed: int = 0, n_add_vars: int = 0) -> keras.Model:
    """Build (not compile) a tagger model; see the module docstring for the inputs and config keys.

    ``sequences`` maps a collection name to ``(n_max, n_vars)``; it is used (in its order) by the
    deep-sets model and ignored by the dense model. Initialisers and dropouts are seeded from ``seed``.
    """
    cfg = parse_model_config(model_cfg)
    if (isinstance(n_candidate_vars, bool) or not isinstance(n_candidate_vars, (int, np.integer))
            or n_candidate_vars < 1):
        raise ValueError(f"n_candidate_vars: expected a positive integer, got {n_candidate_vars!r}")
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
        raise ValueError(f"n_classes: expected an integer >= 2, got {n_classes!r}")
    seeds = _Seeds(seed)

    candidate = keras.Input((int(n_candidate_vars),), name=CANDIDATE_INPUT)
    inputs = [candidate]
    add_vars = None
    if cfg["conditional"]:
        # conditional inputs (umami's N_add_vars): candidate variables appended to every constituent
        if int(n_add_vars) < 1:
            raise ValueError("model config key 'conditional': needs records.add_vars (n_add_vars >= 1)")
        add_vars = keras.Input((int(n_add_vars),), name=ADD_VARS_INPUT)
        inputs.append(add_vars)
    seq_inputs, x = model_families.module(cfg["type"]).build(cfg, candidate, sequences, seeds, add_vars=add_vars)
    inputs += seq_inputs
    for i, width in enumerate(cfg["f_layers"]):
        x = _hidden(x, width, cfg, seeds, f"f{i}")
    out = keras.layers.Dense(int(n_classes), activation="softmax", name=OUTPUT_LAYER,
                             kernel_initializer=keras.initializers.GlorotUniform(seed=seeds.next()))(x)
    return keras.Model(inputs=inputs, outputs=out, name=f"taggerflow_{cfg['type']}")


# ----------------------------------------------------------------------------------------------
# saving


def save_model(model: keras.Model, path: str) -> None:
    """Save ``model`` as a ``.keras`` file whose bytes depend on the model only: the same weights,
    optimizer state and configuration give the same file, whenever and wherever it is written, and
    whether the model was built in this process or loaded from a file.

    Keras writes what changes from save to save: ``date_saved`` in metadata.json, the time of
    writing as the zip entries' time stamps, and in config.json a ``shared_object_id`` (a memory
    address) on every dtype policy when the layers share one policy object (a model built here, not
    one loaded from a file). The file Keras wrote is rewritten without the date, without the sharing
    of dtype policies (a policy is a name: sharing it means nothing), with any other shared objects
    numbered 1, 2, ... in order of appearance (the loader only needs equal ids to mean one object)
    and with fixed entry time stamps and attributes; keras.models.load_model reads it as before.
    ``path`` must end with ``.keras`` (e.g. a temporary path of taggerflow.utils.atomic_path)."""
    model.save(path)
    with zipfile.ZipFile(path) as zf:
        entries = [(info.filename, info.compress_type, zf.read(info)) for info in zf.infolist()]
    with zipfile.ZipFile(path, "w") as zf:
        for name, compress_type, data in entries:
            if name == "metadata.json":
                data = json.dumps({k: v for k, v in json.loads(data).items() if k != "date_saved"}).encode()
            elif name == "config.json":
                data = json.dumps(_stable_sharing(json.loads(data), {})).encode()
            info = zipfile.ZipInfo(name, date_time=KERAS_ZIP_DATE)
            info.compress_type = compress_type
            info.create_system = 3  # unix, on every platform
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)


def _stable_sharing(obj: Any, ids: dict) -> Any:
    """A serialised Keras config without the ``shared_object_id`` of dtype policies and with the
    other ones (id()s of the saving process) replaced by their rank of first appearance."""
    if isinstance(obj, list):
        return [_stable_sharing(v, ids) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {}
    for key, value in obj.items():
        if key == "shared_object_id":
            if str(obj.get("class_name", "")).endswith("DTypePolicy"):
                continue
            value = ids.setdefault(value, len(ids) + 1)
        out[key] = _stable_sharing(value, ids)
    return out


# The families' custom layers (PaddingMask) must be registered before keras.models.load_model reads
# a saved model in a process that never built one (ConvertLwtnn or Evaluation in its own worker/job).
import importlib as _importlib  # noqa: E402

for _layers_module in model_families.keras_layer_modules():
    _importlib.import_module(_layers_module)
