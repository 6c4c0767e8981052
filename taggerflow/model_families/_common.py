"""What the model families share: the Dense head after the family's own layers (``f_layers``, the
activation and its ``alpha``, ``batch_norm``, ``dropout``), its schema entries, defaults and checks.
No TensorFlow here (config load imports it)."""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np

ACTIVATIONS = ("relu", "linear", "sigmoid", "tanh", "elu", "leaky_relu", "swish", "silu")
#: the activations with a parameter, and its default
DEFAULT_ALPHA = {"leaky_relu": 0.2, "elu": 1.0}
_NUM = (int, float)

#: training.model keys of every family: (types, required, default)
TYPE_ENTRY = (str, True)
HEAD_SCHEMA = {
    "f_layers": (list, True, [64, 32]),
    "activation": (str, False, "relu"),
    "batch_norm": (bool, False, False),
    "dropout": (_NUM, False, 0.0),
    "alpha": (_NUM, False, None),   # None: DEFAULT_ALPHA of the activation
}


def default(schema: Mapping[str, tuple], key: str) -> Any:
    value = schema[key][2]
    return list(value) if isinstance(value, list) else value


def widths(cfg: Mapping[str, Any], key: str, default_value: list[int]) -> list[int]:
    value = cfg.get(key, default_value)
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"model config key {key!r}: expected a list of positive integers, got {value!r}")
    out = []
    for w in value:
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1:
            raise ValueError(f"model config key {key!r}: expected a list of positive integers, got {value!r}")
        out.append(int(w))
    return out


def unknown_keys(model_cfg: Mapping[str, Any], allowed: tuple, ignored: set, family: str) -> None:
    unknown = sorted(set(model_cfg) - set(allowed) - set(ignored))
    if unknown:
        raise ValueError(f"model config: unknown key(s) {unknown} for type {family!r}; allowed: {list(allowed)}")


def parse_head(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The head keys validated, with their defaults (raises ValueError naming the key)."""
    activation = model_cfg.get("activation", default(HEAD_SCHEMA, "activation"))
    if activation not in ACTIVATIONS:
        raise ValueError(f"model config key 'activation': unknown activation {activation!r}; "
                         f"expected one of {list(ACTIVATIONS)}")
    if activation == "swish":
        activation = "silu"
    alpha = model_cfg.get("alpha")
    if alpha is not None:
        if activation not in DEFAULT_ALPHA:
            raise ValueError(f"model config key 'alpha': only used by {sorted(DEFAULT_ALPHA)}, "
                             f"not by activation {activation!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha < 0:
            raise ValueError(f"model config key 'alpha': expected a finite number >= 0, got {alpha!r}")
        alpha = float(alpha)
    elif activation in DEFAULT_ALPHA:
        alpha = DEFAULT_ALPHA[activation]
    batch_norm = model_cfg.get("batch_norm", default(HEAD_SCHEMA, "batch_norm"))
    if not isinstance(batch_norm, bool):
        raise ValueError(f"model config key 'batch_norm': expected true/false, got {batch_norm!r}")
    dropout = model_cfg.get("dropout", default(HEAD_SCHEMA, "dropout"))
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"model config key 'dropout': expected a rate in [0, 1), got {dropout!r}")
    return {"f_layers": widths(model_cfg, "f_layers", default(HEAD_SCHEMA, "f_layers")), "activation": activation,
            "alpha": alpha, "batch_norm": batch_norm, "dropout": float(dropout)}


def parse_conditional(model_cfg: Mapping[str, Any], family: str) -> bool:
    """``conditional`` (candidate variables appended to every constituent): deepsets only."""
    conditional = model_cfg.get("conditional", False)
    if not isinstance(conditional, bool):
        raise ValueError(f"model config key 'conditional': expected true/false, got {conditional!r}")
    if conditional and family != "deepsets":
        raise ValueError("model config key 'conditional': only the deepsets model conditions its constituents")
    return conditional


def validate_head(model_section: Mapping[str, Any], err: Callable[[str, str], Exception]) -> None:
    """Config-load check of the head: an activation every exporter evaluates."""
    if model_section.get("activation", "relu") not in ACTIVATIONS:
        raise err("activation", f"'{model_section.get('activation')}' cannot be evaluated by lwtnn")


def validate_needs_collections(model_section: Mapping[str, Any], cfg: Any, err: Callable[[str, str], Exception]) -> None:
    if not cfg.collections:
        raise err("type", f"{model_section['type']} needs at least one collection in features.collections")

