"""The dense family (``training.model.type: dense``, DL1-like): the candidate input only, through
the shared Dense head (:mod:`taggerflow.models`). ``phi_layers`` (inherited by a variant from a
deepsets base section) is validated and ignored."""

from __future__ import annotations

from typing import Any, Mapping

from taggerflow.model_families import _common

FAMILY = "dense"
SCHEMA = {"training.model": {"type": _common.TYPE_ENTRY, **_common.HEAD_SCHEMA}}
BUILD_KEYS = ("conditional",)   # accepted as false only (deepsets conditions its constituents)
EXPORTERS = {"lwtnn": "taggerflow.lwtnn:keras_to_lwtnn_sequential", "onnx": "taggerflow.onnx_export:export_onnx",
             "fdeep": "taggerflow.fdeep:keras_to_fdeep"}


def validate(model_section: Mapping[str, Any], cfg: Any, err) -> None:
    _common.validate_head(model_section, err)


def parse_config(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    from taggerflow import model_families  # noqa: PLC0415

    own = tuple(SCHEMA["training.model"]) + BUILD_KEYS
    _common.unknown_keys(model_cfg, own, model_families.other_keys(FAMILY), FAMILY)
    _common.widths(model_cfg, "phi_layers", [])  # a deepsets key inherited by a variant: must still be valid
    head = _common.parse_head(model_cfg)
    return {"type": FAMILY, "phi_layers": [], **head, "conditional": _common.parse_conditional(model_cfg, FAMILY)}


def build(cfg: dict[str, Any], candidate: Any, sequences: dict[str, tuple[int, int]], seeds: Any,
          add_vars: Any = None) -> tuple[list, Any]:
    """No inputs besides the candidate; ``sequences`` are ignored."""
    return [], candidate
