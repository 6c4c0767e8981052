"""Input readers: one uniform chunk schema out of every input format.

Every reader serves *candidates* as awkward record arrays whose fields are

* flat candidate fields (``pt``, ``eta``, the truth branch, ...), one value per candidate;
* jagged constituent fields ``<coll>_<field>`` (a list per candidate).

so that Spectrum, ShuffleMergeSpectral and every later stage see the same thing whatever the input:

``candidate_tree``
    one TTree entry per candidate (TauTuple-like): the branches as they are, jagged branches with a
    counter ``n<coll>`` grouped into collections.
``nanoaod``
    per-event trees (NanoAOD-style): the candidates are the elements of one collection
    (``inputs.nanoaod.collection``, e.g. ``Tau`` for the ``Tau_*`` branches), exploded to one row per
    object with the prefix dropped (``Tau_pt`` -> ``pt``); event branches (``run``, ``event``, ...) are
    repeated for every candidate of the event; constituent collections are attached through an index
    branch of the constituent collection (``index``: position of the candidate in its event, -1 for
    none) or through an association collection (``link``: pairs of candidate and constituent indices);
    with ``via`` both refer to the objects of another collection that each candidate points to
    (``Tau_jetIdx`` -> ``Jet``; ``JetPFCands`` -> ``PFCands``), and a candidate pointing to none (-1)
    has no constituents.
``h5``
    ATLAS training-dataset-dumper HDF5: a structured ``jets`` dataset (N,) and constituent datasets
    such as ``tracks`` (N, n_max) with a boolean ``valid`` field; the valid entries become the lists.
``physlite``, ``delphes``
    ATLAS PHYSLITE and Delphes per-event trees, constituents through element links / references:
    one module each in :mod:`taggerflow.formats` (registered in ``FORMATS`` and ``_open_source``).

A tree entry ("entry" below) is what the files are split by: a candidate for candidate trees and HDF5
files, an event for NanoAOD. Paths may be local files, globs (expanded by the configuration) or
``root://`` URLs (read through uproot's xrootd source). The configuration's ``inputs.aliases``
(computed fields) and ``inputs.selection`` are applied to every chunk while reading
(:func:`prepare`), identically in every stage. Errors name the file, the branch and the config key.
"""

from __future__ import annotations

import fnmatch
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import awkward as ak
import numpy as np
import uproot

from taggerflow import formats as format_modules
from taggerflow.io import InputError, collection_fields, evaluate, input_branches, open_tree, tree_keys

from taggerflow.config import INPUT_FORMATS as FORMATS  # noqa: E402  (one definition)
DEFAULT_EVENT_BRANCHES = ("run", "luminosityBlock", "event")


def is_url(path: str) -> bool:
    return "://" in str(path)


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
    nanoaod: dict = field(default_factory=dict)
    h5: dict = field(default_factory=dict)
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
    from taggerflow.config import expression_names

    inp = cfg.raw["inputs"]
    fmt = inp.get("format", "candidate_tree")
    if cfg.is_demo:
        fmt = "candidate_tree"
    elif dataset is not None:
        fmt = (inp.get("datasets") or {}).get(dataset, {}).get("format", fmt)
    tree = inp.get("tree", "Events" if fmt == "nanoaod" else format_modules.module(fmt).DEFAULT_TREE
                   if fmt in format_modules.NAMES else "candidates")
    if cfg.is_demo:
        tree = cfg.raw["demo"].get("tree", tree)
    sel = inp.get("selection")
    aliases = tuple(Alias(n, e, expression_names(e)) for n, e in (inp.get("aliases") or {}).items())
    nanoaod = dict(inp.get("nanoaod") or {})
    from taggerflow.event_weights import WEIGHT_FIELD, weight_expression, weights_configured

    if dataset is not None and weights_configured(cfg):   # the event weight: an alias read before the selection
        expr = weight_expression(cfg, dataset)
        aliases = (Alias(WEIGHT_FIELD, expr, expression_names(expr)),) + aliases
        nanoaod["weight_branches"] = list(expression_names(expr))
    return InputSpec(format=fmt, tree=tree, chunk_size=cfg.chunk_size, selection=sel,
                     selection_names=expression_names(sel) if sel else (), aliases=aliases,
                     nanoaod=nanoaod, h5=dict(inp.get("h5") or {}),
                     sections={n: dict(inp.get(n) or {}) for n in format_modules.NAMES}, dataset=dataset or "")


# ---------------------------------------------------------------------------------------------
class Source:
    """One input file. ``read(start, stop, fields)`` returns the candidates of entries [start, stop)."""

    path: str
    num_entries: int

    def fields(self) -> list[str]:
        raise NotImplementedError

    def collections(self) -> dict[str, list[str]]:
        """{collection: [field, ...]} of the jagged fields ``<coll>_<field>``."""
        raise NotImplementedError

    def read(self, start: int, stop: int, fields: Sequence[str]) -> ak.Array:
        raise NotImplementedError

    def cluster_starts(self) -> np.ndarray:
        """Entry numbers where all fields start a new compressed block (for aligned reads)."""
        return np.array([0, self.num_entries], dtype=np.int64)

    def has_fields(self, names) -> set[str]:
        """Those of ``names`` the file has."""
        return set(names) & set(self.fields())

    def check_fields(self, required: dict[str, str], provided: Sequence[str] = ()) -> None:
        present = self.has_fields(required) | set(provided)
        for name, key in required.items():
            if name not in present:
                raise InputError(f"{self.path}: branch '{name}' (needed by config key {key}) not found "
                                 f"in {self.describe()}")

    def describe(self) -> str:
        return "the file"

    def close(self) -> None:
        pass


def _close_tree(tree) -> None:
    try:
        tree.file.close()
    except Exception:
        pass


class TreeSource(Source):
    """A candidate tree: one entry per candidate."""

    def __init__(self, path: str, tree: str):
        self.path, self.tree_name = path, tree
        self.tree = open_tree(path, tree, direct=True)
        try:
            self.num_entries = int(self.tree.num_entries)
            self._keys = set(tree_keys(self.tree))
            # made when first asked for (a scan of every branch's count leaf: Spectrum never needs it)
            self._fields_cache: list[str] | None = None
            self._colls_cache: dict[str, list[str]] | None = None
        except BaseException:
            self.close()
            raise

    def describe(self) -> str:
        return f"tree '{self.tree_name}'"

    @property
    def _fields(self) -> list[str]:
        if self._fields_cache is None:
            self._fields_cache = input_branches(self.tree)
        return self._fields_cache

    def fields(self) -> list[str]:
        return list(self._fields)

    def has_fields(self, names) -> set[str]:
        # the tree's branch names answer this without the counter scan of fields() (a counter
        # branch, if a config asks for one, holds real data and reads like any flat branch)
        return set(names) & self._keys

    @property
    def _colls(self) -> dict[str, list[str]]:
        if self._colls_cache is None:
            self._colls_cache = collection_fields(self.tree, self._fields)
        return self._colls_cache

    def collections(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self._colls.items()}

    def cluster_starts(self) -> np.ndarray:
        try:
            offs = np.asarray(self.tree.common_entry_offsets(), dtype=np.int64)
        except Exception:
            offs = np.array([0, self.num_entries], dtype=np.int64)
        return offs

    def check_integrity(self, fields: Sequence[str] | None = None) -> None:
        """Truncated files: every basket the fields need must lie inside the file (no data is read;
        taggerflow.integrity.check_baskets, as Spectrum checks it)."""
        from taggerflow.integrity import check_baskets

        present = set(tree_keys(self.tree))
        check_baskets(self.tree, self.path, [n for n in (fields or self._fields) if n in present])

    def read(self, start: int, stop: int, fields: Sequence[str]) -> ak.Array:
        try:
            return self.tree.arrays(list(fields), entry_start=start, entry_stop=stop, library="ak")
        except Exception as e:
            raise InputError(f"{self.path}: failed to read entries {start}-{stop} of tree '{self.tree_name}' "
                             f"({type(e).__name__}: {e})") from None

    def is_flat(self, name: str) -> bool:
        """True for a branch with one value per candidate (not a constituent collection)."""
        cache = self.__dict__.setdefault("_flat", {})
        if name not in cache:
            cache[name] = self._is_flat(name)
        return cache[name]

    def _is_flat(self, name: str) -> bool:
        if name not in self._keys or "/" in name or "." in name:
            return False
        b = self.tree[name]
        try:
            interp = b.interpretation
        except Exception:
            return False
        return getattr(b, "count_branch", None) is None and isinstance(interp, uproot.AsDtype) and \
            not getattr(interp, "inner_shape", ())

    def read_numpy(self, start: int, stop: int, fields: Sequence[str]) -> dict[str, np.ndarray]:
        """Flat branches of entries [start, stop) as numpy arrays (no awkward arrays built)."""
        try:
            return self.tree.arrays(list(fields), entry_start=start, entry_stop=stop, library="np", how=dict)
        except Exception as e:
            raise InputError(f"{self.path}: failed to read entries {start}-{stop} of tree '{self.tree_name}' "
                             f"({type(e).__name__}: {e})") from None

    def read_branch(self, name: str, start: int, stop: int) -> ak.Array:
        """One branch of entries [start, stop) as an awkward array."""
        try:
            return self.tree[name].array(entry_start=start, entry_stop=stop, library="ak")
        except Exception as e:
            raise InputError(f"{self.path}: failed to read branch '{name}', entries {start}-{stop} of tree "
                             f"'{self.tree_name}' ({type(e).__name__}: {e})") from None

    def close(self) -> None:
        _close_tree(self.tree)


class NanoSource(Source):
    """A per-event (NanoAOD-style) tree; candidates = the objects of one collection."""

    def __init__(self, path: str, tree: str, spec: dict):
        self.path, self.tree_name = path, tree
        self.tree = open_tree(path, tree, direct=True)
        try:
            self._init(path, tree, spec)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        _close_tree(self.tree)

    def _init(self, path: str, tree: str, spec: dict) -> None:
        self.num_entries = int(self.tree.num_entries)
        self.coll = spec["collection"]
        keys = [k for k in tree_keys(self.tree) if "/" not in k and "." not in k]
        keyset = set(keys)
        self.counter = f"n{self.coll}"
        if self.counter not in keyset:
            raise InputError(f"{path}: no counter branch '{self.counter}' for collection '{self.coll}' "
                             f"(config key inputs.nanoaod.collection) in tree '{tree}'")
        pre = self.coll + "_"
        self._cand = {k[len(pre):]: k for k in keys if k.startswith(pre)}
        evb = spec.get("event_branches")
        self._event = {b: b for b in (evb if evb is not None else DEFAULT_EVENT_BRANCHES) if b in keyset}
        for b in (evb or []):
            if b not in keyset:
                raise InputError(f"{path}: event branch '{b}' (config key inputs.nanoaod.event_branches) not "
                                 f"found in tree '{tree}'")
        for b in spec.get("weight_branches", ()):   # read per event, as the event branches are
            if b in keyset:
                self._event.setdefault(b, b)
        self._cons: dict[str, dict] = {}
        for name, cs in (spec.get("constituents") or {}).items():
            cc = cs["collection"]
            cpre = cc + "_"
            link = cs.get("link")
            if f"n{cc}" not in keyset:
                raise InputError(f"{path}: no counter branch 'n{cc}' for constituent collection '{cc}' "
                                 f"(config key inputs.nanoaod.constituents.{name}) in tree '{tree}'")
            skip = {f"{cpre}{cs['index']}"} if cs.get("index") else set()
            flds = {k[len(cpre):]: k for k in keys if k.startswith(cpre) and k not in skip}
            info = {"collection": cc, "fields": flds, "index": None, "link": None, "via": None}
            if cs.get("index"):
                ib = f"{cpre}{cs['index']}"
                if ib not in keyset:
                    raise InputError(f"{path}: index branch '{ib}' (config key inputs.nanoaod.constituents.{name}"
                                     f".index) not found in tree '{tree}'")
                info["index"] = ib
            if link:
                lc = link["collection"]
                lb = (f"{lc}_{link['candidate_index']}", f"{lc}_{link['constituent_index']}")
                for b in lb:
                    if b not in keyset:
                        raise InputError(f"{path}: link branch '{b}' (config key inputs.nanoaod.constituents."
                                         f"{name}.link) not found in tree '{tree}'")
                info["link"] = lb
            if cs.get("via"):
                info["via"] = self._via_branches(cs["via"], f"inputs.nanoaod.constituents.{name}.via", keyset)
            self._cons[name] = info

    def _via_branches(self, via: dict, key: str, keyset: set[str]) -> tuple[str, str]:
        """(counter of the intermediate collection, the candidate branch with its index): the
        index/link of the constituents then refers to that collection's objects (Tau -> Jet -> PFCands)."""
        counter, index = f"n{via['collection']}", f"{self.coll}_{via['index']}"
        for b in (counter, index):
            if b not in keyset:
                raise InputError(f"{self.path}: branch '{b}' (config key {key}) not found in tree '{self.tree_name}'")
        return counter, index

    def describe(self) -> str:
        return f"tree '{self.tree_name}' (collection '{self.coll}')"

    def fields(self) -> list[str]:
        out = list(self._cand) + [b for b in self._event if b not in self._cand]
        for name, info in self._cons.items():
            out += [f"{name}_{f}" for f in info["fields"]]
        return out

    def collections(self) -> dict[str, list[str]]:
        return {name: list(info["fields"]) for name, info in self._cons.items()}

    def cluster_starts(self) -> np.ndarray:
        try:
            return np.asarray(self.tree.common_entry_offsets(), dtype=np.int64)
        except Exception:
            return np.array([0, self.num_entries], dtype=np.int64)

    def check_integrity(self, fields: Sequence[str] | None = None) -> None:
        TreeSource.check_integrity(self, [k for k in tree_keys(self.tree) if "/" not in k and "." not in k])

    def num_candidates(self, start: int, stop: int) -> int:
        return int(self.tree[self.counter].array(entry_start=start, entry_stop=stop, library="np").sum())

    def read(self, start: int, stop: int, fields: Sequence[str]) -> ak.Array:
        fields = list(fields)
        raw: set[str] = {self.counter}
        cons_wanted: dict[str, list[str]] = {}
        for f in fields:
            if f in self._cand:
                raw.add(self._cand[f])
            elif f in self._event:
                raw.add(f)
            else:
                for name, info in self._cons.items():
                    if f.startswith(name + "_") and f[len(name) + 1:] in info["fields"]:
                        cons_wanted.setdefault(name, []).append(f[len(name) + 1:])
                        break
                else:
                    raise InputError(f"{self.path}: no field '{f}' in {self.describe()}")
        for name in cons_wanted:
            info = self._cons[name]
            raw.add(f"n{info['collection']}")
            raw |= {info["fields"][f] for f in cons_wanted[name]}
            if info["index"]:
                raw.add(info["index"])
            if info["link"]:
                raw |= set(info["link"])
            if info["via"]:
                raw |= set(info["via"])
        try:
            arrs = self.tree.arrays(sorted(raw), entry_start=start, entry_stop=stop, library="ak")
        except Exception as e:
            raise InputError(f"{self.path}: failed to read entries {start}-{stop} of tree '{self.tree_name}' "
                             f"({type(e).__name__}: {e})") from None
        ncand = ak.to_numpy(arrs[self.counter]).astype(np.int64)
        out: dict = {}
        for f in fields:
            if f in self._cand:
                out[f] = ak.flatten(arrs[self._cand[f]], axis=1)
            elif f in self._event:
                out[f] = np.repeat(ak.to_numpy(arrs[f]), ncand)
        cand_off = np.concatenate([[0], np.cumsum(ncand)])
        n_total = int(cand_off[-1])
        for name, flds in cons_wanted.items():
            info = self._cons[name]
            ncons = ak.to_numpy(arrs[f"n{info['collection']}"]).astype(np.int64)
            cons_off = np.concatenate([[0], np.cumsum(ncons)])
            # the owners the index/link refers to: the candidates, or the objects of the 'via' collection
            nown = ak.to_numpy(arrs[info["via"][0]]).astype(np.int64) if info["via"] else ncand
            own_off = np.concatenate([[0], np.cumsum(nown)])
            if info["link"]:
                ci = arrs[info["link"][0]]
                ki = arrs[info["link"][1]]
                ev = np.repeat(np.arange(len(ncand)), ak.to_numpy(ak.num(ci, axis=1)))
                cidx = ak.to_numpy(ak.flatten(ci)).astype(np.int64)
                kidx = ak.to_numpy(ak.flatten(ki)).astype(np.int64)
                ok = (cidx >= 0) & (cidx < nown[ev]) & (kidx >= 0) & (kidx < ncons[ev])
                own_row = own_off[ev[ok]] + cidx[ok]
                cons_row = cons_off[ev[ok]] + kidx[ok]
            else:
                idx = arrs[info["index"]]
                ev = np.repeat(np.arange(len(ncand)), ncons)
                cidx = ak.to_numpy(ak.flatten(idx)).astype(np.int64)
                ok = (cidx >= 0) & (cidx < nown[ev])
                own_row = own_off[ev[ok]] + cidx[ok]
                cons_row = np.flatnonzero(ok)
            n_own = int(own_off[-1])
            order = np.argsort(own_row, kind="stable")
            counts = np.bincount(own_row, minlength=n_own)[:n_own]
            take = cons_row[order]
            if info["via"]:
                counts, take = _through_via(counts, take, arrs[info["via"][1]], ncand, nown, own_off)
            for f in flds:
                flat = ak.to_numpy(ak.flatten(arrs[info["fields"][f]]))
                out[f"{name}_{f}"] = ak.unflatten(flat[take], counts)
        if not out:
            return ak.Array(ak.contents.RecordArray([], [], length=n_total))
        return ak.Array({k: out[k] for k in fields})


def _through_via(counts: np.ndarray, take: np.ndarray, via_index, ncand: np.ndarray, nown: np.ndarray,
                 own_off: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Constituents of the candidates from those of the intermediate objects (``counts``, ``take``:
    per object its number and, object after object, the constituent rows): candidate i gets those
    of object ``via_index[i]`` of its event, none where that index is -1 or out of range; two
    candidates of the same object get both its constituents."""
    ev = np.repeat(np.arange(len(ncand)), ncand)
    j = ak.to_numpy(ak.flatten(via_index)).astype(np.int64)
    ok = (j >= 0) & (j < nown[ev])
    obj = np.where(ok, own_off[ev] + np.where(ok, j, 0), 0)
    cand_counts = np.where(ok, counts[obj] if len(counts) else 0, 0)
    starts = np.concatenate([[0], np.cumsum(counts)])[obj]
    total = int(cand_counts.sum())
    # for each constituent slot of each candidate: its object's start plus its place in the object
    first = np.concatenate([[0], np.cumsum(cand_counts)])[:-1]
    pos = np.arange(total) - np.repeat(first, cand_counts) + np.repeat(starts, cand_counts)
    return cand_counts, take[pos]


_BUFFERS = threading.local()


def _read_buffers() -> dict:
    """This thread's read buffers of H5Source: (record type, row shape) -> array (the largest chunk
    read so far)."""
    bufs = getattr(_BUFFERS, "bufs", None)
    if bufs is None:
        bufs = _BUFFERS.bufs = {}
    return bufs


class H5Source(Source):
    """Training-dataset-dumper HDF5: structured ``jets`` (N,) + constituents (N, n_max) with ``valid``."""

    def __init__(self, path: str, spec: dict):
        import h5py

        self.path = path
        if is_url(path):
            raise InputError(f"{path}: HDF5 inputs must be local files (URLs are read only for ROOT files)")
        if not os.path.exists(path):
            raise InputError(f"{path}: input file does not exist")
        try:
            self.file = h5py.File(path, "r")
        except Exception as e:
            raise InputError(f"{path}: cannot be read as an HDF5 file ({type(e).__name__}: {e})") from None
        self.jets_name = spec.get("candidates", "jets")
        self.valid = spec.get("valid", "valid")
        if self.jets_name not in self.file:
            raise InputError(f"{path}: no dataset '{self.jets_name}' (config key inputs.h5.candidates; keys: "
                             f"{', '.join(sorted(self.file.keys())) or 'none'})")
        self.jets = self.file[self.jets_name]
        self.num_entries = int(self.jets.shape[0])
        self._cons = {}
        for name, ds in (spec.get("constituents") or {"tracks": "tracks"}).items():
            if ds not in self.file:
                if spec.get("constituents"):
                    raise InputError(f"{path}: no dataset '{ds}' (config key inputs.h5.constituents.{name})")
                continue
            d = self.file[ds]
            if d.ndim != 2 or d.shape[0] != self.num_entries:
                raise InputError(f"{path}: dataset '{ds}' has shape {d.shape}, expected ({self.num_entries}, n_max)")
            if self.valid not in (d.dtype.names or ()):
                raise InputError(f"{path}: dataset '{ds}' has no '{self.valid}' field (config key inputs.h5.valid)")
            self._cons[name] = d

    def describe(self) -> str:
        return f"dataset '{self.jets_name}'"

    def fields(self) -> list[str]:
        out = list(self.jets.dtype.names)
        for name, d in self._cons.items():
            out += [f"{name}_{f}" for f in d.dtype.names if f != self.valid]
        return out

    def collections(self) -> dict[str, list[str]]:
        return {name: [f for f in d.dtype.names if f != self.valid] for name, d in self._cons.items()}

    def cluster_starts(self) -> np.ndarray:
        chunk = (self.jets.chunks or (self.num_entries,))[0] or self.num_entries
        return np.unique(np.append(np.arange(0, self.num_entries, max(int(chunk), 1)), self.num_entries))

    def check_integrity(self, fields: Sequence[str] | None = None) -> None:
        pass

    def _block(self, ds, names: list[str], start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of the compound dataset ``ds`` holding (at least) the fields ``names``.
        Whole records are read where the fields fill half a record or more: HDF5 then copies the
        records as they are stored, while reading a subset of the fields converts every element
        (3-5x slower); into a buffer that this thread reuses for every file with the same record type
        (no fresh pages for every read; one buffer however many files are open)."""
        need = sum(ds.dtype.fields[n][0].itemsize for n in names)
        if ds.dtype.itemsize > 2 * need:
            return ds.fields(names)[start:stop]
        shape = (stop - start, *ds.shape[1:])
        bufs = _read_buffers()
        key = (ds.dtype, shape[1:])
        buf = bufs.get(key)
        if buf is None or buf.shape[0] < shape[0]:
            bufs.pop(key, None)
            buf = bufs[key] = np.empty(shape, dtype=ds.dtype)
        out = buf[:shape[0]]
        if shape[0]:
            ds.read_direct(out, np.s_[start:stop])
        return out

    def read(self, start: int, stop: int, fields: Sequence[str]) -> ak.Array:
        fields = list(fields)
        jet_f = [f for f in fields if f in self.jets.dtype.names]
        out: dict = {}
        try:
            if jet_f:
                block = self._block(self.jets, jet_f, start, stop)
                for f in jet_f:   # copies: the block may be a reused buffer
                    out[f] = np.array(block[f], order="C")
            for name, d in self._cons.items():
                want = [f for f in fields if f.startswith(name + "_") and f[len(name) + 1:] in d.dtype.names]
                if not want:
                    continue
                sub = [f[len(name) + 1:] for f in want]
                block = self._block(d, sub + [self.valid], start, stop)
                valid = block[self.valid].astype(bool)
                offsets = np.zeros(len(valid) + 1, dtype=np.int64)
                np.cumsum(valid.sum(axis=1), out=offsets[1:])
                offsets = ak.index.Index64(offsets)   # shared by the fields of this collection
                # the valid records first, gathered as opaque records (numpy's masking of structured
                # arrays copies field by field, 4x slower), then each field from those
                rec = np.dtype((np.void, block.dtype.itemsize))
                kept = np.ascontiguousarray(block).reshape(-1).view(rec)[valid.reshape(-1)].view(block.dtype)
                for f, s in zip(want, sub):
                    out[f] = ak.Array(ak.contents.ListOffsetArray(
                        offsets, ak.contents.NumpyArray(np.ascontiguousarray(kept[s]))))
                del kept
        except InputError:
            raise
        except Exception as e:
            raise InputError(f"{self.path}: failed to read entries {start}-{stop} ({type(e).__name__}: {e})") from None
        missing = [f for f in fields if f not in out]
        if missing:
            raise InputError(f"{self.path}: no field '{missing[0]}' in {self.describe()}")
        return ak.Array({k: out[k] for k in fields})

    def close(self) -> None:
        try:
            self.file.close()
        except Exception:
            pass


def open_source(spec: InputSpec, path: str) -> Source:
    """Open one input file of the given format; errors name the file, its dataset (and the config key)."""
    try:
        return _open_source(spec, path)
    except InputError as e:
        if spec.dataset:
            raise InputError(f"{e} (dataset '{spec.dataset}')") from None
        raise


def _open_source(spec: InputSpec, path: str) -> Source:
    if spec.format == "candidate_tree":
        return TreeSource(path, spec.tree)
    if spec.format == "nanoaod":
        if not spec.nanoaod.get("collection"):
            raise InputError(f"{path}: format 'nanoaod' needs inputs.nanoaod.collection")
        return NanoSource(path, spec.tree, spec.nanoaod)
    if spec.format == "h5":
        return H5Source(path, spec.h5)
    if spec.format in format_modules.NAMES:
        return format_modules.module(spec.format).open_source(path, spec.tree, spec.sections[spec.format])
    raise InputError(f"{path}: unknown input format '{spec.format}' (supported: {', '.join(FORMATS)})")


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
