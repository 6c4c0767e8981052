"""Input formats: one module per input source, registered by one line in ``MODULES`` (issue #15).

Each module ``taggerflow.formats.<name>`` defines

* ``FORMAT`` (the ``inputs.format`` value, also the name of its ``inputs.<FORMAT>`` section),
* ``DEFAULT_TREE`` (the tree read when ``inputs.tree`` is not given),
* ``SCHEMA`` ({section pattern: {key: (types, required[, default])}}, as schema.legacy_schema()'s ``_sub``; ``{}`` for
  a format without a section of its own),
* ``validate(section, cfg, err)`` (semantic checks at config load, on ``inputs.<FORMAT>`` or ``{}``;
  raise ``err(key, message)``),
* ``open_source(path, tree, section) -> taggerflow.readers.Source`` (:class:`taggerflow.formats.base.Source`),

and optionally ``NEEDS_SECTION`` (a format whose section must be given: the hint of the error) and
``EVENT_FIELDS = True`` (a per-event format whose Source serves ``event`` and ``event_arrays``: the
sum of generated weights runs over its events, taggerflow/event_weights.py).
``readers.FORMATS`` and ``config.INPUT_FORMATS`` are ``NAMES``. taggerflow/formats/candidate_tree.py
is the smallest module to copy, tests/test_formats_registry.py the test.

The modules are imported when first needed (this package imports none of them).
"""

from __future__ import annotations

import importlib

#: format name -> module (the order of the "supported: ..." lists)
MODULES = {
    "candidate_tree": "taggerflow.formats.candidate_tree",
    "nanoaod": "taggerflow.formats.nanoaod",
    "h5": "taggerflow.formats.h5",
    "shards": "taggerflow.formats.shards",
    "physlite": "taggerflow.formats.physlite",
    "delphes": "taggerflow.formats.delphes",
}
NAMES = tuple(MODULES)   # readers.FORMATS, config.INPUT_FORMATS


def module(name: str):
    return importlib.import_module(MODULES[name])


def schemas() -> dict:
    """The config schema sections of every format module (merged into schema.legacy_schema()'s ``_sub``)."""
    out: dict = {}
    for name in MODULES:
        out.update(module(name).SCHEMA)
    return out


def event_field_formats() -> tuple[str, ...]:
    """The formats whose sources serve per-event fields (``EVENT_FIELDS``: PHYSLITE, Delphes)."""
    return tuple(name for name in MODULES if getattr(module(name), "EVENT_FIELDS", False))


def section_keys() -> dict:
    """The ``inputs.<format>`` keys of the formats that have a section (schema.legacy_schema()'s ``inputs``)."""
    return {name: (dict, False) for name in MODULES if f"inputs.{name}" in module(name).SCHEMA}


def formats_used(cfg) -> dict[str, str]:
    """{config key: format} of ``inputs.format`` and every ``inputs.datasets.<ds>.format``."""
    inp = cfg.raw["inputs"]
    out = {"inputs.format": inp["format"]}
    for name, ds in (inp.get("datasets") or {}).items():
        if "format" in ds:
            out[f"inputs.datasets.{name}.format"] = ds["format"]
    return out


def in_use(cfg, name: str) -> bool:
    """Whether the inputs are read with format ``name`` (never in the demo: candidate trees)."""
    return not cfg.is_demo and name in formats_used(cfg).values()


def validate(cfg, err) -> None:
    """Config load: every format named is known; each format's section is given where it is needed
    and passes its module's checks (those of formats in use, and every section given)."""
    for key, fmt in formats_used(cfg).items():
        if fmt not in MODULES:
            raise err(key, f"unknown format '{fmt}' (supported: {', '.join(MODULES)})")
    inp, used = cfg.raw["inputs"], set(formats_used(cfg).values())
    for name in MODULES:
        mod = module(name)
        hint = getattr(mod, "NEEDS_SECTION", None)
        if hint and in_use(cfg, name) and not inp.get(name):
            raise err(f"inputs.{name}", f"needed by format '{name}' ({hint})")
        if name in used or inp.get(name) is not None:
            mod.validate(inp.get(name) or {}, cfg, err)
