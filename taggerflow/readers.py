"""Input readers: one uniform chunk schema out of every input format.

Every reader serves *candidates* as awkward record arrays whose fields are

* flat candidate fields (``pt``, ``eta``, the truth branch, ...), one value per candidate;
* jagged constituent fields ``<coll>_<field>`` (a list per candidate).

so that Spectrum, ShuffleMergeSpectral and every later stage see the same thing whatever the input.
Each input format is one module of :mod:`taggerflow.formats` (``candidate_tree``, ``nanoaod``,
``h5``, ``shards``, ``physlite``, ``delphes``: its config section, its checks and its
:class:`Source`), registered by one line there; this module turns the configuration into an
:class:`InputSpec`, opens a file through its format's module (:func:`open_source`) and applies the
aliases and the selection.

A tree entry ("entry" below) is what the files are split by: a candidate for candidate trees and HDF5
files, an event for NanoAOD. Paths may be local files, globs (expanded by the configuration) or
``root://`` URLs (read through uproot's xrootd source). The configuration's ``inputs.aliases``
(computed fields) and ``inputs.selection`` are applied to every chunk while reading
(:func:`prepare`), identically in every stage. Errors name the file, the branch and the config key.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import awkward as ak
import numpy as np

from taggerflow import formats as format_modules
from taggerflow.expressions import evaluate, expression_names
from taggerflow.formats.base import Source, is_url  # noqa: F401  (readers.Source: what every reader is)
from taggerflow.io import InputError

FORMATS = format_modules.NAMES


def split_location(path: str) -> tuple[str, str]:
    """(directory, file name) of a local path or a URL (``root://host//dir/file.root``)."""
    path = str(path)
    if is_url(path):
        scheme, rest = path.split("://", 1)
        rest = rest.split("?", 1)[0]
        head, _, name = rest.rpartition("/")
        return f"{scheme}://{head}", name
    return os.path.dirname(path), os.path.basename(path)


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Alias:
    name: str
    expression: str
    names_used: tuple[str, ...]


@dataclass(frozen=True)
class InputSpec:
    """How to read the files of one dataset (from the config's ``inputs`` section)."""

    format: str = "candidate_tree"
    tree: str = "candidates"
    chunk_size: int = 100_000
    selection: str | None = None
    selection_names: tuple[str, ...] = ()
    aliases: tuple[Alias, ...] = ()
    sections: dict = field(default_factory=dict)   # {format: inputs.<format>} of taggerflow.formats
    dataset: str = ""   # named in the errors of open_source

    @property
    def alias_names(self) -> list[str]:
        return [a.name for a in self.aliases]

    def raw_fields_for(self, wanted: Sequence[str]) -> set[str]:
        """Raw (reader) fields needed to compute ``wanted`` and the selection, through the aliases."""
        need = set(wanted) | set(self.selection_names)
        for a in reversed(self.aliases):
            if a.name in need:
                need.discard(a.name)
                need |= set(a.names_used)
        return need


def input_spec(cfg, dataset: str | None = None) -> InputSpec:
    """The InputSpec of ``dataset`` (the demo datasets are candidate trees)."""
    from taggerflow.event_weights import WEIGHT_FIELD, weight_expression, weights_configured

    inp = cfg.raw["inputs"]
    fmt = inp["format"]
    if cfg.is_demo:
        fmt = "candidate_tree"
    elif dataset is not None:
        fmt = (inp.get("datasets") or {}).get(dataset, {}).get("format", fmt)
    tree = inp.get("tree") or format_modules.module(fmt).DEFAULT_TREE
    if cfg.is_demo:
        tree = cfg.settings("demo").tree
    sel = inp.get("selection")
    aliases = tuple(Alias(n, e, expression_names(e)) for n, e in (inp.get("aliases") or {}).items())
    sections = {n: dict(inp.get(n) or {}) for n in format_modules.MODULES}
    if dataset is not None and weights_configured(cfg):   # the event weight: an alias read before the selection
        expr = weight_expression(cfg, dataset)
        aliases = (Alias(WEIGHT_FIELD, expr, expression_names(expr)),) + aliases
        # NanoAOD serves the event branches it is told about (besides the default run/lumi/event)
        sections["nanoaod"]["weight_branches"] = list(expression_names(expr))
    return InputSpec(format=fmt, tree=tree, chunk_size=cfg.chunk_size, selection=sel,
                     selection_names=expression_names(sel) if sel else (), aliases=aliases,
                     sections=sections, dataset=dataset or "")


def open_source(spec: InputSpec, path: str) -> Source:
    """Open one input file of the given format; errors name the file, its dataset (and the config key)."""
    try:
        return _open_source(spec, path)
    except InputError as e:
        if spec.dataset:
            raise InputError(f"{e} (dataset '{spec.dataset}')") from None
        raise


def _open_source(spec: InputSpec, path: str) -> Source:
    if spec.format not in format_modules.MODULES:
        raise InputError(f"{path}: unknown input format '{spec.format}' (supported: "
                         f"{', '.join(format_modules.MODULES)})")
    return format_modules.module(spec.format).open_source(path, spec.tree, spec.sections.get(spec.format, {}))


# ---------------------------------------------------------------------------------------------
def available_fields(spec: InputSpec, source: Source) -> list[str]:
    """Fields of the prepared chunks: the reader's fields plus the aliases (in order, no duplicates)."""
    out = source.fields()
    return out + [a for a in spec.alias_names if a not in out]


def prepare(spec: InputSpec, chunk: ak.Array, path: str = "") -> tuple[ak.Array, int]:
    """Apply the aliases, then the selection. Returns (selected candidates, candidates before the selection)."""
    n = len(chunk)
    present = set(chunk.fields)
    for a in spec.aliases:
        if not set(a.names_used) <= present:
            continue  # not needed for this read (raw_fields_for decided)
        try:
            value = evaluate(a.expression, {k: chunk[k] for k in a.names_used})
        except Exception as e:
            raise InputError(f"{path}: alias '{a.name}' = '{a.expression}' (config key inputs.aliases.{a.name}) "
                             f"failed: {type(e).__name__}: {e}") from None
        if not isinstance(value, ak.Array):
            value = np.broadcast_to(np.asarray(value), (n,)) if np.ndim(value) == 0 else np.asarray(value)
        chunk = ak.with_field(chunk, value, a.name)
        present.add(a.name)
    if spec.selection:
        try:
            mask = evaluate(spec.selection, {k: chunk[k] for k in spec.selection_names})
            mask = np.broadcast_to(np.asarray(ak.to_numpy(mask) if isinstance(mask, ak.Array) else mask,
                                              dtype=bool), (n,))
        except Exception as e:
            raise InputError(f"{path}: selection '{spec.selection}' (config key inputs.selection) failed: "
                             f"{type(e).__name__}: {e}") from None
        if not mask.all():
            chunk = chunk[mask]
    return chunk, n


def read_prepared(spec: InputSpec, source: Source, start: int, stop: int, wanted: Sequence[str] | None,
                  ) -> tuple[ak.Array, int]:
    """Read entries [start, stop) with the fields needed for ``wanted`` (None: every field), apply the
    aliases and the selection; returns (candidates with the ``wanted`` fields, candidates read)."""
    avail = set(source.fields())
    if wanted is None:
        raw = source.fields()
    else:
        need = spec.raw_fields_for(wanted)
        missing = sorted(need - avail)
        if missing:
            raise InputError(f"{source.path}: branch '{missing[0]}' (needed by the config: inputs.selection, "
                             f"inputs.aliases or a field read by this stage) not found in {source.describe()}")
        raw = [f for f in source.fields() if f in need]
    chunk = source.read(start, stop, raw)
    chunk, n = prepare(spec, chunk, source.path)
    if wanted is not None:
        chunk = chunk[list(wanted)] if len(wanted) > 0 else chunk
    return chunk, n


def iter_prepared(spec: InputSpec, source: Source, start: int, stop: int, wanted: Sequence[str] | None,
                  step: int | None = None) -> Iterator[tuple[ak.Array, int]]:
    step = max(1, int(step or spec.chunk_size))
    pos = start
    while pos < stop:
        nxt = min(pos + step, stop)
        yield read_prepared(spec, source, pos, nxt, wanted)
        pos = nxt


def match_any(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)
