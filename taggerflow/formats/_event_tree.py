"""What the per-event formats of this package share: a tree with one entry per event, candidates =
the objects of one collection, constituents = objects of other collections reached through links
(PHYSLITE element links, Delphes references).

Names. Every numeric per-object field of a collection is served under the file's own name with the
collection's prefix dropped (``AnalysisJetsAuxDyn.pt`` -> ``pt``, ``Jet/Jet.PT`` -> ``PT``), as the
NanoAOD reader drops ``Tau_``; ``variables`` (``{pipeline name: expression over the file's names}``)
adds the pipeline's names, computed per object, e.g. ``pt: "pt / 1000"`` for ATLAS' MeV or
``pt: PT`` for Delphes. A variable named like a file field replaces it. Constituent fields are
``<constituent name>_<name>``; event fields (run/event numbers) are repeated for every candidate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import awkward as ak
import numpy as np
import uproot

from taggerflow.expressions import evaluate, expression_names
from taggerflow.formats.base import Source, close_tree
from taggerflow.io import InputError, open_tree


@dataclass
class Objects:
    """One collection of per-event objects: its numeric branches and its computed variables."""

    branches: dict[str, str]                 # file name -> branch key
    variables: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)  # name -> (expr, names)
    size_branch: str = ""                    # gives the number of objects of each event
    links: tuple[str, ...] = ()              # branches read to attach this collection (constituents)

    def names(self) -> list[str]:
        return list(self.branches) + [v for v in self.variables if v not in self.branches]

    def raw_for(self, names: Sequence[str]) -> set[str]:
        """File names needed to compute ``names``."""
        out: set[str] = set()
        for n in names:
            out |= set(self.variables[n][1]) if n in self.variables else {n}
        return out

    def values(self, name: str, flat: dict[str, np.ndarray]) -> np.ndarray:
        """Value of ``name`` per object, from the flat arrays of the file names it needs."""
        if name not in self.variables:
            return flat[name]
        expr, used = self.variables[name]
        value = evaluate(expr, {n: flat[n] for n in used})
        n = len(next(iter(flat.values()))) if flat else 0
        return np.broadcast_to(np.asarray(ak.to_numpy(value) if isinstance(value, ak.Array) else value), (n,))


def parse_variables(section: dict, key: str, available: dict[str, str], path: str,
                    ) -> dict[str, tuple[str, tuple[str, ...]]]:
    """``variables`` of a config section -> {name: (expression, file names used)}; a name the file
    lacks is an error naming the file, the name and the config key."""
    out = {}
    for name, expr in (section.get("variables") or {}).items():
        used = expression_names(str(expr))
        for n in used:
            if n not in available:
                raise InputError(f"{path}: '{n}' (used by config key {key}.variables.{name}) not found in the "
                                 f"collection's fields ({', '.join(sorted(available)[:12])}, ...)")
        out[name] = (str(expr), used)
    return out


def is_numeric_jagged(branch) -> bool:
    """A branch holding a list of numbers per event (one number per object)."""
    try:
        interp = branch.interpretation
    except Exception:
        return False
    content = getattr(interp, "content", None)
    # AsStridedObjects (TLorentzVector, TRef) is an AsDtype too: records, not numbers
    return isinstance(interp, uproot.AsJagged) and isinstance(content, uproot.AsDtype) and \
        not isinstance(content, uproot.AsStridedObjects) and not content.inner_shape


class EventTreeSource(Source):
    """Base of the per-event sources. Subclasses fill ``cands``, ``event`` ({name: branch}) and
    ``cons`` ({name: Objects}) in ``_setup`` and implement ``_count`` and ``_pairs``."""

    section_key = "inputs.?"

    def __init__(self, path: str, tree: str, section: dict):
        self.path, self.tree_name = path, tree
        self.tree = open_tree(path, tree, direct=True)
        try:
            self.num_entries = int(self.tree.num_entries)
            self.cands: Objects
            self.event: dict[str, str] = {}
            self.cons: dict[str, Objects] = {}
            self._setup(section)
        except BaseException:
            self.close()
            raise

    # -- what a subclass provides ----------------------------------------------------------
    def _setup(self, section: dict) -> None:
        raise NotImplementedError

    def _count(self, arrs: dict, objects: Objects) -> np.ndarray:
        """Number of objects of ``objects`` in each event of the chunk."""
        raise NotImplementedError

    def _pairs(self, arrs: dict, name: str, ncand: np.ndarray, ncons: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """(candidate row, constituent row) of every link of constituent collection ``name``, both
        counted from the start of the chunk, in the file's link order."""
        raise NotImplementedError

    def _event_values(self, arrs: dict, name: str) -> np.ndarray:
        return ak.to_numpy(arrs[self.event[name]])

    def event_arrays(self, names: Sequence[str], start: int, stop: int) -> dict[str, np.ndarray]:
        """One value per event of the event fields ``names``, entries [start, stop): every event,
        with or without candidates (the sum of generated weights counts them all)."""
        arrs = self._read({self.event[n] for n in names}, start, stop)
        return {n: self._event_values(arrs, n) for n in names}

    # -- Source ---------------------------------------------------------------------------
    def fields(self) -> list[str]:
        cand = self.cands.names()
        out = cand + [e for e in self.event if e not in cand]
        for name, objs in self.cons.items():
            out += [f"{name}_{f}" for f in objs.names()]
        return out

    def collections(self) -> dict[str, list[str]]:
        return {name: objs.names() for name, objs in self.cons.items()}

    def cluster_starts(self) -> np.ndarray:
        # the basket boundaries shared by the branches this source reads (not by all of the tree's)
        try:
            common = None
            for key in self._branches_used():
                offsets = set(int(x) for x in self.tree[key].entry_offsets)
                common = offsets if common is None else common & offsets
            return np.array(sorted((common or set()) | {0, self.num_entries}), dtype=np.int64)
        except Exception:
            return np.array([0, self.num_entries], dtype=np.int64)

    def _branches_used(self) -> list[str]:
        keys = set(self.cands.branches.values()) | {self.cands.size_branch} | set(self.event.values())
        for objs in self.cons.values():
            keys |= set(objs.branches.values()) | {objs.size_branch} | set(objs.links)
        return sorted(k for k in keys if k)

    def check_integrity(self, fields: Sequence[str] | None = None) -> None:
        from taggerflow.integrity import check_baskets

        check_baskets(self.tree, self.path, self._branches_used())

    def close(self) -> None:
        close_tree(self.tree)

    def _read(self, keys: set[str], start: int, stop: int) -> dict:
        out = {}
        for key in sorted(keys):
            try:
                out[key] = self.tree[key].array(entry_start=start, entry_stop=stop, library="ak")
            except Exception as e:
                raise InputError(f"{self.path}: failed to read branch '{key}', entries {start}-{stop} of tree "
                                 f"'{self.tree_name}' ({type(e).__name__}: {e})") from None
        return out

    def read(self, start: int, stop: int, fields: Sequence[str]) -> ak.Array:
        fields = list(fields)
        cand_names = set(self.cands.names())
        cand_wanted, event_wanted, cons_wanted = [], [], {}
        for f in fields:
            if f in cand_names:
                cand_wanted.append(f)
            elif f in self.event:
                event_wanted.append(f)
            else:
                for name, objs in self.cons.items():
                    rest = f[len(name) + 1:]
                    if f.startswith(name + "_") and rest in objs.names():
                        cons_wanted.setdefault(name, []).append(rest)
                        break
                else:
                    raise InputError(f"{self.path}: no field '{f}' in {self.describe()}")
        cand_raw = self.cands.raw_for(cand_wanted)
        keys = {self.cands.size_branch} | {self.cands.branches[n] for n in cand_raw}
        keys |= {self.event[n] for n in event_wanted}
        cons_raw = {}
        for name, wanted in cons_wanted.items():
            objs = self.cons[name]
            cons_raw[name] = objs.raw_for(wanted)
            keys |= {objs.size_branch, *objs.links} | {objs.branches[n] for n in cons_raw[name]}
        arrs = self._read(keys, start, stop)

        ncand = self._count(arrs, self.cands)
        n_total = int(ncand.sum())
        flat = {n: ak.to_numpy(ak.flatten(arrs[self.cands.branches[n]], axis=1)) for n in cand_raw}
        out: dict = {}
        for f in cand_wanted:
            out[f] = self._checked(self.cands.values(f, flat), n_total, f"{self.section_key}.variables.{f}")
        for f in event_wanted:
            out[f] = np.repeat(self._event_values(arrs, f), ncand)
        for name, wanted in cons_wanted.items():
            objs = self.cons[name]
            ncons = self._count(arrs, objs)
            cand_row, cons_row = self._pairs(arrs, name, ncand, ncons)
            order = np.argsort(cand_row, kind="stable")
            counts = np.bincount(cand_row, minlength=n_total)[:n_total]
            take = cons_row[order]
            gathered = {n: ak.to_numpy(ak.flatten(arrs[objs.branches[n]], axis=1))[take] for n in cons_raw[name]}
            for f in wanted:
                value = self._checked(objs.values(f, gathered), len(take),
                                      f"{self.section_key}.constituents.{name}.variables.{f}")
                out[f"{name}_{f}"] = ak.unflatten(value, counts)
        if not out:
            return ak.Array(ak.contents.RecordArray([], [], length=n_total))
        return ak.Array({k: out[k] for k in fields})

    def _checked(self, value: np.ndarray, n: int, key: str) -> np.ndarray:
        value = np.asarray(value)
        if value.dtype.kind not in "biuf" or value.shape != (n,):
            raise InputError(f"{self.path}: {key} gives {value.dtype} values of shape {value.shape}, expected one "
                             f"number per object ({n})")
        return value
