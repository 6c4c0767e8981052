"""``law run Pipeline`` on real NanoAOD files nobody here wrote (issue 17, done-when for NanoAOD):
coffea's NanoAOD v15 jets (b/c/light from ``Jet_hadronFlavour``) and its PFNano jets with their PF
candidates through ``JetPFCands``, tiny epochs, to lwtnn and ONNX. The candidate and constituent
counts and a few feature values of the training files are checked against uproot/awkward
computations written here, independent of the readers."""

from __future__ import annotations

import glob
import json

import awkward as ak
import h5py
import numpy as np
import pytest
import uproot

from coffea_samples import sample
from conftest import tiny_raw, write_config

FLAVOURS = {"b": [5], "c": [4], "light": [0]}


def jets_raw(path: str, name: str, classes: dict, candidate: dict, constituents: dict, collections: dict) -> dict:
    raw = tiny_raw()
    del raw["demo"]
    raw["name"] = name
    raw["inputs"] = {"format": "nanoaod", "tree": "Events", "chunk_size": 100, "datasets": {"TT": {"files": [path]}},
                     "nanoaod": {"collection": "Jet", "constituents": constituents}}
    raw["classes"] = {"truth_branch": "hadronFlavour", "labels": classes}
    # NanoAOD jets start at 15 GeV and reach |eta| 4.7: spectrum and bins take every jet
    raw["spectrum"] = {"pt_fine": {"start": 15.0, "stop": 4015.0, "n_bins": 4}, "abs_eta_fine": {"start": 0.0, "stop": 5.0, "n_bins": 1}}
    raw["resampling"].pop("groups", None)
    raw["resampling"].update({"n_jobs": 1, "pt_bins": [15, 4015], "eta_bins": [0.0, 5.0], "enable_emptybin": True,
                              "class_ratio": {c: -1 for c in classes}})     # every jet
    raw["features"] = {"candidate": candidate, "collections": collections}
    raw["train_sample"]["additional_labels"] = []
    raw["training"].update({"epochs": 1, "batch_size": 16})
    raw["export"].pop("sequence_names", None)
    raw["export"]["n_check"] = 200
    raw["evaluation"] = {"signals": [next(iter(classes))], "working_points": [0.5]}
    return raw


def run_pipeline(raw: dict, tmp_path) -> tuple[str, str]:
    from test_e2e import _law, _law_env

    env = _law_env(tmp_path)
    _law(["index", "-q"], env)
    proc = _law(["run", "Pipeline", "--version", "v1", "--config", write_config(raw, tmp_path)], env)
    return str(tmp_path / "data"), proc.stdout + proc.stderr


def training_rows(data: str) -> dict[str, np.ndarray]:
    """Every candidate of the three training files (train, validation, test), concatenated."""
    parts: dict[str, list] = {}
    for split in ("train", "validation", "test"):
        for p in sorted(glob.glob(f"{data}/WriteTrainSample/v1/*/{split}_*.h5")):
            with h5py.File(p, "r") as f:
                def visit(key, obj):
                    if isinstance(obj, h5py.Dataset):
                        parts.setdefault(key, []).append(obj[:])
                        parts.setdefault(f"{key}@variables", [list(obj.attrs.get("variables", []))])
                f.visititems(visit)
    return {k: (v[0] if k.endswith("@variables") else np.concatenate(v)) for k, v in parts.items()}


def _checks(data: str) -> dict:
    card = json.load(open(glob.glob(f"{data}/ConvertLwtnn/v1/*/*/model_card.json")[0]))
    return card


@pytest.mark.slow
def test_pipeline_on_nanoaod_v15_jets(tmp_path):
    path = sample("nano_tt_v15.root")
    raw = jets_raw(path, "v15jets", FLAVOURS,
                   {"pt": {"scaling": "normal", "limits": [-5, 5]},
                    "abs_eta": {"expression": "abs(eta)", "scaling": "linear", "limits": [0, 5]},
                    # PNet's b score, -1 for jets it did not evaluate
                    "btagPNetB": {"expression": "where(btagPNetB >= 0, btagPNetB, 0)", "scaling": "normal",
                                  "limits": [-5, 5], "selection": "btagPNetB >= 0"},
                    "nSVs": {"scaling": "one_hot", "categories": [0, 1, 2]}},
                   {}, {})
    raw["training"]["model"]["type"] = "dense"
    raw["training"]["variants"] = [{"name": "dense"}]
    data, log = run_pipeline(raw, tmp_path)

    ev = uproot.open(path)["Events"].arrays(["event", "nJet", "Jet_pt", "Jet_eta", "Jet_hadronFlavour", "Jet_nSVs",
                                             "Jet_btagPNetB"])
    flav = ak.to_numpy(ak.flatten(ev["Jet_hadronFlavour"]))
    per_class = {c: int(np.isin(flav, v).sum()) for c, v in FLAVOURS.items()}
    n_jets = int(ak.sum(ev["nJet"]))
    assert sum(per_class.values()) == n_jets == 1636
    summary = open(glob.glob(f"{data}/ConvertLwtnn/v1/*/dense/pipeline_summary.md")[0]).read()
    assert f"- Spectrum: 1 input files, 200 tree entries, {n_jets} candidates, {n_jets} after the selection and " \
           f"with a class (per class {per_class})" in summary

    rows = training_rows(data)
    assert len(rows["jets/labels"]) == n_jets        # every jet, in exactly one split
    np.testing.assert_array_equal(np.bincount(rows["jets/labels"], minlength=3), list(per_class.values()))
    # the jets of the files, matched to those of the input by (event, pt)
    ev_of_jet = np.repeat(ak.to_numpy(ev["event"]), ak.to_numpy(ev["nJet"]))
    pt, eta = ak.to_numpy(ak.flatten(ev["Jet_pt"])), ak.to_numpy(ak.flatten(ev["Jet_eta"]))
    key = {(int(e), float(p), float(h)): i for i, (e, p, h) in enumerate(zip(ev_of_jet, pt, eta))}
    assert len(key) == n_jets
    idx = np.array([key[(int(e), float(p), float(h))] for e, p, h in zip(rows["jets/event"], rows["jets/pt"],
                                                                          rows["jets/eta"])])
    assert len(set(idx.tolist())) == n_jets
    np.testing.assert_array_equal(rows["jets/labels"], np.select([flav[idx] == 5, flav[idx] == 4], [0, 1], 2))
    names = rows["jets/inputs@variables"]
    assert names == ["pt", "abs_eta", "btagPNetB", "nSVs_is_0", "nSVs_is_1", "nSVs_is_2"]
    x = rows["jets/inputs"]
    nsv = ak.to_numpy(ak.flatten(ev["Jet_nSVs"]))[idx]
    for k in (0, 1, 2):
        np.testing.assert_array_equal(x[:, names.index(f"nSVs_is_{k}")], (nsv == k).astype(np.float32))
    assert ((nsv >= 3) == (x[:, 3:].sum(axis=1) == 0)).all() and (nsv >= 3).sum() == 21   # 3, 4, 5 SVs: all zeros
    # scaled values from the scaling file and the raw branches
    scaling = json.load(open(glob.glob(f"{data}/MergeScaling/v1/*/scaling.json")[0]))
    s = scaling["candidate"]["abs_eta"]["global"]
    np.testing.assert_allclose(x[:, 1], (np.abs(ak.to_numpy(ak.flatten(ev["Jet_eta"])))[idx] - s["mean"]) / s["std"],
                               atol=1e-6)
    b = ak.to_numpy(ak.flatten(ev["Jet_btagPNetB"]))
    s = scaling["candidate"]["btagPNetB"]["global"]
    assert s["cut"] == int((b < 0).sum()) > 100 and s["num"] == int((b >= 0).sum())
    np.testing.assert_allclose(s["mean"], b[b >= 0].astype(np.float64).mean(), rtol=1e-9)

    card = _checks(data)
    assert card["checks"]["lwtnn"]["passed"] and card["checks"]["lwtnn"]["max_abs_diff"] < 1e-6
    assert card["checks"]["onnx"]["max_abs_diff"] < 1e-6
    assert card["preprocessing"]["lwtnn"].endswith("; a one_hot input is computed from the raw code first "
                                                   "(variables[].one_hot.recipe: 1 if code == category else 0)")
    ind = {v["name"]: v for v in card["inputs"][0]["variables"]}["nSVs_is_2"]
    assert ind["one_hot"] == {"variable": "nSVs", "code": "nSVs", "category": 2,
                              "recipe": "1 if nSVs == 2 else 0 (every other code, NaN or inf: 0; one_hot indicator of 'nSVs')"}
    lwtnn = json.load(open(glob.glob(f"{data}/ConvertLwtnn/v1/*/dense/*lwtnn*.json")[0]))
    assert [v["name"] for v in lwtnn["inputs"]] == names
    assert json.loads(lwtnn["miscellaneous"]["one_hot_inputs"]) == {"candidate": {f"nSVs_is_{k}": ["nSVs", k]
                                                                                  for k in (0, 1, 2)}}


@pytest.mark.slow
def test_pipeline_on_pfnano_jets_with_pfcands(tmp_path):
    path = sample("pfnano.root")
    classes = {"c": [4], "light": [0]}      # the file's 64 jets have no b
    pdg = [211, -211, 130, 22, 1, 2]
    raw = jets_raw(path, "pfnanojets", classes,
                   {"pt": {"scaling": "normal", "limits": [-5, 5]},
                    "abs_eta": {"expression": "abs(eta)", "scaling": "linear", "limits": [0, 5]}},
                   {"pfcands": {"collection": "PFCands", "link": {"collection": "JetPFCands", "candidate_index": "jetIdx",
                                                                  "constituent_index": "pFCandsIdx"}}},
                   {"pfcands": {"n_max": 16, "sort_by": "pt", "variables": {
                       "pt_frac": {"expression": "pt / cand_pt", "scaling": "linear", "limits": [0, 1]},
                       "deta": {"expression": "eta - cand_eta", "scaling": "normal", "limits": [-5, 5]},
                       "d0": {"expression": "where(isfinite(d0), d0, 0)", "scaling": "normal", "limits": [-5, 5]},
                       "pdgId": {"scaling": "one_hot", "categories": pdg}}}})
    raw["training"]["variants"] = [{"name": "deepsets"}]
    data, log = run_pipeline(raw, tmp_path)

    ev = uproot.open(path)["Events"].arrays(["event", "nJet", "Jet_pt", "Jet_hadronFlavour", "JetPFCands_jetIdx",
                                             "JetPFCands_pFCandsIdx", "PFCands_pt", "PFCands_pdgId"])
    # per jet, its PF candidates through the JetPFCands table, by descending pt (written here, not the reader)
    jets = []
    for e in ak.to_list(ev):
        for j, jpt in enumerate(e["Jet_pt"]):
            rows = [e["JetPFCands_pFCandsIdx"][r] for r, owner in enumerate(e["JetPFCands_jetIdx"]) if owner == j]
            cands = sorted(((e["PFCands_pt"][k], e["PFCands_pdgId"][k]) for k in rows), key=lambda c: -c[0])
            jets.append({"key": (e["event"], jpt), "flav": e["Jet_hadronFlavour"][j], "cands": cands})
    assert len(jets) == 64 and sum(len(j["cands"]) for j in jets) == int(ak.sum(ak.num(ev["JetPFCands_jetIdx"])))

    rows = training_rows(data)
    assert len(rows["jets/labels"]) == 64
    by_key = {j["key"]: j for j in jets}
    matched = [by_key[(int(e), float(p))] for e, p in zip(rows["jets/event"], rows["jets/pt"])]
    assert len({m["key"] for m in matched}) == 64
    np.testing.assert_array_equal(rows["jets/labels"], [0 if m["flav"] == 4 else 1 for m in matched])
    valid = rows["pfcands/valid"]
    np.testing.assert_array_equal(valid.sum(axis=1), [min(len(m["cands"]), 16) for m in matched])
    assert max(len(m["cands"]) for m in matched) > 16          # truncated to n_max
    names = rows["pfcands/inputs@variables"]
    assert names == ["pt_frac", "deta", "d0"] + [f"pdgId_is_{c}" if c >= 0 else f"pdgId_is_m{-c}" for c in pdg]
    x = rows["pfcands/inputs"]
    for i, m in enumerate(matched):
        n = min(len(m["cands"]), 16)
        codes = np.array([c[1] for c in m["cands"][:n]])
        expect = np.stack([codes == c for c in pdg], axis=1).astype(np.float32)
        np.testing.assert_array_equal(x[i, :n, 3:], expect)
        # pt_frac = pt / jet pt, linear on [0, 1] -> [-1, 1], clamped
        frac = np.array([c[0] for c in m["cands"][:n]]) / m["key"][1]
        np.testing.assert_allclose(x[i, :n, 0], np.clip(frac * 2 - 1, -1, 1), atol=1e-5)
        assert not x[i, n:].any()
    card = _checks(data)
    assert card["checks"]["lwtnn"]["passed"] and card["checks"]["lwtnn"]["max_abs_diff"] < 1e-6
    assert card["checks"]["onnx"]["max_abs_diff"] < 1e-6
    assert [v["name"] for v in card["inputs"][1]["variables"]] == names
    lwtnn = json.load(open(glob.glob(f"{data}/ConvertLwtnn/v1/*/deepsets/lwtnn.json")[0]))
    assert json.loads(lwtnn["miscellaneous"]["one_hot_inputs"]) == {"pfcands": {
        n: ["pdgId", c] for n, c in zip(names[3:], pdg)}}
    assert [v["name"] for v in lwtnn["input_sequences"][0]["variables"]] == names
