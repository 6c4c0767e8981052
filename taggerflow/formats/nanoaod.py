"""NanoAOD (``inputs.format: nanoaod``): per-event trees, candidates = the objects of one collection.

``inputs.nanoaod.collection`` (e.g. ``Tau`` for the ``Tau_*`` branches): its objects are exploded to
one row per object with the prefix dropped (``Tau_pt`` -> ``pt``); event branches (``run``,
``event``, ...; ``event_branches`` replaces the default list) are repeated for every candidate of the
event. Constituent collections (``inputs.nanoaod.constituents.<name>``, whose names must be those of
``features.collections``) are attached through an index branch of the constituent collection
(``index``: position of the candidate in its event, -1 for none) or through an association
collection (``link``: pairs of candidate and constituent indices); with ``via`` both refer to the
objects of another collection that each candidate points to (``Tau_jetIdx`` -> ``Jet``;
``JetPFCands`` -> ``PFCands``), and a candidate pointing to none (-1) has no constituents. RNTuple
files are read like TTrees.
"""

from __future__ import annotations

from collections.abc import Sequence

import awkward as ak
import numpy as np

from taggerflow.formats.base import Source, close_tree
from taggerflow.formats.candidate_tree import TreeSource
from taggerflow.io import InputError, open_tree, tree_keys

FORMAT = "nanoaod"
DEFAULT_TREE = "Events"
DEFAULT_EVENT_BRANCHES = ("run", "luminosityBlock", "event")
#: why the section is needed when the format is used (the error's hint)
NEEDS_SECTION = "collection: the candidates, e.g. Tau"

SCHEMA = {
    "inputs.nanoaod": {"collection": (str, True), "event_branches": (list, False), "constituents": (dict, False)},
    "inputs.nanoaod.constituents.*": {"collection": (str, True), "index": (str, False), "link": (dict, False),
                                      "via": (dict, False)},
    "inputs.nanoaod.constituents.*.via": {"collection": (str, True), "index": (str, True)},
    "inputs.nanoaod.constituents.*.link": {"collection": (str, True), "candidate_index": (str, True),
                                           "constituent_index": (str, True)},
}


def validate(section: dict, cfg, err) -> None:
    """Each constituent collection is attached one way; when the format is used, the constituent
    collections are exactly those of ``features.collections`` (a NanoAOD file has the constituent
    collections its section attaches and no other)."""
    for name, cs in (section.get("constituents") or {}).items():
        if bool(cs.get("index")) == bool(cs.get("link")):
            raise err(f"inputs.nanoaod.constituents.{name}", "give exactly one of 'index' (branch of the "
                      "constituent collection with the candidate's index) or 'link' (association collection)")
    from taggerflow.formats import in_use

    if not section or not in_use(cfg, FORMAT):
        return
    sources = list(section.get("constituents") or {})
    features = list(cfg.raw["features"].get("collections") or {})
    for name in sources:
        if name not in features:
            raise err(f"inputs.nanoaod.constituents.{name}", f"no features.collections.{name} uses it "
                      f"(features.collections: {', '.join(features) or 'none'}); the names must match")
    for name in features:
        if name not in sources:
            raise err(f"features.collections.{name}", f"no inputs.nanoaod.constituents.{name} reads it "
                      f"(inputs.nanoaod.constituents: {', '.join(sources) or 'none'}); the names must match")


def open_source(path: str, tree: str, section: dict) -> "NanoSource":
    if not section.get("collection"):
        raise InputError(f"{path}: format 'nanoaod' needs inputs.nanoaod.collection")
    return NanoSource(path, tree, section)


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
        close_tree(self.tree)

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
