"""Event weights of the per-event formats (issue 17 items 2 and 3) on coffea's real files: PHYSLITE's
EventInfo.mcEventWeights (a list per event, the first entry the nominal weight) and Delphes'
Event.Weight, named as event fields, become each candidate's weight, and the computed sum of weights
counts each event once, whatever its number of jets. Checked against plain uproot arrays."""

from __future__ import annotations

import copy

import awkward as ak
import numpy as np
import pytest
import uproot

from coffea_samples import sample
from taggerflow.config import config_from_dict
from taggerflow.sum_of_weights import file_sum_of_weights
from taggerflow.io import InputError
from taggerflow.readers import input_spec, open_source, read_prepared
from test_formats_atlas_delphes import delphes_raw, physlite_raw

XSEC, LUMI = 2.5, 140.0


def _weighted(raw: dict, event_branches: dict, weight: str) -> dict:
    raw = copy.deepcopy(raw)
    fmt = raw["inputs"]["format"]
    raw["inputs"][fmt]["event_branches"] = event_branches
    raw["inputs"]["luminosity_invpb"] = LUMI
    for ds in raw["inputs"]["datasets"].values():
        ds.update({"weight": weight, "cross_section_pb": XSEC, "sum_of_weights": "computed"})
    return raw


CASES = {
    "physlite": (lambda: physlite_raw(sample("PHYSLITE_example.root")),
                 {"event": "eventNumber", "run": "runNumber", "mcweight": "mcEventWeights"},
                 "CollectionTree", "EventInfoAuxDyn.mcEventWeights", "AnalysisJetsAuxDyn.pt"),
    "delphes": (lambda: delphes_raw(sample("delphes.root")), {"event": "Number", "mcweight": "Weight"},
                "Delphes", "Event/Event.Weight", "Jet/Jet.PT"),
}


@pytest.mark.parametrize("fmt", list(CASES))
def test_event_weight_per_candidate_and_computed_sum(fmt, tmp_path):
    make_raw, evb, tree, weight_branch, cand_branch = CASES[fmt]
    raw = _weighted(make_raw(), evb, "mcweight")
    cfg = config_from_dict(raw, str(tmp_path / "c.yaml"))
    ds = cfg.dataset_names[0]
    path = cfg.dataset_files()[ds][0]
    # independently: the first weight of every event, every event in the sum
    t = uproot.open(path)[tree]
    per_event = ak.to_numpy(ak.firsts(t[weight_branch].array(), axis=1)).astype(np.float64)
    n_cand = ak.to_numpy(ak.num(t[cand_branch].array(), axis=1))
    assert per_event.sum() != pytest.approx(np.repeat(per_event, n_cand).sum())   # per event, not per jet
    assert file_sum_of_weights(cfg, ds, path) == pytest.approx(per_event.sum(), rel=1e-12)
    spec = input_spec(cfg, ds)
    src = open_source(spec, path)
    try:
        cands, n_read = read_prepared(spec, src, 0, src.num_entries, ["event_weight", "pt"])
    finally:
        src.close()
    assert n_read == int(n_cand.sum()) == len(cands)
    np.testing.assert_array_equal(ak.to_numpy(cands["event_weight"]), np.repeat(per_event, n_cand))


@pytest.mark.parametrize("fmt", list(CASES))
def test_weight_of_a_non_event_field_is_named(fmt, tmp_path):
    make_raw, evb, *_ = CASES[fmt]
    raw = _weighted(make_raw(), evb, "pt")                   # a jet variable, not one value per event
    cfg = config_from_dict(raw, str(tmp_path / "c.yaml"))
    ds = cfg.dataset_names[0]
    path = cfg.dataset_files()[ds][0]
    with pytest.raises(InputError) as err:
        file_sum_of_weights(cfg, ds, path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: 'pt' (needed by config key inputs.datasets.{ds}.weight) is not an event field")
    assert f"inputs.{fmt}.event_branches" in msg and "\n" not in msg
