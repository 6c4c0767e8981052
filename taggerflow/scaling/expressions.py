"""One chunk's raw values: the branches a FeatureScaling job reads, the variables' expressions and
selections evaluated on numpy views of the chunk."""

from __future__ import annotations

from typing import TYPE_CHECKING

import awkward as ak
import numpy as np

from taggerflow.io import evaluate
from taggerflow.scaling.names import ScalingError

if TYPE_CHECKING:
    from taggerflow.config import Config


def scaling_branches(cfg: Config) -> dict[str, str]:
    """The input branches a FeatureScaling job reads -> the config key that needs them."""
    need: dict[str, str] = {}
    for var in cfg.candidate_variables:
        for n in var.all_names_used:
            need.setdefault(n, f"features.candidate.{var.name}")
    for coll in cfg.collections:
        key = f"features.collections.{coll.name}"
        for var in coll.variables:
            for n in var.all_names_used:
                branch = n[len("cand_"):] if n.startswith("cand_") else f"{coll.name}_{n}"
                need.setdefault(branch, f"{key}.variables.{var.name}")
        need.setdefault(f"{coll.name}_{_count_field(coll)}", key)
        if coll.cone is not None:
            need.setdefault("pt", f"{key}.cone")
            need.setdefault(f"{coll.name}_{coll.cone.deta}", f"{key}.cone")
            need.setdefault(f"{coll.name}_{coll.cone.dphi}", f"{key}.cone")
    return need


def _count_field(coll) -> str:
    """A constituent field of the collection whose list lengths give the constituent counts."""
    for var in coll.variables:
        for name in var.names_used:
            if not name.startswith("cand_"):
                return name
    if coll.sort_by:
        return coll.sort_field
    if coll.cone is not None:
        return coll.cone.deta
    raise ScalingError(f"collection '{coll.name}': no variable reads a constituent branch")


class _ChunkArrays:
    """numpy views of one chunk's branches, each converted once (through the layout: the
    high-level awkward field access costs more than the arithmetic on small chunks)."""

    def __init__(self, chunk: ak.Array):
        self.chunk = chunk
        layout = chunk.layout
        self.record = layout if isinstance(layout, ak.contents.RecordArray) else None
        self._flat: dict[str, np.ndarray] = {}
        self._jagged: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._repeated: dict[tuple, tuple] = {}   # (branch, id(counts)) -> (counts, values)

    def _field(self, branch: str):
        if self.record is not None and branch in self.record.fields:
            return self.record.content(branch)
        return None

    def flat(self, branch: str) -> np.ndarray:
        a = self._flat.get(branch)
        if a is None:
            lay = self._field(branch)
            if isinstance(lay, ak.contents.NumpyArray) and lay.data.ndim == 1:
                a = np.asarray(lay.data)
            else:
                a = ak.to_numpy(self.chunk[branch])
            self._flat[branch] = a
        return a

    def jagged(self, branch: str) -> np.ndarray:
        """The content of all lists of a jagged branch, concatenated."""
        r = self._jagged.get(branch)
        if r is None:
            lay = self._field(branch)
            if isinstance(lay, ak.contents.ListOffsetArray) and isinstance(lay.content, ak.contents.NumpyArray) \
                    and lay.content.data.ndim == 1:
                off = np.asarray(lay.offsets)
                r = (np.asarray(lay.content.data)[off[0]:off[-1]], off)
            else:
                arr = self.chunk[branch]
                counts = ak.to_numpy(ak.num(arr, axis=1)).astype(np.int64)
                r = (ak.to_numpy(ak.flatten(arr, axis=1)), np.concatenate([[0], np.cumsum(counts)]))
            self._jagged[branch] = r
        return r[0]

    def counts(self, branch: str) -> np.ndarray:
        """List lengths of a jagged branch."""
        self.jagged(branch)
        off = self._jagged[branch][1]
        return np.diff(off)

    def repeated(self, branch: str, counts: np.ndarray) -> np.ndarray:
        # per (branch, counts): two collections repeat the same candidate value by their own counts
        hit = self._repeated.get((branch, id(counts)))
        if hit is None or hit[0] is not counts:
            hit = self._repeated[(branch, id(counts))] = (counts, np.repeat(self.flat(branch), counts))
        return hit[1]


def _evaluate_into(out: np.ndarray, var, ns: dict) -> None:
    if len(var.names_used) == 1 and var.expression.strip() == var.names_used[0]:
        out[:] = ns[var.names_used[0]]
    else:
        with np.errstate(all="ignore"):  # NaN/inf results are counted and reported, not warned about
            out[:] = np.asarray(evaluate(var.expression, ns))


def _apply_selection(x: np.ndarray, i: int, var, ns: dict, rejected: np.ndarray | None) -> np.ndarray | None:
    """Set the values of row i of the (k, m) block ``x`` failing ``var.selection`` (evaluated on
    ``ns``) to NaN and mark them in ``rejected`` ((k, m) bool, made on first use); returns it."""
    with np.errstate(all="ignore"):
        keep = np.asarray(evaluate(var.selection, ns))
    bad = ~np.broadcast_to(keep if keep.dtype == np.bool_ else keep != 0, x[i].shape)
    if bad.any():
        if rejected is None:
            rejected = np.zeros(x.shape, dtype=np.bool_)
        rejected[i] = bad
        x[i][bad] = np.nan
    return rejected


def _candidate_block(variables, arrs: _ChunkArrays, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(k, n) raw values of the candidate variables and the (k, n) mask of values cut by their
    selections (None when nothing is cut); cut values are NaN in the block."""
    x = np.empty((len(variables), n))
    rejected = None
    for i, var in enumerate(variables):
        _evaluate_into(x[i], var, {name: arrs.flat(name) for name in var.names_used})
        if var.selection:
            rejected = _apply_selection(x, i, var, {name: arrs.flat(name) for name in var.selection_names},
                                        rejected)
    return x, rejected


def _collection_block(coll, arrs: _ChunkArrays) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(k, sum counts) raw values of one collection's variables, the counts per candidate and the
    (k, sum counts) mask of values cut by the variables' selections (None when nothing is cut)."""
    counts = arrs.counts(f"{coll.name}_{_count_field(coll)}")
    m = int(counts.sum())
    x = np.empty((len(coll.variables), m))

    def namespace(names) -> dict:
        ns = {}
        for name in names:
            if name.startswith("cand_"):
                ns[name] = arrs.repeated(name[len("cand_"):], counts)
            else:
                data = arrs.jagged(f"{coll.name}_{name}")
                if len(data) != m:
                    raise ScalingError(f"collection '{coll.name}': branch {coll.name}_{name} has "
                                       f"{len(data)} values, expected {m} (not the same counter?)")
                ns[name] = data
        return ns

    rejected = None
    for i, var in enumerate(coll.variables):
        _evaluate_into(x[i], var, namespace(var.names_used))
        if var.selection:
            rejected = _apply_selection(x, i, var, namespace(var.selection_names), rejected)
    return x, counts, rejected
