"""ATLAS PHYSLITE (``inputs.format: physlite``): the ``CollectionTree`` of a DAOD_PHYSLITE file.

Candidates are the objects of one xAOD container (``inputs.physlite.container``, e.g.
``AnalysisJets``): its aux-store branches ``<container>AuxDyn.<name>`` (and ``<container>Aux.<name>``)
holding one number per object are served as ``<name>`` (``AnalysisJetsAuxDyn.pt`` -> ``pt``,
``HadronConeExclTruthLabelID`` as it is). PHYSLITE stores momenta in MeV: ``variables`` maps the
pipeline's names to expressions over those names (``pt: "pt / 1000"``). Event identity comes from
EventInfo (``EventInfoAuxDyn.eventNumber`` -> ``event``, ``runNumber`` -> ``run``, ``lumiBlock`` ->
``luminosityBlock``; ``event_branches`` replaces that map).

Constituents (``inputs.physlite.constituents.<name>``) are the objects of another container reached
through a vector of element links per candidate, e.g. the ghost-associated tracks::

    tracks: {container: InDetTrackParticles, link: GhostTrack,
             variables: {pt: "abs(sin(theta) / qOverP) / 1000"}}

reads ``AnalysisJetsAuxDyn.GhostTrack`` (``m_persKey``, ``m_persIndex``) and gathers, per jet and in
the link order, the ``InDetTrackParticlesAuxDyn.*`` entries it points at. A link whose key is 0 is
invalid (its target was thinned away) and is skipped, as coffea's PHYSLITE schema does; the other
links must all carry one key (one target container; ``key`` names it when a link vector points into
several), and an index beyond the container's size is an error.
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from taggerflow.formats._event_tree import EventTreeSource, Objects, is_numeric_jagged, parse_variables
from taggerflow.expressions import expression_names
from taggerflow.io import InputError

FORMAT = "physlite"
NEEDS_SECTION = "see taggerflow/formats/physlite.py"
EVENT_FIELDS = True   # PhysliteSource.event / event_arrays
DEFAULT_TREE = "CollectionTree"
DEFAULT_EVENT_BRANCHES = {"run": "runNumber", "luminosityBlock": "lumiBlock", "event": "eventNumber"}

SCHEMA = {
    "inputs.physlite": {"container": (str, True), "variables": (dict, False), "event_info": (str, False),
                        "event_branches": (dict, False), "constituents": (dict, False)},
    "inputs.physlite.constituents.*": {"container": (str, True), "link": (str, True), "key": (int, False),
                                       "variables": (dict, False)},
}


def validate(section: dict, cfg, err) -> None:
    """Names must be identifiers (they become field names), expressions must parse."""
    def check_vars(key: str, variables: dict) -> None:
        for name, expr in (variables or {}).items():
            if not str(name).isidentifier():
                raise err(f"{key}.{name}", "variable names must be identifiers")
            if not isinstance(expr, str):
                raise err(f"{key}.{name}", f"expected an expression string, got {expr!r}")
            try:
                expression_names(expr)
            except (SyntaxError, ValueError) as e:
                raise err(f"{key}.{name}", f"invalid expression: {e}") from None

    check_vars("inputs.physlite.variables", section.get("variables"))
    for name, branch in (section.get("event_branches") or {}).items():
        if not str(name).isidentifier() or not isinstance(branch, str):
            raise err(f"inputs.physlite.event_branches.{name}", "expected identifier: EventInfo field name")
    for name, cs in (section.get("constituents") or {}).items():
        if not str(name).isidentifier():
            raise err(f"inputs.physlite.constituents.{name}", "constituent names must be identifiers")
        check_vars(f"inputs.physlite.constituents.{name}.variables", cs.get("variables"))


def open_source(path: str, tree: str, section: dict) -> "PhysliteSource":
    return PhysliteSource(path, tree, section)


class PhysliteSource(EventTreeSource):
    section_key = "inputs.physlite"

    def describe(self) -> str:
        return f"tree '{self.tree_name}' (container '{self.container}')"

    def _container(self, name: str, key: str) -> dict[str, str]:
        """{field: branch} of the numeric per-object aux branches of container ``name``."""
        out = {}
        for prefix in (f"{name}Aux.", f"{name}AuxDyn."):
            for k in self._keys:
                if k.startswith(prefix) and "." not in k[len(prefix):] and "/" not in k \
                        and is_numeric_jagged(self.tree[k]):
                    out.setdefault(k[len(prefix):], k)
        if not out:
            raise InputError(f"{self.path}: no aux branches '{name}AuxDyn.*' for container '{name}' (config key "
                             f"{key}) in tree '{self.tree_name}'")
        return out

    @staticmethod
    def _size_branch(branches: dict[str, str]) -> str:
        return branches.get("pt") or branches[sorted(branches)[0]]

    def _setup(self, section: dict) -> None:
        self._keys = list(self.tree.keys())
        keyset = set(self._keys)
        self.container = section["container"]
        branches = self._container(self.container, "inputs.physlite.container")
        self.cands = Objects(branches, parse_variables(section, "inputs.physlite", branches, self.path),
                             self._size_branch(branches))
        info = section.get("event_info", "EventInfo")
        evb = section.get("event_branches")
        for name, fld in (evb if evb is not None else DEFAULT_EVENT_BRANCHES).items():
            key = next((f"{info}{aux}.{fld}" for aux in ("AuxDyn", "Aux") if f"{info}{aux}.{fld}" in keyset), None)
            if key is None:
                if evb is None:
                    continue   # a default the file lacks
                raise InputError(f"{self.path}: EventInfo branch '{info}AuxDyn.{fld}' (config key "
                                 f"inputs.physlite.event_branches.{name}) not found in tree '{self.tree_name}'")
            self.event[name] = key
        self._link_key: dict[str, int | None] = {}
        for name, cs in (section.get("constituents") or {}).items():
            ckey = f"inputs.physlite.constituents.{name}"
            link = f"{self.container}AuxDyn.{cs['link']}"
            if link not in keyset:
                raise InputError(f"{self.path}: link branch '{link}' (config key {ckey}.link) not found in tree "
                                 f"'{self.tree_name}'")
            target = self._container(cs["container"], f"{ckey}.container")
            self.cons[name] = Objects(target, parse_variables(cs, ckey, target, self.path),
                                      self._size_branch(target), (link,))
            self._link_key[name] = cs.get("key")

    def _event_values(self, arrs: dict, name: str) -> np.ndarray:
        values = arrs[self.event[name]]
        if values.ndim == 1:
            return ak.to_numpy(values)
        # a list per event (EventInfo's mcEventWeights): its first entry, ATLAS' nominal weight
        if ak.any(ak.num(values, axis=1) == 0):
            raise InputError(f"{self.path}: event branch '{self.event[name]}' has an empty list in an event "
                             f"(config key inputs.physlite.event_branches.{name}: the first entry is taken)")
        return ak.to_numpy(ak.firsts(values, axis=1))

    def _count(self, arrs: dict, objects: Objects) -> np.ndarray:
        return ak.to_numpy(ak.num(arrs[objects.size_branch], axis=1)).astype(np.int64)

    def _pairs(self, arrs, name, ncand, ncons):
        link_branch = self.cons[name].links[0]
        links = arrs[link_branch]
        if not np.array_equal(ak.to_numpy(ak.num(links, axis=1)), ncand):
            raise InputError(f"{self.path}: link branch '{link_branch}' has not one link vector per object of "
                             f"'{self.container}'")
        per_cand = ak.flatten(links, axis=1)
        n_links = ak.to_numpy(ak.num(per_cand, axis=1)).astype(np.int64)
        cand_row = np.repeat(np.arange(len(n_links), dtype=np.int64), n_links)
        event = np.repeat(np.repeat(np.arange(len(ncand), dtype=np.int64), ncand), n_links)
        key = ak.to_numpy(ak.flatten(per_cand.m_persKey, axis=None)).astype(np.int64)
        index = ak.to_numpy(ak.flatten(per_cand.m_persIndex, axis=None)).astype(np.int64)
        wanted = self._link_key[name]
        if wanted is None:
            keys = np.unique(key[key != 0])
            if len(keys) > 1:
                raise InputError(f"{self.path}: links '{link_branch}' point into {len(keys)} containers (keys "
                                 f"{', '.join(map(str, keys))}); set inputs.physlite.constituents.{name}.key")
            ok = key != 0
        else:
            ok = key == wanted
        bad = ok & (index >= ncons[event])
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(f"{self.path}: link '{link_branch}' index {index[i]} beyond the {ncons[event[i]]} "
                             f"objects of '{self.cons[name].size_branch.split('Aux')[0]}' in its event (config key "
                             f"inputs.physlite.constituents.{name}.container)")
        cons_off = np.concatenate([[0], np.cumsum(ncons)])
        return cand_row[ok], cons_off[event[ok]] + index[ok]
