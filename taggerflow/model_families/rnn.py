"""The recurrent family (``training.model.type: rnn``): one LSTM or GRU per constituent collection,
the final states concatenated with the candidate input, then the shared Dense head. The Keras
graph is built by :mod:`taggerflow.models_rnn` (its ``PaddingMask`` layer lives there).

``cell``: ``lstm`` (default) or ``gru``. ``rnn_units``: units of every recurrent layer (default 32),
or ``{collection: units}`` naming every collection. ``phi_layers`` (inherited by a variant from a
deepsets base section) is validated and ignored.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from taggerflow.model_families import _common

FAMILY = "rnn"
CELLS = ("lstm", "gru")
SCHEMA = {"training.model": {"type": _common.TYPE_ENTRY, **_common.HEAD_SCHEMA,
                             "cell": (str, False, "lstm"), "rnn_units": ((int, dict), False, 32)}}
#: the module whose import registers the family's custom Keras layers (for load_model)
KERAS_LAYERS_MODULE = "taggerflow.models_rnn"
#: lwtnn layer converters the family adds: Keras layer class name -> "module:function"
LWTNN_LAYERS = {"LSTM": "taggerflow.lwtnn_rnn:convert_recurrent", "GRU": "taggerflow.lwtnn_rnn:convert_recurrent"}
# fdeep: taggerflow/fdeep.py has no LSTM/GRU converter yet
EXPORTERS = {"lwtnn": "taggerflow.lwtnn:keras_to_lwtnn", "onnx": "taggerflow.onnx_export:export_onnx",
             "fdeep": "taggerflow.fdeep:keras_to_fdeep"}   # LSTM/GRU: sequences as variable-length inputs


def validate(model_section: Mapping[str, Any], cfg: Any, err) -> None:
    _common.validate_head(model_section, err)
    _common.validate_needs_collections(model_section, cfg, err)


def _units(value: Any) -> int | dict[str, int]:
    def one(u: Any, where: str) -> int:
        if isinstance(u, bool) or not isinstance(u, (int, np.integer)) or u < 1:
            raise ValueError(f"model config key {where!r}: expected a positive integer, got {u!r}")
        return int(u)

    if isinstance(value, Mapping):
        if not value:
            raise ValueError("model config key 'rnn_units': an empty mapping; give units or {collection: units}")
        return {str(k): one(v, f"rnn_units.{k}") for k, v in value.items()}
    return one(value, "rnn_units")


def parse_config(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Validate an ``rnn`` model config and fill in the defaults (raises ValueError naming the key)."""
    schema = SCHEMA["training.model"]
    # phi_layers: inherited by a variant from a deepsets base section; validated, ignored (as by dense)
    _common.unknown_keys(model_cfg, tuple(schema), {"phi_layers"}, FAMILY)
    cell = model_cfg.get("cell", _common.default(schema, "cell"))
    if cell not in CELLS:
        raise ValueError(f"model config key 'cell': unknown recurrent cell {cell!r}; expected one of {list(CELLS)}")
    _common.widths(model_cfg, "phi_layers", [])
    head = _common.parse_head(model_cfg)
    return {"type": FAMILY, "phi_layers": [], **head, "conditional": False, "cell": cell,
            "rnn_units": _units(model_cfg.get("rnn_units", _common.default(schema, "rnn_units")))}


def build(cfg: dict[str, Any], candidate: Any, sequences: dict[str, tuple[int, int]], seeds: Any,
          add_vars: Any = None) -> tuple[list, Any]:
    from taggerflow import models_rnn  # noqa: PLC0415

    return models_rnn.build(cfg, candidate, sequences, seeds)
