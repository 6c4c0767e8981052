"""Input formats that live in a module of their own (issue #15: one module per input format, with
its own config schema section, registered by one line in readers.py and config.py).

Each module ``taggerflow.formats.<name>`` defines

* ``FORMAT`` (the ``inputs.format`` value, also the name of its ``inputs.<FORMAT>`` section),
* ``DEFAULT_TREE`` (the tree read when ``inputs.tree`` is not given),
* ``SCHEMA`` ({section pattern: {key: (types, required)}}, as config._schema's ``_sub``),
* ``validate(inputs_section, err)`` (semantic checks at config load),
* ``open_source(path, tree, section) -> readers.Source``.

The modules are imported when first needed (they import readers, which config must not import).
"""

from __future__ import annotations

import importlib

#: format name -> module
MODULES = {"physlite": "taggerflow.formats.physlite", "delphes": "taggerflow.formats.delphes"}
NAMES = tuple(MODULES)


def module(name: str):
    return importlib.import_module(MODULES[name])


def schemas() -> dict:
    """The config schema sections of every format module (merged into config._schema's ``_sub``)."""
    out: dict = {}
    for name in NAMES:
        out.update(module(name).SCHEMA)
    return out
