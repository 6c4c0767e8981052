"""Readers: NanoAOD-style per-event trees, training-dataset-dumper HDF5, URLs, selection and aliases.

Every reader hands the stages the same chunk schema (flat candidate fields, jagged ``<coll>_<field>``),
so Spectrum, ShuffleMergeSpectral and FeatureScaling run unchanged on every format.
"""

from __future__ import annotations

import copy
import os

import awkward as ak
import numpy as np
import pytest
import uproot

from conftest import tiny_raw

from taggerflow.config import ConfigError, config_from_dict
from taggerflow.formats.h5 import H5Source
from taggerflow.formats.nanoaod import NanoSource
from taggerflow.formats.shards import open_shard
from taggerflow.io import InputError
from taggerflow.readers import input_spec, iter_prepared, open_source, read_prepared, split_location
from taggerflow.resample import plan_job, run_job
from taggerflow.spectrum import file_spectrum, fine_edges

GENPARTFLAV = {"tau": [5], "e": [1, 3, 15], "mu": [2, 4], "jet": [0]}


def write_nanoaod(path: str, n_events: int, seed: int, event0: int = 0) -> dict:
    """A small NanoAOD-like file: Events with run/luminosityBlock/event, a Tau collection, a PFCand
    collection linked to the taus by PFCand_tauIdx, and an association TauPFCand (tauIdx, pfCandIdx)."""
    rng = np.random.default_rng(seed)
    ntau = rng.integers(0, 4, n_events)
    ncand = rng.integers(0, 12, n_events)
    n_t, n_c = int(ntau.sum()), int(ncand.sum())
    flav = rng.choice([0, 1, 2, 3, 4, 5, 15], n_t, p=[0.3, 0.1, 0.1, 0.05, 0.05, 0.3, 0.1])
    tau = ak.zip({"pt": ak.unflatten((20 + rng.exponential(40, n_t)).astype(np.float32), ntau),
                  "eta": ak.unflatten(rng.uniform(-2.3, 2.3, n_t).astype(np.float32), ntau),
                  "phi": ak.unflatten(rng.uniform(-3, 3, n_t).astype(np.float32), ntau),
                  "genPartFlav": ak.unflatten(flav.astype(np.uint8), ntau),
                  "decayMode": ak.unflatten(rng.choice([0, 1, 10], n_t).astype(np.int32), ntau)})
    # each PF candidate belongs to one tau of its event, or to none (-1)
    ev_c = np.repeat(np.arange(n_events), ncand)
    owner = np.where(ntau[ev_c] > 0, (rng.random(n_c) * np.maximum(ntau[ev_c], 1)).astype(np.int64), -1)
    owner[rng.random(n_c) < 0.2] = -1
    pf = ak.zip({"pt": ak.unflatten(rng.exponential(5, n_c).astype(np.float32), ncand),
                 "deta": ak.unflatten(rng.normal(0, 0.1, n_c).astype(np.float32), ncand),
                 "dphi": ak.unflatten(rng.normal(0, 0.1, n_c).astype(np.float32), ncand),
                 "tauIdx": ak.unflatten(owner.astype(np.int16), ncand)})
    # the association table lists the same (tau, candidate) pairs in a shuffled order
    pairs_t, pairs_c, npair = [], [], np.zeros(n_events, np.int64)
    off = np.concatenate([[0], np.cumsum(ncand)])
    for e in range(n_events):
        idx = np.flatnonzero(owner[off[e]:off[e + 1]] >= 0)
        idx = rng.permutation(idx)
        pairs_t.append(owner[off[e]:off[e + 1]][idx])
        pairs_c.append(idx)
        npair[e] = len(idx)
    link = ak.zip({"tauIdx": ak.unflatten(np.concatenate(pairs_t).astype(np.int32), npair),
                   "pfCandIdx": ak.unflatten(np.concatenate(pairs_c).astype(np.int32), npair)})
    events = {"run": np.ones(n_events, np.uint32), "luminosityBlock": np.full(n_events, 7, np.uint32),
              "event": np.arange(event0, event0 + n_events, dtype=np.uint64),
              "Tau": tau, "PFCand": pf, "TauPFCand": link}
    with uproot.recreate(path) as f:
        f.mktree("Events", {k: (v.type.content if isinstance(v, ak.Array) else v.dtype) for k, v in events.items()})
        f["Events"].extend(events)  # a TTree: nTau, Tau_pt, ... as in NanoAOD
    return {"ntau": ntau, "ncand": ncand, "owner": owner, "flav": flav, "tau": tau, "pf": pf}


def nano_raw(files: dict[str, list[str]], link: bool = False) -> dict:
    raw = tiny_raw()
    del raw["demo"]
    raw["inputs"] = {"format": "nanoaod", "tree": "Events", "chunk_size": 300,
                     "datasets": {ds: {"files": fl} for ds, fl in files.items()},
                     "nanoaod": {"collection": "Tau",
                                 "constituents": {"pfcand": {"collection": "PFCand", **(
                                     {"link": {"collection": "TauPFCand", "candidate_index": "tauIdx",
                                               "constituent_index": "pfCandIdx"}} if link else {"index": "tauIdx"})}}}}
    raw["classes"] = {"truth_branch": "genPartFlav", "labels": GENPARTFLAV}
    raw["features"] = {"candidate": {"pt": {"scaling": "normal", "limits": [-5, 5]},
                                     "abs_eta": {"expression": "abs(eta)", "scaling": "linear", "limits": [0, 2.3]},
                                     "decayMode": {"scaling": "categorical"}},
                       "collections": {"pfcand": {"n_max": 8, "sort_by": "pt", "variables": {
                           "pt_frac": {"expression": "pt / cand_pt", "scaling": "linear", "limits": [0, 1]},
                           "deta": {"scaling": "normal", "limits": [-5, 5]}}}}}
    raw["resampling"].pop("groups", None)
    raw["resampling"].update({"n_jobs": 2, "pt_bins": [20, 40, 1000], "eta_bins": [0.0, 1.0, 2.3],
                              "enable_emptybin": True})
    raw["train_sample"]["additional_labels"] = []
    return raw


@pytest.fixture(scope="module")
def nano_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("nano")
    out = {}
    for i in range(2):
        p = str(d / "DYnano" / f"nano_{i}.root")
        os.makedirs(os.path.dirname(p), exist_ok=True)
        out[p] = write_nanoaod(p, 600, seed=5 + i, event0=1000 * i)
    return out


def _expected_constituents(truth: dict, field: str) -> list[list[float]]:
    """Per tau (in event order), the values of its PF candidates in candidate order."""
    ntau, ncand, owner = truth["ntau"], truth["ncand"], truth["owner"]
    vals = ak.to_numpy(ak.flatten(truth["pf"][field]))
    out = []
    off = np.concatenate([[0], np.cumsum(ncand)])
    for e in range(len(ntau)):
        own = owner[off[e]:off[e + 1]]
        v = vals[off[e]:off[e + 1]]
        for t in range(ntau[e]):
            out.append(v[own == t].tolist())
    return out


@pytest.mark.parametrize("link", [False, True])
def test_nanoaod_explodes_candidates_and_links_constituents(nano_files, tmp_path, link):
    path, truth = next(iter(nano_files.items()))
    cfg = config_from_dict(nano_raw({"DYnano": [path]}, link=link), str(tmp_path / "c.yaml"))
    src = open_source(input_spec(cfg, "DYnano"), path)
    assert isinstance(src, NanoSource) and src.num_entries == 600
    assert {"pt", "eta", "genPartFlav", "event", "run", "luminosityBlock", "pfcand_pt", "pfcand_deta"} <= set(src.fields())
    # the index branch that makes the link is not a constituent field; with an association it is
    assert src.collections() == {"pfcand": ["pt", "deta", "dphi"] + (["tauIdx"] if link else [])}
    chunks = [c for c, _ in iter_prepared(input_spec(cfg, "DYnano"), src, 0, 600,
                                          ["pt", "event", "genPartFlav", "pfcand_pt", "pfcand_deta"], 170)]
    arr = ak.concatenate(chunks)
    assert len(arr) == int(truth["ntau"].sum())  # one row per tau
    np.testing.assert_array_equal(ak.to_numpy(arr["pt"]), ak.to_numpy(ak.flatten(truth["tau"]["pt"])))
    np.testing.assert_array_equal(ak.to_numpy(arr["event"]), np.repeat(np.arange(600), truth["ntau"]))
    exp = _expected_constituents(truth, "pt")
    got = ak.to_list(arr["pfcand_pt"])
    if link:  # the association lists pairs in another order: compare as sets
        got, exp = [sorted(x) for x in got], [sorted(x) for x in exp]
    assert got == exp


def test_nanoaod_through_spectrum_shuffle_and_scaling(nano_files, tmp_path):
    from taggerflow.scaling import accumulate

    paths = list(nano_files)
    raw = nano_raw({"DYnano": paths})
    raw["inputs"]["selection"] = "decayMode != 10"
    cfg = config_from_dict(raw, str(tmp_path / "c.yaml"))
    spectra = []
    pt_e, eta_e = fine_edges(cfg)
    for p, truth in nano_files.items():
        r = file_spectrum(cfg, p, "DYnano")
        dm = ak.to_numpy(ak.flatten(truth["tau"]["decayMode"]))
        assert r["entries"] == 600 and r["candidates"] == int(truth["ntau"].sum())
        assert r["deselected"] == int(np.count_nonzero(dm == 10))
        # genPartFlav 15 counts as e, every value has a class
        n_e = int(np.count_nonzero(np.isin(truth["flav"], [1, 3, 15]) & (dm != 10)))
        assert r["hists"]["e"].values(flow=True).sum() == n_e and r["unlabelled"] == 0
        spectra.append({"dataset": "DYnano", "path": p, "entries": r["entries"], "candidates": r["candidates"],
                        "counts_flow": np.stack([r["hists"][c].values(flow=True) for c in cfg.class_names]),
                        "pt_edges": pt_e, "abs_eta_edges": eta_e})
    shards, read = [], {}
    for j in range(2):
        plan = plan_job(cfg, spectra, j, 2)
        m = run_job(cfg, j, plan.segments, plan.P, plan.p_class, str(tmp_path / f"s{j}.root"),
                    str(tmp_path / f"m{j}.json"), N=plan.N)
        for p, e in m["files"].items():
            read[p] = read.get(p, 0) + e["read"]
        shards.append(str(tmp_path / f"s{j}.root"))
    # the manifests record each input as its dataset and its path below the dataset's root
    assert read == {f"DYnano/{os.path.basename(s['path'])}": s["candidates"] for s in spectra}
    t = open_shard(shards[0], "Events").tree
    keys = set(t.keys())
    assert {"pt", "eta", "genPartFlav", "event", "pfcand_pt", "npfcand", "class_label", "dataset_id"} <= keys
    assert not np.any(t["decayMode"].array(library="np") == 10)  # the selection was applied while reading
    moments = accumulate(cfg, shards)  # the next stage reads the shards as usual
    assert moments is not None


def test_h5_reader_with_ftag_mock_file_and_aliases(tmp_path):
    from ftag import get_mock_file  # atlas-ftag-tools, a test extra

    paths = []
    for i in range(2):
        fname = str(tmp_path / "ttbar" / f"mock_{i}.h5")
        os.makedirs(os.path.dirname(fname), exist_ok=True)
        get_mock_file(1500, fname=fname)[1].close()
        paths.append(fname)
    raw = tiny_raw()
    del raw["demo"]
    raw["inputs"] = {"format": "h5", "chunk_size": 400, "datasets": {"ttbar": {"files": paths}},
                     "h5": {"candidates": "jets", "constituents": {"tracks": "tracks"}},
                     # GeV from MeV (an alias may replace a field), and a stand-in event number
                     "aliases": {"pt": "pt / 1000", "event": "n_tracks"},
                     "selection": "pt > 25"}
    raw["classes"] = {"truth_branch": "HadronConeExclTruthLabelID",
                      "labels": {"b": [5], "c": [4], "light": [0], "tau": [15]}}
    raw["features"] = {"candidate": {"pt": {"scaling": "normal"}, "abs_eta": {"expression": "abs(eta)",
                                                                              "scaling": "linear", "limits": [0, 2.5]}},
                       "collections": {"tracks": {"n_max": 40, "variables": {
                           "d0": {"scaling": "normal"}, "z0SinTheta": {"scaling": "normal"}}}}}
    raw["spectrum"] = {"pt_fine": {"start": 20.0, "stop": 1000.0, "n_bins": 98},
                       "abs_eta_fine": {"start": 0.0, "stop": 2.5, "n_bins": 25}}
    raw["resampling"].pop("groups", None)
    raw["resampling"].update({"n_jobs": 1, "pt_bins": [20, 100, 1000], "eta_bins": [0.0, 1.0, 2.5],
                              "class_ratio": {"b": 1, "c": 1, "light": 1, "tau": -1}, "enable_emptybin": True,
                              "output_format": "hdf5"})
    raw["evaluation"]["signals"] = ["b"]
    raw["export"]["sequence_names"] = {"tracks": "tracks"}
    cfg = config_from_dict(raw, str(tmp_path / "c.yaml"))
    spec = input_spec(cfg, "ttbar")
    src = open_source(spec, paths[0])
    assert src.num_entries == 1500 and "tracks_d0" in src.fields() and "tracks_valid" not in src.fields()
    chunk, n = read_prepared(spec, src, 0, 1500, ["pt", "tracks_d0", "n_tracks"])
    with h5py_file(paths[0]) as f:
        jets, tracks = f["jets"][:], f["tracks"][:]
    keep = jets["pt"] / 1000 > 25
    assert n == 1500 and len(chunk) == int(keep.sum())
    np.testing.assert_allclose(ak.to_numpy(chunk["pt"]), jets["pt"][keep] / 1000, rtol=1e-6)
    assert ak.to_list(ak.num(chunk["tracks_d0"])) == tracks["valid"][keep].sum(1).tolist()
    first = int(np.flatnonzero(keep)[0])
    assert ak.to_list(chunk["tracks_d0"][0]) == tracks["d0"][first][tracks["valid"][first]].tolist()
    # through Spectrum and ShuffleMergeSpectral into an HDF5 shard
    pt_e, eta_e = fine_edges(cfg)
    spectra = []
    for p in paths:
        r = file_spectrum(cfg, p, "ttbar")
        assert r["deselected"] == int((~keep).sum())
        spectra.append({"dataset": "ttbar", "path": p, "entries": r["entries"], "pt_edges": pt_e,
                        "abs_eta_edges": eta_e,
                        "counts_flow": np.stack([r["hists"][c].values(flow=True) for c in cfg.class_names])})
    plan = plan_job(cfg, spectra, 0, 1)
    m = run_job(cfg, 0, plan.segments, plan.P, plan.p_class, str(tmp_path / "s.h5"), str(tmp_path / "m.json"),
                N=plan.N)
    t = open_shard(str(tmp_path / "s.h5"), "candidates").tree
    assert t.num_entries == m["entries_written"] > 0
    out = t.arrays(["pt", "tracks_d0", "class_label"])
    assert ak.to_numpy(out["pt"]).min() > 25  # GeV, selected
    in_range = keep & (np.abs(jets["eta"]) < 2.5) & (jets["pt"] / 1000 < 1000)
    n_tau = int(np.count_nonzero(in_range & (jets["HadronConeExclTruthLabelID"] == 15)))
    assert m["written_per_class"]["tau"] == 2 * n_tau  # ratio -1: every tau in range (two identical files)
    from taggerflow.scaling import accumulate

    assert accumulate(cfg, [str(tmp_path / "s.h5")]) is not None  # FeatureScaling reads HDF5 shards as well


def h5py_file(path):
    import h5py

    return h5py.File(path, "r")


def test_urls_and_globs(tmp_path):
    url = "root://eospublic.example.org//eos/opendata/DY/DY_0.root"
    assert split_location(url) == ("root://eospublic.example.org//eos/opendata/DY", "DY_0.root")
    assert split_location("/data/DY/DY_0.root") == ("/data/DY", "DY_0.root")
    raw = tiny_raw()
    del raw["demo"]
    (tmp_path / "a").mkdir()
    for i in range(3):
        (tmp_path / "a" / f"f_{i}.root").write_bytes(b"")
    raw["inputs"]["datasets"] = {"DY": {"files": [url]}, "loc": {"files": ["a/f_*.root"]}}
    raw["resampling"].pop("groups", None)
    raw["resampling"]["class_ratio"] = {"tau": 1}
    cfg = config_from_dict(raw, str(tmp_path / "c.yaml"))
    files = cfg.dataset_files()
    assert files["DY"] == [url]  # passed to uproot as it is
    assert files["loc"] == [str(tmp_path / "a" / f"f_{i}.root") for i in range(3)]  # globs sorted
    bad = copy.deepcopy(raw)
    bad["inputs"]["datasets"]["DY"]["files"] = ["https://host/eos/*.root"]
    with pytest.raises(ConfigError, match=r"inputs.datasets.DY.files: 'https://host/eos/\*.root': globs are "
                                          r"expanded on root:// URLs only"):
        config_from_dict(bad, str(tmp_path / "c.yaml"))
    # a glob on a root:// URL is valid (expanded through the server's listing: tests/test_xrootd.py)
    ok = copy.deepcopy(raw)
    ok["inputs"]["datasets"]["DY"]["files"] = ["root://host//eos/*.root"]
    config_from_dict(ok, str(tmp_path / "c.yaml"))
    # reading URLs (and the errors naming them) against a real XRootD server: tests/test_xrootd.py


def test_config_checks_of_the_input_options(tmp_path):
    raw = nano_raw({"x": ["/nowhere/x.root"]})
    raw["inputs"]["nanoaod"]["constituents"]["pfcand"]["link"] = {"collection": "L", "candidate_index": "a",
                                                                  "constituent_index": "b"}
    with pytest.raises(ConfigError, match="inputs.nanoaod.constituents.pfcand: give exactly one"):
        config_from_dict(raw, str(tmp_path / "c.yaml"))
    raw = nano_raw({"x": ["/nowhere/x.root"]})
    raw["inputs"]["format"] = "parquet"
    with pytest.raises(ConfigError, match="inputs.format: unknown format 'parquet'"):
        config_from_dict(raw, str(tmp_path / "c.yaml"))
    raw = nano_raw({"x": ["/nowhere/x.root"]})
    raw["inputs"]["aliases"] = {"bad": "os.system('x')"}
    with pytest.raises(ConfigError, match="inputs.aliases.bad: invalid expression"):
        config_from_dict(raw, str(tmp_path / "c.yaml"))
    raw = nano_raw({"x": ["/nowhere/x.root"]})
    raw["resampling"]["disabled_branches"] = ["pfcand_*"]
    with pytest.raises(ConfigError, match="'pfcand_\\*' disables branch 'pfcand_pt'"):
        config_from_dict(raw, str(tmp_path / "c.yaml"))


def test_missing_nanoaod_branches_name_the_key(nano_files, tmp_path):
    path = next(iter(nano_files))
    raw = nano_raw({"DYnano": [path]})
    raw["inputs"]["nanoaod"]["collection"] = "Muon"
    cfg = config_from_dict(raw, str(tmp_path / "c.yaml"))
    with pytest.raises(InputError, match=r"no counter branch 'nMuon' .*inputs.nanoaod.collection"):
        file_spectrum(cfg, path, "DYnano")
    raw = nano_raw({"DYnano": [path]})
    raw["features"]["candidate"]["chargedIso"] = {"scaling": "normal"}
    cfg = config_from_dict(raw, str(tmp_path / "c.yaml"))
    with pytest.raises(InputError, match=r"branch 'chargedIso' \(needed by config key features.candidate.chargedIso\)"):
        file_spectrum(cfg, path, "DYnano")


def test_h5_reader_whole_records_and_field_subsets_agree(tmp_path):
    """Whole records (read into a reused buffer) and field subsets give h5py's values; a result stays
    intact after later reads of the same or another file (no aliasing of the buffer)."""
    from ftag import get_mock_file

    paths = []
    for i in range(2):
        fname = str(tmp_path / f"mock_{i}.h5")
        get_mock_file(900 + 100 * i, fname=fname, num_tracks=20)[1].close()
        paths.append(fname)
    srcs = [H5Source(p, {}) for p in paths]
    every = srcs[0].fields()                    # all fields: whole records
    few = ["pt", "tracks_d0"]                   # a small part of each record: HDF5 field subsets
    with h5py_file(paths[0]) as f:
        jets, tracks = f["jets"][:], f["tracks"][:]
    first = srcs[0].read(100, 400, every)
    kept = {k: ak.to_list(first[k]) for k in ("pt", "eta", "tracks_d0", "tracks_numberOfPixelHits")}
    srcs[0].read(400, 900, every)               # the buffer is reused for the next read ...
    srcs[1].read(0, 1000, every)                # ... and for another file with the same records
    for k, v in kept.items():
        assert ak.to_list(first[k]) == v
    valid = tracks["valid"][100:400]
    np.testing.assert_array_equal(ak.to_numpy(first["pt"]), jets["pt"][100:400])
    assert ak.to_list(ak.num(first["tracks_d0"])) == valid.sum(axis=1).tolist()
    for name in ("d0", "numberOfPixelHits", "leptonID"):
        np.testing.assert_array_equal(ak.to_numpy(ak.flatten(first[f"tracks_{name}"])),
                                      tracks[name][100:400][valid])
    subset = srcs[0].read(100, 400, few)
    assert ak.to_list(subset["pt"]) == kept["pt"] and ak.to_list(subset["tracks_d0"]) == kept["tracks_d0"]
    for s in srcs:
        s.close()
