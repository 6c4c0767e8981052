"""Model families (issue #15: one module per model family, registered by one line in :data:`MODULES`).

Each module ``taggerflow.model_families.<name>`` defines

* ``FAMILY`` (the ``training.model.type`` value),
* ``SCHEMA`` ({section pattern: {key: (types, required[, default])}}, as schema.legacy_schema()'s ``_sub``;
  the optional third element is the key's default, the only place it is written),
* ``validate(model_section, cfg, err)``: semantic checks at config load; ``err(key, message)``
  returns the exception to raise, ``key`` relative to the model section (e.g. ``"type"``),
* ``parse_config(model_cfg)``: the model section with every default filled in (ValueError naming the key),
* ``build(cfg, inputs) -> (inputs, x)``: the family's Keras graph from its inputs to the last tensor
  before the shared Dense head (``f_layers`` and the softmax ``output``, :func:`taggerflow.models.build_model`),
* ``EXPORTERS``: {exporter: converter entry point ``"module:function"``} for the exporters of
  :data:`EXPORTER_NAMES` it supports; an exporter not listed is refused for the family.

Nothing here imports TensorFlow/Keras: the registry, the schemas and the validation run at config
load; the families' ``build`` import Keras when called.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

#: family name (``training.model.type``) -> module
MODULES = {"deepsets": "taggerflow.model_families.deepsets", "dense": "taggerflow.model_families.dense",
           "rnn": "taggerflow.model_families.rnn"}
NAMES = tuple(MODULES)
#: the exporters a family may support: ConvertLwtnn writes lwtnn + ONNX, ConvertFdeep frugally-deep
EXPORTER_NAMES = ("lwtnn", "onnx", "fdeep")
TYPE_KEY = "training.model.type"
SECTION = "training.model"


class ExportRefused(ValueError):
    """The model family has no converter for this exporter (one line, naming the family and the key)."""


def names() -> tuple[str, ...]:
    """The registered families (read at call time, so a family registered later is included)."""
    return tuple(MODULES)


def module(name: str):
    if name not in MODULES:
        raise KeyError(f"unknown model family {name!r} (registered: {', '.join(MODULES)})")
    return importlib.import_module(MODULES[name])


def _spec_entries(name: str) -> dict:
    return module(name).SCHEMA.get(SECTION, {})


def schemas() -> dict:
    """The ``training.model`` schema section for schema.legacy_schema()'s ``_sub``: the union of the
    families' keys (a variant inherits the base section's keys of another family), as (types,
    required); a key is required if every family requires it. A family's nested sections are
    added as they are. A key two families declare with
    different types is a programming error."""
    merged: dict[str, tuple] = {}
    required: dict[str, bool] = {}
    for name in names():
        for key, entry in _spec_entries(name).items():
            types, req = entry[0], entry[1]
            if key in merged and merged[key][0] != types:
                raise TypeError(f"model family {name!r}: {SECTION}.{key} declared as {types!r}, another "
                                f"family declares {merged[key][0]!r}")
            merged[key] = (types, False)
            required[key] = required.get(key, True) and req
    for name in names():  # a key a family does not declare at all is not required by it
        missing = set(merged) - set(_spec_entries(name))
        for key in missing:
            required[key] = False
    # a default every family that declares the key agrees on is the section's; others stay None (the
    # family's default, filled in by its parse_config)
    shared: dict[str, Any] = {}
    for key in merged:
        found = {repr(e[2]): e[2] for n in names() for k, e in _spec_entries(n).items() if k == key and len(e) > 2}
        declared = sum(key in _spec_entries(n) for n in names())
        with_default = sum(key in _spec_entries(n) and len(_spec_entries(n)[key]) > 2 for n in names())
        if len(found) == 1 and with_default == declared and not required[key]:
            shared[key] = next(iter(found.values()))
    out = {SECTION: {key: (types, required[key]) + ((shared[key],) if key in shared else ())
                     for key, (types, _) in merged.items()}}
    for name in names():  # a family's nested sections (e.g. "training.model.<key>"), as declared
        for pattern, spec in module(name).SCHEMA.items():
            if pattern != SECTION:
                out[pattern] = {key: tuple(entry[:2]) for key, entry in spec.items()}
    return out


def defaults(name: str) -> dict[str, Any]:
    """The family's defaults (the third element of its SCHEMA entries)."""
    return {key: entry[2] for key, entry in _spec_entries(name).items() if len(entry) > 2}


def validate(model_section: Mapping[str, Any], cfg: Any, err: Callable[[str, str], Exception]) -> None:
    """Config-load checks of one (variant's) model section: a registered type, then the family's own."""
    mtype = model_section.get("type")
    if mtype not in MODULES:
        raise err("type", f"unknown model type '{mtype}' (allowed: {tuple(MODULES)})")
    module(mtype).validate(model_section, cfg, err)


def keys(name: str) -> tuple[str, ...]:
    """The model keys the family reads: its schema's and its build options (``BUILD_KEYS``)."""
    mod = module(name)
    return tuple(mod.SCHEMA.get(SECTION, {})) + tuple(getattr(mod, "BUILD_KEYS", ()))


def other_keys(name: str) -> set[str]:
    """The keys of the other families only: a variant inherits them from the base section."""
    return {k for other in names() if other != name for k in keys(other)} - set(keys(name))


def parse_config(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The model section with every default filled in, by its family (raises ValueError naming the key)."""
    if not isinstance(model_cfg, Mapping):
        raise ValueError(f"model config: expected a mapping, got {type(model_cfg).__name__}")
    mtype = model_cfg.get("type")
    if mtype not in MODULES:
        raise ValueError(f"model config key 'type': unknown model type {mtype!r}; expected one of {list(MODULES)}")
    return module(mtype).parse_config(model_cfg)


def supports(family: str, exporter: str) -> bool:
    if exporter not in EXPORTER_NAMES:
        raise ValueError(f"unknown exporter {exporter!r} (known: {', '.join(EXPORTER_NAMES)})")
    return exporter in module(family).EXPORTERS


def require_exporter(model_cfg: Mapping[str, Any], exporter: str, key: str = TYPE_KEY) -> None:
    """Raise ExportRefused (one line naming the family and ``key``) unless the model's family
    supports ``exporter``."""
    family = (model_cfg or {}).get("type")
    if family not in MODULES:
        raise ExportRefused(f"{key}: unknown model type '{family}' (allowed: {', '.join(MODULES)})")
    if not supports(family, exporter):
        have = ", ".join(e for e in EXPORTER_NAMES if e in module(family).EXPORTERS) or "none"
        raise ExportRefused(f"{key}: model family '{family}' has no {exporter} export "
                            f"(its exporters: {have})")


def converter(family: str, exporter: str) -> Callable:
    """The family's converter entry point for ``exporter`` (imported now; raises ExportRefused)."""
    require_exporter({"type": family}, exporter)
    module_name, function = module(family).EXPORTERS[exporter].split(":")
    return getattr(importlib.import_module(module_name), function)


def lwtnn_layers() -> dict[str, Callable]:
    """The lwtnn converters of the families' own Keras layers: layer class name -> function
    ``(converter, layer, knode, tensor) -> node index`` (e.g. the rnn family's LSTM/GRU)."""
    out = {}
    for name in names():
        for cls, entry in getattr(module(name), "LWTNN_LAYERS", {}).items():
            module_name, function = entry.split(":")
            out[cls] = getattr(importlib.import_module(module_name), function)
    return out


def keras_layer_modules() -> list[str]:
    """The modules defining the families' custom Keras layers (imported before a model is loaded)."""
    return [m for m in (getattr(module(name), "KERAS_LAYERS_MODULE", None) for name in names()) if m]


def variant_model(cfg: Any, variant_name: str) -> tuple[dict, str]:
    """The model section of the training variant ``variant_name`` and the key its ``type`` comes
    from (``training.variants[i].model.type`` when the variant overrides the model, else
    ``training.model.type``)."""
    variants = cfg.training_variants()
    for i, variant in enumerate(variants):
        if variant["name"] == variant_name:
            overrides = (cfg.raw["training"].get("variants") or [{}])[i]
            where = f"training.variants[{i}].model.type" if "type" in (overrides.get("model") or {}) else TYPE_KEY
            return variant["model"], where
    raise ValueError(f"training.variants: no variant named '{variant_name}' "
                     f"(variants: {', '.join(v['name'] for v in variants)})")
