"""Delphes (``inputs.format: delphes``): the ``Delphes`` tree of a Delphes fast-simulation file.

Candidates are the objects of one branch collection (``inputs.delphes.collection``, e.g. ``Jet``):
its leaves ``Jet/Jet.<Name>`` (split files; ``Jet.<Name>`` in unsplit ones) holding one number per
object are served as ``<Name>`` (``Jet.PT`` -> ``PT``, ``Jet.Flavor``, ``Jet.BTag``, ``Jet.TauTag``
as they are), counted by ``Jet_size``; ``variables`` maps the pipeline's names (``pt: PT``,
``eta: Eta``). Event identity comes from the ``Event`` branch (``Event.Number`` -> ``event``;
``event_branches`` replaces that map, e.g. ``{event: Number, weight: Weight}``).

Constituents (``inputs.delphes.constituents.<name>``) are the objects of another collection that a
candidate's ``TRefArray`` (``refs``, default ``Constituents``) references, e.g. the particle-flow
inputs of a jet: ``{collection: EFlowTrack}``, ``{collection: EFlowPhoton}``,
``{collection: EFlowNeutralHadron}`` (or ``Track``/``Tower``). A reference is the low 24 bits of the
target's ``fUniqueID`` (ROOT's TRef: the high bits are the process id), matched within the event;
references into other collections are left to the constituent collections that name them.
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from taggerflow.formats._event_tree import EventTreeSource, Objects, is_numeric_jagged, parse_variables
from taggerflow.formats.physlite import validate as _validate_like_physlite
from taggerflow.io import InputError

FORMAT = "delphes"
NEEDS_SECTION = "see taggerflow/formats/delphes.py"
EVENT_FIELDS = True   # DelphesSource.event / event_arrays
DEFAULT_TREE = "Delphes"
DEFAULT_EVENT_BRANCHES = {"event": "Number"}
UID_BITS = 24   # TRef/TProcessID: object number in the low 24 bits of fUniqueID
_SKIPPED = ("fUniqueID", "fBits")

SCHEMA = {
    "inputs.delphes": {"collection": (str, True), "variables": (dict, False), "event_branches": (dict, False),
                       "constituents": (dict, False)},
    "inputs.delphes.constituents.*": {"collection": (str, True), "refs": (str, False), "variables": (dict, False)},
}


def validate(section: dict, cfg, err) -> None:
    _validate_like_physlite(section, cfg, lambda key, msg: err(key.replace("inputs.physlite", "inputs.delphes"), msg))


def open_source(path: str, tree: str, section: dict) -> "DelphesSource":
    return DelphesSource(path, tree, section)


class DelphesSource(EventTreeSource):
    section_key = "inputs.delphes"

    def describe(self) -> str:
        return f"tree '{self.tree_name}' (collection '{self.collection}')"

    def _leaf(self, coll: str, name: str) -> str | None:
        for key in (f"{coll}/{coll}.{name}", f"{coll}.{name}"):
            if key in self._keyset:
                return key
        return None

    def _collection(self, coll: str, key: str) -> tuple[dict[str, str], str]:
        """({field: branch} of the numeric per-object leaves of ``coll``, its counter branch)."""
        counter = f"{coll}_size"
        if counter not in self._keyset:
            raise InputError(f"{self.path}: no counter branch '{counter}' for collection '{coll}' (config key "
                             f"{key}) in tree '{self.tree_name}'")
        out = {}
        for prefix in (f"{coll}/{coll}.", f"{coll}."):
            for k in self._keys:
                rest = k[len(prefix):]
                if k.startswith(prefix) and rest not in _SKIPPED and not any(c in rest for c in "./[") \
                        and is_numeric_jagged(self.tree[k]):
                    out.setdefault(rest, k)
        return out, counter

    def _setup(self, section: dict) -> None:
        self._keys = list(self.tree.keys())
        self._keyset = set(self._keys)
        self.collection = section["collection"]
        branches, counter = self._collection(self.collection, "inputs.delphes.collection")
        self.cands = Objects(branches, parse_variables(section, "inputs.delphes", branches, self.path), counter)
        evb = section.get("event_branches")
        for name, fld in (evb if evb is not None else DEFAULT_EVENT_BRANCHES).items():
            leaf = self._leaf("Event", fld)
            if leaf is None:
                if evb is None:
                    continue
                raise InputError(f"{self.path}: event branch 'Event/Event.{fld}' (config key "
                                 f"inputs.delphes.event_branches.{name}) not found in tree '{self.tree_name}'")
            self.event[name] = leaf
        for name, cs in (section.get("constituents") or {}).items():
            ckey = f"inputs.delphes.constituents.{name}"
            refs = self._leaf(self.collection, cs.get("refs", "Constituents"))
            if refs is None:
                raise InputError(f"{self.path}: reference branch '{self.collection}/{self.collection}."
                                 f"{cs.get('refs', 'Constituents')}' (config key {ckey}.refs) not found in tree "
                                 f"'{self.tree_name}'")
            target, tcounter = self._collection(cs["collection"], f"{ckey}.collection")
            uid = self._leaf(cs["collection"], "fUniqueID")
            if uid is None:
                raise InputError(f"{self.path}: collection '{cs['collection']}' has no fUniqueID leaf to match "
                                 f"references against (config key {ckey}.collection)")
            self.cons[name] = Objects(target, parse_variables(cs, ckey, target, self.path), tcounter, (refs, uid))

    def _count(self, arrs: dict, objects: Objects) -> np.ndarray:
        return ak.to_numpy(arrs[objects.size_branch]).astype(np.int64)

    def _event_values(self, arrs: dict, name: str) -> np.ndarray:
        values = arrs[self.event[name]]
        if ak.any(ak.num(values, axis=1) != 1):
            raise InputError(f"{self.path}: event branch '{self.event[name]}' has not one value per event")
        return ak.to_numpy(ak.flatten(values, axis=1))

    def _pairs(self, arrs, name, ncand, ncons):
        refs_branch, uid_branch = self.cons[name].links
        refs = arrs[refs_branch].refs                     # event -> candidate -> references
        per_cand = ak.flatten(refs, axis=1)
        n_refs = ak.to_numpy(ak.num(per_cand, axis=1)).astype(np.int64)
        if len(n_refs) != int(ncand.sum()):
            raise InputError(f"{self.path}: reference branch '{refs_branch}' has not one entry per object of "
                             f"'{self.collection}'")
        cand_row = np.repeat(np.arange(len(n_refs), dtype=np.int64), n_refs)
        event = np.repeat(np.repeat(np.arange(len(ncand), dtype=np.int64), ncand), n_refs)
        ref_key = (event << UID_BITS) | ak.to_numpy(ak.flatten(per_cand, axis=None)).astype(np.int64)
        uid = ak.to_numpy(ak.flatten(arrs[uid_branch], axis=1)).astype(np.int64) & ((1 << UID_BITS) - 1)
        target_key = (np.repeat(np.arange(len(ncons), dtype=np.int64), ncons) << UID_BITS) | uid
        order = np.argsort(target_key, kind="stable")
        sorted_key = target_key[order]
        pos = np.minimum(np.searchsorted(sorted_key, ref_key), max(len(sorted_key) - 1, 0))
        found = sorted_key[pos] == ref_key if len(sorted_key) else np.zeros(len(ref_key), dtype=bool)
        return cand_row[found], order[pos[found]]
