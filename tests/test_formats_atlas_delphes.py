"""ATLAS PHYSLITE and Delphes as input formats (issue 17, item 2), on coffea's public files
(tests/coffea_samples.py): the readers against an independent uproot/python computation written
here (candidate counts, constituent counts, feature values, event numbers), their one-line errors,
and ``law run Pipeline`` on each file with the summary's counts and the training files' values
checked against the same computation."""

from __future__ import annotations

import copy
import glob

import awkward as ak
import numpy as np
import pytest
import uproot

from coffea_samples import sample
from conftest import tiny_raw, write_config

from taggerflow.config import ConfigError, config_from_dict
from taggerflow.io import InputError
from taggerflow.readers import InputSpec, open_source

PHYSLITE = "PHYSLITE_example.root"
DELPHES = "delphes.root"

PHYSLITE_SECTION = {"container": "AnalysisJets",
                    "variables": {"pt": "pt / 1000", "flavour": "HadronConeExclTruthLabelID"},
                    "constituents": {"tracks": {"container": "InDetTrackParticles", "link": "GhostTrack",
                                                "variables": {"pt": "abs(sin(theta) / qOverP) / 1000"}}}}
DELPHES_SECTION = {"collection": "Jet", "variables": {"pt": "PT", "eta": "Eta"},
                   "constituents": {"tracks": {"collection": "EFlowTrack"},
                                    "photons": {"collection": "EFlowPhoton", "variables": {"pt": "ET"}},
                                    "neutrals": {"collection": "EFlowNeutralHadron", "refs": "Constituents"}}}


def _spec(fmt: str, section: dict, tree: str) -> InputSpec:
    return InputSpec(format=fmt, tree=tree, sections={fmt: section})


# -- independent computations: plain uproot arrays and python loops -------------------------------
def physlite_truth() -> list[dict]:
    """Every jet of the file: event number, pt [GeV], flavour, its ghost tracks' d0 and pt [GeV]."""
    t = uproot.open(sample(PHYSLITE))["CollectionTree"]
    pt = t["AnalysisJetsAuxDyn.pt"].array().tolist()
    flav = t["AnalysisJetsAuxDyn.HadronConeExclTruthLabelID"].array().tolist()
    links = t["AnalysisJetsAuxDyn.GhostTrack"].array().tolist()
    d0 = t["InDetTrackParticlesAuxDyn.d0"].array().tolist()
    qop = t["InDetTrackParticlesAuxDyn.qOverP"].array().tolist()
    theta = t["InDetTrackParticlesAuxDyn.theta"].array().tolist()
    evno = t["EventInfoAuxDyn.eventNumber"].array().tolist()
    out = []
    for ev in range(len(pt)):
        for j in range(len(pt[ev])):
            idx = [lk["m_persIndex"] for lk in links[ev][j] if lk["m_persKey"] != 0]
            out.append({"event": evno[ev], "pt": np.float32(pt[ev][j]) / 1000, "flavour": flav[ev][j],
                        "d0": [d0[ev][i] for i in idx],
                        "track_pt": [abs(np.sin(np.float32(theta[ev][i])) / np.float32(qop[ev][i])) / 1000
                                     for i in idx]})
    return out


def delphes_truth() -> list[dict]:
    """Every jet: event number, PT, Flavor, and per constituent collection the referenced objects'
    values (reference = fUniqueID's low 24 bits, looked up in a dict per event)."""
    t = uproot.open(sample(DELPHES))["Delphes"]
    jets = {k: t[f"Jet/Jet.{k}"].array().tolist() for k in ("PT", "Flavor")}
    refs = t["Jet/Jet.Constituents"].array().refs.tolist()
    number = t["Event/Event.Number"].array().tolist()
    coll = {"tracks": ("EFlowTrack", "PT"), "photons": ("EFlowPhoton", "ET"), "neutrals": ("EFlowNeutralHadron", "ET")}
    values = {n: (t[f"{c}/{c}.fUniqueID"].array().tolist(), t[f"{c}/{c}.{v}"].array().tolist())
              for n, (c, v) in coll.items()}
    out = []
    for ev in range(len(refs)):
        lookup = {n: {u & 0xFFFFFF: x for u, x in zip(uid[ev], val[ev])} for n, (uid, val) in values.items()}
        for j in range(len(refs[ev])):
            jet = {"event": number[ev][0], "pt": jets["PT"][ev][j], "Flavor": jets["Flavor"][ev][j]}
            for n in coll:
                jet[n] = [lookup[n][r] for r in refs[ev][j] if r in lookup[n]]
            out.append(jet)
    return out


# -- readers -------------------------------------------------------------------------------------
def test_physlite_reader_matches_uproot():
    expect = physlite_truth()
    src = open_source(_spec("physlite", PHYSLITE_SECTION, "CollectionTree"), sample(PHYSLITE))
    try:
        assert src.num_entries == 100
        assert {"pt", "eta", "HadronConeExclTruthLabelID", "flavour", "event", "run", "tracks_d0"} <= set(src.fields())
        got = src.read(0, 100, ["pt", "flavour", "event", "run", "tracks_d0", "tracks_pt"])
    finally:
        src.close()
    assert len(got) == len(expect) == 881
    assert ak.to_numpy(got["event"]).tolist() == [e["event"] for e in expect]
    assert set(ak.to_numpy(got["run"]).tolist()) == {300000}
    np.testing.assert_allclose(ak.to_numpy(got["pt"]), [e["pt"] for e in expect], rtol=1e-6)
    assert ak.to_numpy(got["flavour"]).tolist() == [e["flavour"] for e in expect]
    assert ak.num(got["tracks_d0"]).tolist() == [len(e["d0"]) for e in expect]
    assert int(ak.sum(ak.num(got["tracks_d0"]))) == 1126   # links with a key; 6667 null ones skipped
    assert ak.flatten(got["tracks_d0"]).tolist() == [x for e in expect for x in e["d0"]]
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(got["tracks_pt"])),
                               [x for e in expect for x in e["track_pt"]], rtol=1e-5)
    # a part of the file (events 40-59) reads the same values as the whole
    src = open_source(_spec("physlite", PHYSLITE_SECTION, "CollectionTree"), sample(PHYSLITE))
    part = src.read(40, 60, ["event", "tracks_d0"])
    src.close()
    jets = ak.num(uproot.open(sample(PHYSLITE))["CollectionTree"]["AnalysisJetsAuxDyn.pt"].array()).tolist()
    lo, hi = sum(jets[:40]), sum(jets[:60])
    assert len(part) == hi - lo
    assert ak.to_list(part["tracks_d0"]) == [e["d0"] for e in expect[lo:hi]]


def test_delphes_reader_matches_uproot():
    expect = delphes_truth()
    src = open_source(_spec("delphes", DELPHES_SECTION, "Delphes"), sample(DELPHES))
    try:
        assert src.num_entries == 25
        assert src.collections()["photons"][-1] == "pt" and "SoftDroppedJet" not in src.fields()
        got = src.read(0, 25, ["pt", "eta", "Flavor", "event", "tracks_PT", "photons_pt", "neutrals_ET"])
    finally:
        src.close()
    assert len(got) == len(expect) == 106
    assert ak.to_numpy(got["event"]).tolist() == [e["event"] for e in expect]
    assert ak.to_numpy(got["pt"]).tolist() == [np.float32(e["pt"]) for e in expect]
    assert ak.to_numpy(got["Flavor"]).tolist() == [e["Flavor"] for e in expect]
    for field, name in (("tracks_PT", "tracks"), ("photons_pt", "photons"), ("neutrals_ET", "neutrals")):
        assert ak.num(got[field]).tolist() == [len(e[name]) for e in expect], field
        assert ak.flatten(got[field]).tolist() == [np.float32(x) for e in expect for x in e[name]], field
    # every reference of a jet lands in one of the three particle-flow collections
    refs = uproot.open(sample(DELPHES))["Delphes"]["Jet/Jet.Constituents"].array()
    n_refs = ak.flatten(ak.num(refs.refs, axis=2)).tolist()
    found = [len(e["tracks"]) + len(e["photons"]) + len(e["neutrals"]) for e in expect]
    assert sum(found) >= sum(n_refs) == 1877 and all(f >= n for f, n in zip(found, n_refs))


# -- bad input: one line naming the file and the key ---------------------------------------------
@pytest.mark.parametrize("fmt, section, tree, key, what", [
    ("physlite", {"container": "AnalysisJetz"}, "CollectionTree", "inputs.physlite.container", "AnalysisJetzAuxDyn"),
    ("physlite", {"container": "AnalysisJets", "constituents": {"tracks": {"container": "InDetTrackParticles",
                                                                          "link": "GhostTrak"}}},
     "CollectionTree", "inputs.physlite.constituents.tracks.link", "AnalysisJetsAuxDyn.GhostTrak"),
    ("physlite", {"container": "AnalysisJets", "variables": {"pt": "ptt / 1000"}}, "CollectionTree",
     "inputs.physlite.variables.pt", "'ptt'"),
    ("physlite", {"container": "AnalysisJets", "event_branches": {"event": "evtNumber"}}, "CollectionTree",
     "inputs.physlite.event_branches.event", "EventInfoAuxDyn.evtNumber"),
    ("delphes", {"collection": "Jets"}, "Delphes", "inputs.delphes.collection", "Jets_size"),
    ("delphes", {"collection": "Jet", "constituents": {"t": {"collection": "EFlowTrack", "refs": "Constituent"}}},
     "Delphes", "inputs.delphes.constituents.t.refs", "Jet/Jet.Constituent"),
    ("delphes", {"collection": "Jet", "constituents": {"t": {"collection": "EFlowTrak"}}}, "Delphes",
     "inputs.delphes.constituents.t.collection", "EFlowTrak_size"),
])
def test_wrong_key_is_one_line_naming_file_and_key(fmt, section, tree, key, what):
    path = sample(PHYSLITE if fmt == "physlite" else DELPHES)
    with pytest.raises(InputError) as info:
        open_source(_spec(fmt, section, tree), path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ") and key in msg and what in msg


def test_wrong_tree_names_the_file_and_the_trees():
    with pytest.raises(InputError, match=r"delphes\.root: no tree 'CollectionTree' \(keys: Delphes, ProcessID0\)"):
        open_source(_spec("delphes", DELPHES_SECTION, "CollectionTree"), sample(DELPHES))


def test_config_sections_are_checked_at_load():
    raw = physlite_raw()
    del raw["inputs"]["physlite"]
    with pytest.raises(ConfigError, match=r"inputs\.physlite: needed by format 'physlite'"):
        config_from_dict(raw)
    raw = delphes_raw()
    raw["inputs"]["delphes"]["colection"] = "Jet"
    with pytest.raises(ConfigError, match=r"inputs\.delphes\.colection: unknown key"):
        config_from_dict(raw)
    raw = delphes_raw()
    raw["inputs"]["delphes"]["variables"] = {"pt": "PT +"}
    with pytest.raises(ConfigError, match=r"inputs\.delphes\.variables\.pt: invalid expression"):
        config_from_dict(raw)
    assert config_from_dict(physlite_raw()).raw["inputs"]["physlite"]["container"] == "AnalysisJets"


# -- law run Pipeline on the real files ----------------------------------------------------------
def _pipeline_raw(name: str, fmt: str, section: dict, path: str, truth: str, labels: dict,
                  collections: dict) -> dict:
    raw = tiny_raw()
    del raw["demo"]
    raw["name"] = name
    raw["inputs"] = {"format": fmt, "chunk_size": 40, "datasets": {"sample": {"files": [path]}},
                     fmt: copy.deepcopy(section)}
    raw["classes"] = {"truth_branch": truth, "labels": labels}
    raw["spectrum"] = {"pt_fine": {"start": 0.0, "stop": 1000.0, "n_bins": 100},
                       "abs_eta_fine": {"start": 0.0, "stop": 6.0, "n_bins": 12}}   # Delphes jets reach 5.6
    raw["features"] = {"candidate": {"pt": {"scaling": "normal", "limits": [-5, 5]},
                                     "abs_eta": {"expression": "abs(eta)", "scaling": "linear", "limits": [0, 6]}},
                       "collections": collections}
    raw["resampling"].update({"n_jobs": 1, "pt_bins": [0, 1000], "eta_bins": [0.0, 6.0], "enable_emptybin": True,
                              "class_ratio": {c: -1 for c in labels}})   # take every candidate
    raw["resampling"].pop("groups", None)
    raw["train_sample"]["additional_labels"] = []
    # class_weights null: the files' 1 (PHYSLITE) or 2 (Delphes) b-jets may miss the training split
    raw["training"].update({"epochs": 1, "batch_size": 16, "class_weights": None})
    raw["training"]["model"]["phi_layers"] = [8]
    raw["training"]["model"]["f_layers"] = [8]
    raw["training"]["variants"] = [{"name": "deepsets"}]
    raw["export"]["n_check"] = 20
    raw["export"]["sequence_names"] = {c: c for c in collections}
    raw["evaluation"] = {"signals": [next(iter(labels))], "working_points": [0.5]}
    return raw


def physlite_raw(path: str = "PHYSLITE_example.root") -> dict:
    tracks = {"n_max": 4, "sort_by": "pt",
              "variables": {"pt_frac": {"expression": "pt / cand_pt", "scaling": "linear", "limits": [0, 2]},
                            "d0": {"scaling": "normal", "limits": [-5, 5]},
                            "z0": {"scaling": "normal", "limits": [-5, 5]}}}
    raw = _pipeline_raw("physlite", "physlite", PHYSLITE_SECTION, path, "HadronConeExclTruthLabelID",
                        {"b": [5], "light": [0]}, {"tracks": tracks})
    raw["train_sample"]["constituent_labels"] = {"tracks": ["d0"]}   # raw d0 into tracks/labels
    return raw


def delphes_raw(path: str = "delphes.root") -> dict:
    def coll(pt_name, extra):
        return {"n_max": 6, "sort_by": pt_name,
                "variables": {"pt_frac": {"expression": f"{pt_name} / cand_pt", "scaling": "linear", "limits": [0, 1]},
                              "deta": {"expression": "Eta - cand_eta", "scaling": "normal", "limits": [-5, 5]},
                              **extra}}
    raw = _pipeline_raw("delphes", "delphes", DELPHES_SECTION, path, "Flavor",
                        {"b": [5], "c": [4], "light": [1, 2, 3, 21]},
                        {"tracks": coll("PT", {"d0": {"expression": "D0", "scaling": "normal", "limits": [-5, 5]}}),
                         "photons": coll("pt", {})})
    raw["train_sample"]["constituent_labels"] = {"photons": ["pt"]}   # raw photon ET into photons/labels
    return raw


def _run_pipeline(raw: dict, tmp_path) -> tuple[str, list[dict]]:
    """law run Pipeline; (the pipeline summary, the rows of every training file: pt, event, label,
    valid constituents per sequence)."""
    import h5py

    from test_e2e import _law, _law_env

    env = _law_env(tmp_path)
    _law(["index", "-q"], env)
    _law(["run", "Pipeline", "--version", "v1", "--config", write_config(raw, tmp_path)], env)
    data = tmp_path / "data"
    summary = open(glob.glob(str(data / "ConvertLwtnn/v1/*/deepsets/pipeline_summary.md"))[0]).read()
    rows = []
    for p in sorted(glob.glob(str(data / "WriteTrainSample/v1/*/*.h5"))):
        with h5py.File(p, "r") as f:
            seqs = {s: f[f"{s}/valid"][:].sum(axis=1) for s in raw["features"]["collections"]}
            labels = {s: f[f"{s}/labels"][:] for s in raw["features"]["collections"] if f"{s}/labels" in f}
            for i in range(len(f["jets/pt"])):
                rows.append({"pt": float(f["jets/pt"][i]), "event": int(f["jets/event"][i]),
                             "label": int(f["jets/labels"][i]), **{s: int(v[i]) for s, v in seqs.items()},
                             **{f"{s}_labels": v[i, :seqs[s][i], 0].tolist() for s, v in labels.items()}})
    return summary, rows


def _match(rows: list[dict], expect: list[dict], pt_of) -> list[tuple[dict, dict]]:
    by_key = {(e["event"], np.float32(pt_of(e))): e for e in expect}
    assert len(by_key) == len(expect)   # (event, pt) names one jet
    return [(r, by_key[(r["event"], np.float32(r["pt"]))]) for r in rows]


@pytest.mark.slow
def test_pipeline_on_physlite(tmp_path):
    expect = physlite_truth()
    raw = physlite_raw(sample(PHYSLITE))
    summary, rows = _run_pipeline(raw, tmp_path)
    per_class = {"b": sum(e["flavour"] == 5 for e in expect), "light": sum(e["flavour"] == 0 for e in expect)}
    assert per_class == {"b": 1, "light": 880}
    assert (f"- Spectrum: 1 input files, 100 tree entries, 881 candidates, 881 after the selection and with a "
            f"class (per class {per_class})") in summary
    assert "881 candidates kept (100.0 % of 881)" in summary
    assert len(rows) == 881
    for row, jet in _match(rows, expect, lambda e: e["pt"]):
        assert row["label"] == (0 if jet["flavour"] == 5 else 1)
        assert row["tracks"] == min(len(jet["d0"]), 4)
        # the raw d0 of the 4 highest-pt ghost tracks, in that order (sort_by: pt, descending)
        by_pt = sorted(zip(jet["track_pt"], jet["d0"]), key=lambda x: -x[0])[:4]
        np.testing.assert_allclose(row["tracks_labels"], [d for _, d in by_pt], rtol=1e-6)
    assert sum(r["tracks"] for r in rows) == sum(min(len(e["d0"]), 4) for e in expect) > 500


@pytest.mark.slow
def test_pipeline_on_delphes(tmp_path):
    expect = delphes_truth()
    raw = delphes_raw(sample(DELPHES))
    summary, rows = _run_pipeline(raw, tmp_path)
    codes = {"b": [5], "c": [4], "light": [1, 2, 3, 21]}
    per_class = {c: sum(e["Flavor"] in v for e in expect) for c, v in codes.items()}
    assert per_class == {"b": 2, "c": 20, "light": 83}
    assert (f"- Spectrum: 1 input files, 25 tree entries, 106 candidates, 105 after the selection and with a "
            f"class (per class {per_class})") in summary
    assert "105 candidates kept (100.0 % of 105)" in summary
    labelled = [e for e in expect if e["Flavor"] != 0]
    assert len(rows) == 105
    for row, jet in _match(rows, labelled, lambda e: e["pt"]):
        assert list(codes)[row["label"]] == next(c for c, v in codes.items() if jet["Flavor"] in v)
        assert row["tracks"] == min(len(jet["tracks"]), 6) and row["photons"] == min(len(jet["photons"]), 6)
        assert row["photons_labels"] == sorted((np.float32(x) for x in jet["photons"]), reverse=True)[:6]
    assert sum(len(r["photons_labels"]) for r in rows) > 300
    assert "AUC b vs c " in summary and "b vs light " in summary


def test_physlite_links_into_several_containers_or_beyond_one_are_errors():
    """Our link logic on hand-made link vectors (the real file's links all have one key): links into
    two containers need ``key``; an index beyond the container is an error naming the config key."""
    src = open_source(_spec("physlite", PHYSLITE_SECTION, "CollectionTree"), sample(PHYSLITE))
    link = src.cons["tracks"].links[0]
    ncand, ncons = np.array([2, 1]), np.array([3, 2])
    two_keys = ak.Array([[[{"m_persKey": 7, "m_persIndex": 0}], [{"m_persKey": 9, "m_persIndex": 2}]],
                         [[{"m_persKey": 0, "m_persIndex": 5}, {"m_persKey": 7, "m_persIndex": 1}]]])
    try:
        with pytest.raises(InputError, match=r"point into 2 containers \(keys 7, 9\); set "
                                             r"inputs\.physlite\.constituents\.tracks\.key"):
            src._pairs({link: two_keys}, "tracks", ncand, ncons)
        src._link_key["tracks"] = 7
        cand_row, cons_row = src._pairs({link: two_keys}, "tracks", ncand, ncons)
        assert cand_row.tolist() == [0, 2] and cons_row.tolist() == [0, 3 + 1]
        src._link_key["tracks"] = 9
        with pytest.raises(InputError, match=r"index 2 beyond the 1 objects .*config key "
                                             r"inputs\.physlite\.constituents\.tracks\.container"):
            src._pairs({link: two_keys}, "tracks", ncand, np.array([1, 2]))
    finally:
        src.close()


def test_scaling_repeats_candidate_values_per_collection():
    """Two constituent collections reading ``cand_pt`` (the Delphes configuration's tracks and
    photons): each gets the candidate values repeated by its own counts."""
    from taggerflow.scaling.expressions import _ChunkArrays, _collection_block

    chunk = ak.Array({"pt": np.array([10.0, 20.0]), "eta": np.array([0.0, 1.0]),
                      "tracks_PT": [[1.0, 2.0], [4.0]], "tracks_Eta": [[0.5, 0.0], [1.0]], "tracks_D0": [[0.0, 0.0], [0.0]],
                      "photons_pt": [[], [2.0, 5.0, 10.0]], "photons_Eta": [[], [1.0, 2.0, 3.0]]})
    cfg = config_from_dict(delphes_raw(sample(DELPHES)))
    arrs = _ChunkArrays(chunk)
    fracs = {}
    for coll in cfg.collections:
        x, counts, _ = _collection_block(coll, arrs)
        fracs[coll.name] = x[[v.name for v in coll.variables].index("pt_frac")].tolist()
    assert fracs == {"tracks": [0.1, 0.2, 0.2], "photons": [0.1, 0.25, 0.5]}
    assert x[[v.name for v in coll.variables].index("deta")].tolist() == [0.0, 1.0, 2.0]   # photons' Eta - cand_eta
