"""The deep-sets family (``training.model.type: deepsets``, DIPS-like): per collection the network
phi (Dense layers acting per constituent), summed over the real constituents by
:class:`taggerflow.models.MaskedSum`, the pooled vectors concatenated with the candidate input,
then the shared Dense head (:mod:`taggerflow.models`).

``phi_layers``: widths of the per-constituent Dense layers (default ``[64, 64]``). ``conditional``
(build option, not a ``training.model`` key of the config today): candidate variables
(``records.add_vars``) appended to every constituent before phi; lwtnn cannot express it
(:mod:`taggerflow.lwtnn` refuses the RepeatVector layer), ONNX and frugally-deep can.
"""

from __future__ import annotations

from typing import Any, Mapping

from taggerflow.model_families import _common

FAMILY = "deepsets"
SCHEMA = {"training.model": {"type": _common.TYPE_ENTRY, "phi_layers": (list, False, [64, 64]),
                             **_common.HEAD_SCHEMA}}
#: keys build_model accepts besides the schema's
BUILD_KEYS = ("conditional",)
EXPORTERS = {"lwtnn": "taggerflow.lwtnn:keras_to_lwtnn", "onnx": "taggerflow.onnx_export:export_onnx",
             "fdeep": "taggerflow.fdeep:keras_to_fdeep"}


def validate(model_section: Mapping[str, Any], cfg: Any, err) -> None:
    _common.validate_head(model_section, err)
    _common.validate_needs_collections(model_section, cfg, err)


def parse_config(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    from taggerflow import model_families  # noqa: PLC0415

    # keys of the other families are ignored (a variant inherits the base section's model keys)
    own = tuple(SCHEMA["training.model"]) + BUILD_KEYS
    _common.unknown_keys(model_cfg, own, model_families.other_keys(FAMILY), FAMILY)
    head = _common.parse_head(model_cfg)
    return {"type": FAMILY, "phi_layers": _common.widths(model_cfg, "phi_layers",
                                                         _common.default(SCHEMA["training.model"], "phi_layers")),
            **head, "conditional": _common.parse_conditional(model_cfg, FAMILY)}


def build(cfg: dict[str, Any], candidate: Any, sequences: dict[str, tuple[int, int]], seeds: Any,
          add_vars: Any = None) -> tuple[list, Any]:
    """(the sequence and valid inputs in model order, the pooled collections concatenated with
    ``candidate``)."""
    import keras  # noqa: PLC0415

    from taggerflow.models import MaskedSum, VALID_SUFFIX, _hidden, check_collection_name, \
        check_sequence_shape  # noqa: PLC0415

    if not sequences:
        raise ValueError("sequences: the deepsets model needs at least one constituent collection")
    inputs, pooled = [], []
    for coll, shape in sequences.items():
        check_collection_name(coll)
        n_max, n_vars = check_sequence_shape(coll, shape)
        seq = keras.Input((n_max, n_vars), name=coll)
        valid = keras.Input((n_max,), name=f"{coll}{VALID_SUFFIX}")
        inputs += [seq, valid]
        x = seq
        if add_vars is not None:
            repeated = keras.layers.RepeatVector(n_max, name=f"{coll}_add_vars")(add_vars)
            x = keras.layers.Concatenate(axis=-1, name=f"{coll}_conditioned")([seq, repeated])
        for i, width in enumerate(cfg["phi_layers"]):
            x = _hidden(x, width, cfg, seeds, f"{coll}_phi{i}", bn_mask=valid)
        pooled.append(MaskedSum(name=f"{coll}_sum")([x, valid]))
    return inputs, keras.layers.Concatenate(axis=-1, name="concatenate")(pooled + [candidate])
