"""What a NanoAOD user expects next (issue 17, item 6): two-step links (Tau -> Jet -> PFCands),
``isfinite``/``where`` in expressions, the ``one_hot`` scaling of categorical codes, and the rule that
``inputs.nanoaod.constituents.<name>`` and ``features.collections.<name>`` match. Checked on coffea's
PFNano file (tests/coffea_samples.py) against awkward computations written here, and on a small file
of our own for what the real file lacks (taus pointing to no jet)."""

from __future__ import annotations

import copy
import json
import os

import awkward as ak
import numpy as np
import pytest
import uproot

from coffea_samples import sample
from conftest import tiny_raw

from taggerflow.config import ConfigError, config_from_dict
from taggerflow.io import InputError, candidate_features, collection_features
from taggerflow.readers import input_spec, open_source, read_prepared

JET_PFCANDS = {"collection": "JetPFCands", "candidate_index": "jetIdx", "constituent_index": "pFCandsIdx"}


def nano_raw(files: list[str], collection: str, constituents: dict, classes: tuple[str, dict],
             candidate: dict, collections: dict) -> dict:
    raw = tiny_raw()
    del raw["demo"]
    raw["inputs"] = {"format": "nanoaod", "tree": "Events", "chunk_size": 100,
                     "datasets": {"ds": {"files": files}},
                     "nanoaod": {"collection": collection, "constituents": constituents}}
    raw["classes"] = {"truth_branch": classes[0], "labels": classes[1]}
    raw["features"] = {"candidate": candidate, "collections": collections}
    raw["resampling"].pop("groups", None)
    raw["resampling"].update({"n_jobs": 1, "pt_bins": [20, 1000], "eta_bins": [0.0, 2.3],
                              "class_ratio": {c: 1 for c in classes[1]}, "enable_emptybin": True})
    raw["train_sample"]["additional_labels"] = []
    raw["export"].pop("sequence_names", None)
    if "evaluation" in raw:
        raw["evaluation"]["signals"] = [next(iter(classes[1]))]
    return raw


PF_VARS = {"pt": {"scaling": "normal", "limits": [-5, 5]}}


def _read_all(cfg, path, fields):
    src = open_source(input_spec(cfg, "ds"), path)
    try:
        chunk, _ = read_prepared(input_spec(cfg, "ds"), src, 0, src.num_entries, fields)
    finally:
        src.close()
    return chunk


# -- two-step links -------------------------------------------------------------------------------
def _expected_via(events, cand: str, link: bool) -> tuple[list[int], list[list[float]]]:
    """Per candidate (event order): the constituents of the jet it points to, in link-table order:
    PFCands_pt[JetPFCands_pFCandsIdx] (link) or JetPFCands_pt (index) of the rows with that jetIdx."""
    counts, values = [], []
    for ev in ak.to_list(events):
        for j in ev[f"{cand}_jetIdx"]:
            if j < 0 or j >= ev["nJet"]:
                counts.append(0)
                values.append([])
                continue
            rows = [r for r, owner in enumerate(ev["JetPFCands_jetIdx"]) if owner == j]
            vals = [ev["PFCands_pt"][ev["JetPFCands_pFCandsIdx"][r]] for r in rows] if link else \
                [ev["JetPFCands_pt"][r] for r in rows]
            counts.append(len(vals))
            values.append(vals)
    return counts, values


@pytest.mark.parametrize("link,name", [(True, "pfnano.root"), (False, "pfnano.root"), (True, "pfnano_rntuple.root")])
def test_muons_through_their_jets_to_pfcands_on_pfnano(tmp_path, link, name):
    """coffea's PFNano has no taus, but its muons point to jets (Muon_jetIdx), and four muons of one
    event share one jet: each gets that jet's candidates. Its RNTuple twin gives the same (the
    expectation is computed from the TTree file)."""
    path = sample(name)
    cons = {"collection": "PFCands", "link": JET_PFCANDS} if link else {"collection": "JetPFCands", "index": "jetIdx"}
    cons["via"] = {"collection": "Jet", "index": "jetIdx"}
    raw = nano_raw([path], "Muon", {"pfcands": cons}, ("genPartFlav", {"prompt": [1], "other": [0, 3, 4, 5, 15]}),
                   {"pt": {"scaling": "normal"}}, {"pfcands": {"n_max": 8, "variables": PF_VARS}})
    cfg = config_from_dict(raw, str(tmp_path / "c.yaml"))
    chunk = _read_all(cfg, path, ["pt", "pfcands_pt"])
    events = uproot.open(sample("pfnano.root"))["Events"].arrays(["nJet", "Muon_jetIdx", "JetPFCands_jetIdx",
                                                                  "JetPFCands_pFCandsIdx",
                                                 "PFCands_pt", "JetPFCands_pt", "Muon_pt"])
    counts, values = _expected_via(events, "Muon", link)
    assert len(chunk) == len(counts) == 10
    assert ak.to_list(ak.num(chunk["pfcands_pt"])) == counts
    assert min(counts) > 0 and len(set(counts)) > 3
    np.testing.assert_array_equal(ak.to_numpy(chunk["pt"]), ak.to_numpy(ak.flatten(events["Muon_pt"])))
    assert ak.to_list(chunk["pfcands_pt"]) == values
    # the four muons of event 6 point to jet 0: the same candidates four times
    ev6 = int(ak.sum(ak.num(events["Muon_jetIdx"][:6])))
    assert ak.to_list(events["Muon_jetIdx"][6]) == [0, 0, 0, 0, 3]
    got = ak.to_list(chunk["pfcands_pt"][ev6:ev6 + 4])
    assert len(got[0]) > 0 and got == [got[0]] * 4


def _write_taus(path: str) -> dict:
    """A small NanoAOD-like file: taus pointing to jets (-1: none; 9: out of range), jets with their
    PF candidates through a JetPFCands table in shuffled order."""
    rng = np.random.default_rng(3)
    n_ev = 60
    ntau, njet = rng.integers(0, 4, n_ev), rng.integers(0, 5, n_ev)
    jet_idx = [rng.integers(-1, max(nj, 1) + 1, nt) for nt, nj in zip(ntau, njet)]  # -1 .. njet (out of range)
    npf = rng.integers(0, 20, n_ev)
    own_j, own_p = [], []
    for nj, npfc in zip(njet, npf):
        pairs = [(j, p) for p in range(npfc) for j in ([rng.integers(0, nj)] if nj and rng.random() < 0.8 else [])]
        order = rng.permutation(len(pairs))
        own_j.append(np.array([pairs[i][0] for i in order], np.int16))
        own_p.append(np.array([pairs[i][1] for i in order], np.int16))
    events = {"run": np.ones(n_ev, np.uint32), "luminosityBlock": np.ones(n_ev, np.uint32),
              "event": np.arange(n_ev, dtype=np.uint64),
              "Tau": ak.zip({"pt": ak.Array([(20 + rng.exponential(30, nt)).astype(np.float32) for nt in ntau]),
                             "eta": ak.Array([rng.uniform(-2, 2, nt).astype(np.float32) for nt in ntau]),
                             "jetIdx": ak.Array([x.astype(np.int16) for x in jet_idx]),
                             "genPartFlav": ak.Array([np.full(nt, 5, np.uint8) for nt in ntau])}),
              "Jet": ak.zip({"pt": ak.Array([rng.exponential(30, nj).astype(np.float32) for nj in njet])}),
              "JetPFCands": ak.zip({"jetIdx": ak.Array(own_j), "pFCandsIdx": ak.Array(own_p)}),
              "PFCands": ak.zip({"pt": ak.Array([rng.exponential(5, n).astype(np.float32) for n in npf])})}
    with uproot.recreate(path) as f:
        f.mktree("Events", {k: (v.type.content if isinstance(v, ak.Array) else v.dtype) for k, v in events.items()})
        f["Events"].extend(events)
    return events


def test_taus_through_jets_with_missing_jets_get_no_constituents(tmp_path):
    path = str(tmp_path / "taus.root")
    _write_taus(path)
    cons = {"pfcands": {"collection": "PFCands", "link": JET_PFCANDS, "via": {"collection": "Jet", "index": "jetIdx"}}}
    raw = nano_raw([path], "Tau", cons, ("genPartFlav", {"tau": [5], "jet": [0]}), {"pt": {"scaling": "normal"}},
                   {"pfcands": {"n_max": 8, "variables": PF_VARS}})
    cfg = config_from_dict(raw, str(tmp_path / "c.yaml"))
    chunk = _read_all(cfg, path, ["pt", "jetIdx", "pfcands_pt"])
    events = uproot.open(path)["Events"].arrays(["nJet", "Tau_jetIdx", "JetPFCands_jetIdx", "JetPFCands_pFCandsIdx",
                                                 "PFCands_pt"])
    counts, values = _expected_via(events, "Tau", link=True)
    jet_idx = ak.to_numpy(chunk["jetIdx"])
    njet = np.repeat(ak.to_numpy(events["nJet"]), ak.to_numpy(ak.num(events["Tau_jetIdx"])))
    assert (jet_idx == -1).sum() > 3 and (jet_idx >= njet).sum() > 3   # taus pointing to no jet, or out of range
    assert ak.to_list(ak.num(chunk["pfcands_pt"])) == counts
    assert all(c == 0 for c, j, n in zip(counts, jet_idx, njet) if j < 0 or j >= n)
    assert sum(counts) > 50
    assert ak.to_list(chunk["pfcands_pt"]) == values


def test_via_branches_missing_name_the_key(tmp_path):
    path = sample("pfnano.root")
    cons = {"pfcands": {"collection": "PFCands", "link": JET_PFCANDS, "via": {"collection": "Jet", "index": "nojetIdx"}}}
    raw = nano_raw([path], "Muon", cons, ("genPartFlav", {"prompt": [1], "other": [0]}), {"pt": {"scaling": "normal"}},
                   {"pfcands": {"n_max": 8, "variables": PF_VARS}})
    cfg = config_from_dict(raw, str(tmp_path / "c.yaml"))
    with pytest.raises(InputError, match=r"pfnano.root: branch 'Muon_nojetIdx' \(config key "
                                         r"inputs.nanoaod.constituents.pfcands.via\) not found"):
        open_source(input_spec(cfg, "ds"), path)
    raw["inputs"]["nanoaod"]["constituents"]["pfcands"]["via"] = {"collection": "Jet"}
    with pytest.raises(ConfigError, match=r"c.yaml: inputs.nanoaod.constituents.pfcands.via.index: missing required key"):
        config_from_dict(raw, str(tmp_path / "c.yaml"))


# -- inputs.nanoaod.constituents.<name> == features.collections.<name> ---------------------------
def test_constituent_sources_and_feature_collections_must_match(tmp_path):
    path = sample("pfnano.root")
    cons = {"pfcands": {"collection": "JetPFCands", "index": "jetIdx"}}
    raw = nano_raw([path], "Jet", cons, ("hadronFlavour", {"c": [4], "light": [0]}), {"pt": {"scaling": "normal"}},
                   {"pfcands": {"n_max": 8, "variables": PF_VARS}})
    config_from_dict(raw, str(tmp_path / "c.yaml"))
    bad = copy.deepcopy(raw)
    bad["features"]["collections"] = {"pfcand": bad["features"]["collections"]["pfcands"]}
    with pytest.raises(ConfigError) as e:
        config_from_dict(bad, str(tmp_path / "c.yaml"))
    assert str(e.value) == (f"{tmp_path / 'c.yaml'}: inputs.nanoaod.constituents.pfcands: no features.collections.pfcands "
                            "uses it (features.collections: pfcand); the names must match")
    bad = copy.deepcopy(raw)
    bad["inputs"]["nanoaod"]["constituents"] = {}
    with pytest.raises(ConfigError) as e:
        config_from_dict(bad, str(tmp_path / "c.yaml"))
    assert str(e.value) == (f"{tmp_path / 'c.yaml'}: features.collections.pfcands: no inputs.nanoaod.constituents."
                            "pfcands reads it (inputs.nanoaod.constituents: none); the names must match")
    assert "\n" not in str(e.value)


# -- isfinite and where -------------------------------------------------------------------------
def test_isfinite_and_where_in_expressions(tmp_path):
    raw = nano_raw([sample("pfnano.root")], "Jet", {"pfcands": {"collection": "JetPFCands", "index": "jetIdx"}},
                   ("hadronFlavour", {"c": [4], "light": [0]}),
                   {"x_or_0": {"expression": "where(isfinite(x), x, 0)", "scaling": "no_scaling"},
                    "x_finite": {"expression": "1.0 * isfinite(x)", "scaling": "no_scaling"}},
                   {"pfcands": {"n_max": 8, "variables": {
                       "s": {"expression": "where(isfinite(sip), sip, -1)", "scaling": "no_scaling"}}}})
    cfg = config_from_dict(raw, str(tmp_path / "c.yaml"))
    chunk = ak.Array({"x": np.array([1.5, np.nan, np.inf, -np.inf, -2.0]),
                      "pfcands_sip": ak.Array([[np.nan, 2.0], [], [np.inf, -np.inf, 3.0], [0.5], [np.nan]])})
    np.testing.assert_array_equal(candidate_features(chunk, cfg.candidate_variables),
                                  [[1.5, 1], [0, 0], [0, 0], [0, 0], [-2.0, 1]])
    flat, counts = collection_features(chunk, cfg.collections[0])
    np.testing.assert_array_equal(counts, [2, 0, 3, 1, 1])
    np.testing.assert_array_equal(flat[:, 0], [-1, 2.0, -1, -1, 3.0, 0.5, -1])
    # an unknown function is a one-line error naming the key
    raw["features"]["candidate"]["x_or_0"]["expression"] = "where(isnan(x), 0, x)"
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw, str(tmp_path / "c.yaml"))
    assert str(e.value).startswith(f"{tmp_path / 'c.yaml'}: features.candidate.x_or_0.expression: invalid expression: "
                                   "unknown function 'isnan' (only abs, ")
    assert "isfinite" in str(e.value) and "\n" not in str(e.value)
    raw["features"]["candidate"]["x_or_0"]["expression"] = "np.isnan(x)"
    with pytest.raises(ConfigError, match=r"features.candidate.x_or_0.expression: invalid expression: unknown "
                                          r"function 'np.isnan'"):
        config_from_dict(raw, str(tmp_path / "c.yaml"))


# -- one_hot scaling ------------------------------------------------------------------------------
def _one_hot_raw(demo_files: dict) -> dict:
    raw = tiny_raw()
    del raw["demo"]
    raw["inputs"]["datasets"] = {ds: {"files": [p]} for ds, p in demo_files.items()}
    cand = raw["features"]["candidate"]
    # the demo's decay modes are 0, 1, 10, 11: leave 11 out, so that it reads as all zeros
    cand["decay_mode"] = {"scaling": "one_hot", "categories": [0, 1, 10]}
    raw["features"]["collections"]["pfcand"]["variables"]["charge"] = {"scaling": "one_hot", "categories": [-1, 1]}
    return raw


def test_one_hot_config_expands_into_named_indicators(demo_files, tmp_path):
    raw = _one_hot_raw(demo_files)
    cfg = config_from_dict(raw, str(tmp_path / "c.yaml"))
    names = [v.name for v in cfg.candidate_variables]
    assert names[names.index("mass") + 1:names.index("iso_charged")] == ["decay_mode_is_0", "decay_mode_is_1",
                                                                          "decay_mode_is_10"]
    pf = cfg.collections[0]
    assert [v.name for v in pf.variables if v.name.startswith("charge")] == ["charge_is_m1", "charge_is_1"]
    ind = {v.name: v for v in cfg.candidate_variables}["decay_mode_is_10"]
    assert (ind.scaling, ind.one_hot, ind.names_used) == ("one_hot", ("decay_mode", "decay_mode", 10), ("decay_mode",))
    chunk = ak.Array({"decay_mode": np.array([0, 1, 10, 11, 2]), "pfcand_charge": ak.Array([[-1, 1, 0], []])[[0, 0, 1, 1, 0]]})
    x = candidate_features(chunk, [v for v in cfg.candidate_variables if v.name.startswith("decay_mode")])
    np.testing.assert_array_equal(x, [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0]])
    flat, _ = collection_features(chunk[:1], type(pf)(pf.name, pf.n_max, None, tuple(v for v in pf.variables
                                                                                       if v.name.startswith("charge"))))
    np.testing.assert_array_equal(flat, [[1, 0], [0, 1], [0, 0]])

    def error(mutate) -> str:
        bad = copy.deepcopy(raw)
        mutate(bad["features"]["candidate"])
        with pytest.raises(ConfigError) as e:
            config_from_dict(bad, str(tmp_path / "c.yaml"))
        assert "\n" not in str(e.value)
        return str(e.value).split("c.yaml: ", 1)[1]

    assert error(lambda c: c["decay_mode"].pop("categories")) == \
        "features.candidate.decay_mode.categories: one_hot scaling needs categories: [code, ...] (e.g. [0, 1, 10, 11])"
    assert error(lambda c: c["decay_mode"].update(categories=[0, 0])) == \
        "features.candidate.decay_mode.categories: codes must be distinct, got [0, 0]"
    assert error(lambda c: c["decay_mode"].update(categories=[0, 1.5])).startswith(
        "features.candidate.decay_mode.categories: expected a non-empty list of integer codes")
    assert error(lambda c: c["decay_mode"].update(limits=[0, 1])) == \
        "features.candidate.decay_mode.limits: limits make no sense for scaling 'one_hot'"
    assert error(lambda c: c["pt"].update(categories=[1])) == \
        "features.candidate.pt.categories: only for scaling one_hot (this variable has 'normal')"
    assert error(lambda c: c.update(decay_mode_is_1={"scaling": "normal"})) == \
        "features.candidate: variable 'decay_mode_is_1' is defined twice (a one_hot indicator has the name of " \
        "another variable: rename one)"


def _shard(cfg, demo_files, d):
    """One resampled shard of the demo files and its scaling (as conftest.shard_and_scaling)."""
    from taggerflow.resample import acceptance, run_job, split_entries
    from taggerflow.scaling import accumulate, scaling_parameters
    from taggerflow.spectrum import coarse_counts, file_spectrum, fine_edges

    rs = cfg.raw["resampling"]
    pt_e, eta_e = fine_edges(cfg)
    coarse, per_ds = {}, {}
    for ds, path in demo_files.items():
        res = file_spectrum(cfg, path)
        counts = np.stack([res["hists"][c].values(flow=True) for c in cfg.class_names]).astype(np.int64)
        coarse[ds] = coarse_counts(counts, pt_e, eta_e, rs["pt_bins"], rs["eta_bins"])
        per_ds[ds] = [(path, res["entries"])]
    P, p = acceptance(coarse, cfg.class_names, rs["class_ratio"], False, rs["pt_bins"], rs["eta_bins"])
    shard = str(d / "shard.root")
    run_job(cfg, 0, {ds: split_entries(f, 1)[0] for ds, f in per_ds.items()}, P, p, shard, str(d / "m.json"))
    return shard, scaling_parameters(cfg, accumulate(cfg, [shard]))


def test_one_hot_through_scaling_training_files_lwtnn_and_onnx(demo_files, tmp_path):
    """The indicators are variables of their own everywhere: mean 0, std 1 in the scaling, 0/1
    columns named decay_mode_is_<code> in the training files, N lwtnn/ONNX inputs; the lwtnn and ONNX
    checks (numpy lwtnn evaluator, onnxruntime) agree with Keras."""
    import h5py

    from taggerflow.export import check, check_files, check_inputs, convert
    from taggerflow.modelcard import card_inputs_from_config
    from taggerflow.models import build_model
    from taggerflow.onnx_export import export_onnx
    from taggerflow.trainsample import write_train_sample

    cfg = config_from_dict(_one_hot_raw(demo_files), str(tmp_path / "c.yaml"))
    shard, scaling = _shard(cfg, demo_files, tmp_path)
    e = scaling["candidate"]["decay_mode_is_10"]["global"]
    assert (e["mean"], e["std"], e["lim_min"], e["lim_max"], e["default"], e["scaling"]) == (0.0, 1.0, None, None, 0.0, "one_hot")
    raw_dm = ak.to_numpy(uproot.open(shard)["candidates"]["decay_mode"].array())
    assert 0 < e["raw_mean"] == pytest.approx(np.mean(raw_dm == 10))    # the fraction of decay mode 10

    outputs = {s: str(tmp_path / f"{s}.h5") for s in ("train", "validation", "test")}
    write_train_sample(cfg, [shard], scaling, outputs)
    with h5py.File(outputs["train"], "r") as f:
        names = list(f["jets/inputs"].attrs["variables"])
        x = f["jets/inputs"][:]
        pf_names = list(f["pfcand/inputs"].attrs["variables"])
        pf, valid = f["pfcand/inputs"][:], f["pfcand/valid"][:]
    cols = x[:, [names.index(f"decay_mode_is_{c}") for c in (0, 1, 10)]]
    assert set(np.unique(cols)) == {0.0, 1.0} and (cols.sum(axis=1) <= 1).all()
    assert (cols.sum(axis=1) == 0).sum() > 10          # decay mode 11: all zeros
    q = pf[valid][:, [pf_names.index("charge_is_m1"), pf_names.index("charge_is_1")]]
    assert set(np.unique(q)) == {0.0, 1.0} and (q.sum(axis=1) <= 1).all() and q[:, 0].sum() > 10
    assert (q.sum(axis=1) == 0).sum() > 10      # neutral constituents (charge 0): all zeros

    seqs = {n: (c.n_max, len(c.variables)) for n, c, _ in cfg.sequences()}
    model = build_model({"type": "deepsets", "phi_layers": [16], "f_layers": [16]}, len(cfg.candidate_variables),
                        seqs, len(cfg.class_names), seed=5)
    lwtnn_config, clamps = convert(model, cfg, scaling)
    inputs_v = [v["name"] for v in lwtnn_config["inputs"][0]["variables"]]
    assert [n for n in inputs_v if n.startswith("decay_mode")] == ["decay_mode_is_0", "decay_mode_is_1", "decay_mode_is_10"]
    assert json.loads(lwtnn_config["miscellaneous"]["one_hot_inputs"]) == {
        "candidate": {"decay_mode_is_0": ["decay_mode", 0], "decay_mode_is_1": ["decay_mode", 1],
                      "decay_mode_is_10": ["decay_mode", 10]},
        "pfcand": {"charge_is_m1": ["charge", -1], "charge_is_1": ["charge", 1]}}
    assert "one_hot input" in lwtnn_config["miscellaneous"]["note"]
    inputs = check_inputs(cfg, [shard], scaling, 300)
    result = check(model, lwtnn_config, clamps, inputs, ["pfcand"], tolerance=1e-6)
    assert result["passed"] and result["max_abs_diff"] < 1e-6
    # the files as deployment reads them: lwtnn JSON from disk, ONNX through onnxruntime
    model_path, lwtnn_path, onnx_path = (str(tmp_path / n) for n in ("m.keras", "m.json", "m.onnx"))
    model.save(model_path)
    with open(lwtnn_path, "w") as f:
        json.dump(lwtnn_config, f)
    info = export_onnx(model, onnx_path)
    assert info["inputs"][0]["shape"][1] == len(cfg.candidate_variables)
    res = check_files(lwtnn_path, onnx_path, model_path, cfg, scaling, [shard], 300, 1e-6)
    assert res["lwtnn"]["passed"] and res["lwtnn"]["max_abs_diff"] < 1e-6
    assert res["onnx"]["max_abs_diff"] < 1e-6
    cand, _ = card_inputs_from_config(cfg)
    card = {v["name"]: v for v in cand}["decay_mode_is_1"]
    assert card["one_hot"] == {"variable": "decay_mode", "code": "decay_mode", "category": 1,
                               "recipe": "1 if decay_mode == 1 else 0 (every other code, NaN or inf: 0; "
                                         "one_hot indicator of 'decay_mode')"}


