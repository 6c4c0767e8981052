"""Diagnostics that real data needs (issue 17, item 5), on real files nobody here wrote: coffea's
NanoAOD samples (tests/data/coffea, BSD-3-Clause, see its README). A class absent from the test split
is a warning, never a silent NaN AUC; an empty input file that leaves a class empty and a corrupt file
are errors naming the file and its dataset; the pipeline summary counts candidates, not events."""

from __future__ import annotations

import json
import re
import os

import awkward as ak
import numpy as np
import pytest
import uproot

from conftest import tiny_raw

from taggerflow.config import config_from_dict
from taggerflow.evaluation import evaluate
from taggerflow.io import InputError
from taggerflow.metrics import format_aucs, headline_pairs, split_metrics
from taggerflow.resample import ResamplingError, plan_job
from taggerflow.spectrum import file_spectrum, fine_edges, write_spectrum

COFFEA = os.path.join(os.path.dirname(__file__), "data", "coffea")
NANO_DY = os.path.join(COFFEA, "nano_dy.root")
NANO_EMPTY = os.path.join(COFFEA, "nano_dy_empty.root")
BAD = os.path.join(COFFEA, "bad_delphes.root")
GENPARTFLAV = {"tau": [5], "e": [1, 3, 15], "mu": [2, 4], "jet": [0]}


def nano_raw(datasets: dict[str, list[str]], groups: list[dict] | None = None) -> dict:
    """coffea's NanoAOD taus, classes from genPartFlav, no constituents (the file has no PFCands)."""
    raw = tiny_raw()
    del raw["demo"]
    raw["inputs"] = {"format": "nanoaod", "tree": "Events", "chunk_size": 100,
                     "datasets": {ds: {"files": fl} for ds, fl in datasets.items()},
                     "nanoaod": {"collection": "Tau"}}
    raw["classes"] = {"truth_branch": "genPartFlav", "labels": GENPARTFLAV}
    raw["features"] = {"candidate": {"pt": {"scaling": "normal", "limits": [-5, 5]},
                                     "abs_eta": {"expression": "abs(eta)", "scaling": "linear", "limits": [0, 2.3]}},
                       "collections": {}}
    raw["resampling"].update({"n_jobs": 1, "pt_bins": [20, 1000], "eta_bins": [0.0, 2.3],
                              "class_ratio": {"tau": 1, "e": 1, "mu": 1, "jet": 1}})
    raw["resampling"].pop("groups", None)
    if groups:
        raw["resampling"]["groups"] = groups
    raw["train_sample"]["additional_labels"] = []
    raw["training"]["model"]["type"] = "dense"      # no constituents to feed a deep-sets model
    raw["training"]["variants"] = [{"name": "dense"}]
    raw["export"].pop("sequence_names", None)
    return raw


def _spectra(cfg, files: list[tuple[str, str]]) -> list[dict]:
    pt_e, eta_e = fine_edges(cfg)
    out = []
    for ds, path in files:
        r = file_spectrum(cfg, path, ds)
        out.append({"dataset": ds, "path": path, "entries": r["entries"], "candidates": r["candidates"],
                    "counts_flow": np.asarray(r["counts_flow"]), "pt_edges": pt_e, "abs_eta_edges": eta_e})
    return out


# -- an empty file that leaves a class empty; a corrupt file -----------------------------------
def test_empty_file_that_empties_a_class_is_named_with_its_dataset(tmp_path):
    groups = [{"name": "taus", "dataset": "DYtau", "file": r".*\.root", "classes": ["tau"]},
              {"name": "others", "dataset": "DY", "file": r".*\.root", "classes": ["e", "mu", "jet"]}]
    raw = nano_raw({"DYtau": [NANO_EMPTY], "DY": [NANO_DY]}, groups)
    cfg = config_from_dict(raw, str(tmp_path / "c.yaml"))
    spectra = _spectra(cfg, [("DYtau", NANO_EMPTY), ("DY", NANO_DY)])
    assert spectra[0]["entries"] == 0 and spectra[1]["entries"] == 40
    # the group that should give the taus has none: the error names the empty file and its dataset
    with pytest.raises(ResamplingError) as err:
        plan_job(cfg, spectra, 0, 1)
    msg = str(err.value)
    assert "group 'taus' has no candidate of class 'tau'" in msg
    assert f"dataset 'DYtau' file {NANO_EMPTY} (empty file: 0 entries)" in msg
    assert "nano_dy.root" not in msg   # the file that has candidates of other classes is not blamed
    # with empty bins allowed, the ratio check is the one that fails, naming the same file
    raw["resampling"]["enable_emptybin"] = True
    cfg = config_from_dict(raw, str(tmp_path / "c2.yaml"))
    with pytest.raises(ResamplingError) as err:
        plan_job(cfg, spectra, 0, 1)
    assert str(err.value).startswith("class 'tau' has ratio 1 but no group provides candidates of it; "
                                     f"no 'tau' candidate in: dataset 'DYtau' file {NANO_EMPTY} (empty file: 0 entries)")


def test_file_without_a_class_is_named_with_its_entries(tmp_path):
    # nano_dy.root has taus of every class but genPartFlav 5 (tau) only 5 times: ask for a class
    # nobody in it has (genPartFlav 99) and the file is named with its entry count
    raw = nano_raw({"DY": [NANO_DY]}, [{"name": "all", "dataset": "DY", "file": r".*\.root",
                                         "classes": ["tau", "e", "mu", "jet", "other"]}])
    raw["classes"]["labels"] = {**GENPARTFLAV, "other": [99]}
    raw["resampling"]["class_ratio"]["other"] = 1
    raw["resampling"]["enable_emptybin"] = True
    cfg = config_from_dict(raw, str(tmp_path / "c.yaml"))
    with pytest.raises(ResamplingError,
                       match=r"class 'other' has ratio 1 .*dataset 'DY' file .*nano_dy.root \(40 entries, none of class 'other'\)"):
        plan_job(cfg, _spectra(cfg, [("DY", NANO_DY)]), 0, 1)


def test_corrupt_file_is_reported_as_corrupt_with_its_dataset(tmp_path):
    cfg = config_from_dict(nano_raw({"Delphes": [BAD]}), str(tmp_path / "c.yaml"))
    with pytest.raises(InputError) as err:
        file_spectrum(cfg, BAD, "Delphes")
    msg = str(err.value)
    assert msg.startswith(f"{BAD}: corrupt ROOT file: no list of keys and no streamer infos")
    assert msg.endswith("(dataset 'Delphes')") and "no tree 'Events'" in msg
    # a sound file without the tree is not called corrupt
    with pytest.raises(InputError) as err:
        cfg2 = config_from_dict({**nano_raw({"DY": [NANO_DY]}),
                                 "inputs": {**nano_raw({"DY": [NANO_DY]})["inputs"], "tree": "Missing"}},
                                str(tmp_path / "c2.yaml"))
        file_spectrum(cfg2, NANO_DY, "DY")
    assert "corrupt" not in str(err.value)
    assert str(err.value) == f"{NANO_DY}: no tree 'Missing' (keys: Events, Runs) (dataset 'DY')"


def test_cut_off_file_is_reported_as_corrupt(tmp_path):
    cut = tmp_path / "nano_dy_cut.root"
    data = open(NANO_EMPTY, "rb").read()
    cut.write_bytes(data[: len(data) // 2])
    cfg = config_from_dict(nano_raw({"DY": [str(cut)]}), str(tmp_path / "c.yaml"))
    with pytest.raises(InputError) as err:
        file_spectrum(cfg, str(cut), "DY")
    msg = str(err.value)
    assert msg.startswith(f"{cut}: cannot be read as a ROOT file: corrupt or truncated (")
    assert msg.endswith("(dataset 'DY')")


# -- a class absent from the test split ---------------------------------------------------------
def _scores(labels: np.ndarray, n_classes: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.random((len(labels), n_classes)) + 2.0 * np.eye(n_classes)[labels]
    return p / p.sum(axis=1, keepdims=True)


def test_absent_class_is_a_warning_and_null_auc_not_nan():
    classes = ["tau", "e", "mu", "jet"]
    labels = np.array([1, 2, 3, 1, 2, 3, 3, 1])          # no tau in this test split
    probs = _scores(labels, 4)
    m = split_metrics(probs, labels, classes)
    assert m["per_class"] == {"tau": 0, "e": 3, "mu": 2, "jet": 3}
    assert m["warnings"] == ["class 'tau' has no candidates in the test split: AUC tau vs e, tau vs mu, tau vs jet "
                             "(and the reverse) undefined (null)"]
    assert m["auc"]["tau_vs_jet"] is None and m["auc"]["jet_vs_tau"] is None
    assert 0 <= m["auc"]["e_vs_jet"] <= 1
    json.loads(json.dumps(m, allow_nan=False))            # strict JSON: no NaN anywhere
    line = format_aucs(m["auc"], headline_pairs(classes))
    assert line.startswith("AUC tau vs e n/a (a class absent), tau vs mu n/a")
    # every split complete: no warning
    full = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    assert split_metrics(_scores(full, 4), full, classes)["warnings"] == []


def test_absent_class_in_evaluation_and_report(tmp_path):
    from taggerflow.report import write_evaluation_report
    from taggerflow.utils import write_json

    classes = ["b", "c", "light"]
    labels = np.array([0, 2, 0, 2, 0, 2, 2, 0])           # no c
    probs = _scores(labels, 3)
    pt = np.full(len(labels), 50.0)
    eta = np.linspace(-2, 2, len(labels))
    m = evaluate(probs, labels, classes, ["b"], [0.5], pt, eta, [20, 1000], [0, 2.5])
    assert m["warnings"] == ["class 'c' has no candidates in the test split: AUC c vs b, c vs light (and the "
                             "reverse) undefined (null)"]
    assert m["pairs"]["b_vs_c"]["auc"] is None
    assert m["pairs"]["b_vs_light"]["auc"] == pytest.approx(
        float(np.mean(probs[labels == 0, 0] / (probs[labels == 0, 0] + probs[labels == 0, 2]) >
                      (probs[labels == 2, 0] / (probs[labels == 2, 0] + probs[labels == 2, 2]))[:, None])))
    paths = {"metrics": str(tmp_path / "metrics.json"), "predictions": str(tmp_path / "p.h5"),
             "working_points": str(tmp_path / "wp.json")}
    write_json(paths["metrics"], m)
    summary = write_evaluation_report({"model": paths}, str(tmp_path / "report.md"), str(tmp_path / "summary.json"))
    assert summary["model"]["warnings"] == m["warnings"]
    assert summary["model"]["auc"]["b_vs_c"] is None
    text = open(tmp_path / "report.md").read()
    assert "> **Warning** (model): class 'c' has no candidates in the test split" in text
    assert "| n/a |" in text and "nan" not in text.lower()
    assert os.path.getsize(tmp_path / "plots" / "roc_b_vs_c.png") > 0


# -- the pipeline summary counts candidates ------------------------------------------------------
def test_spectrum_counts_are_candidates_not_events(tmp_path):
    from tasks.summary import spectrum_counts

    cfg = config_from_dict(nano_raw({"DY": [NANO_DY]}), str(tmp_path / "c.yaml"))
    r = file_spectrum(cfg, NANO_DY, "DY")
    write_spectrum({**r, "dataset": "DY", "path": NANO_DY}, str(tmp_path / "s.npz"), str(tmp_path / "s.root"),
                   cfg.class_names)
    counts = spectrum_counts([str(tmp_path / "s.npz")], cfg.class_names)
    # independently: uproot/awkward over the same file
    flav = ak.to_numpy(ak.flatten(uproot.open(NANO_DY)["Events"]["Tau_genPartFlav"].array()))
    expected = {c: int(np.isin(flav, v).sum()) for c, v in GENPARTFLAV.items()}
    assert counts["entries"] == 40 and counts["candidates"] == len(flav) == 29
    assert counts["per_class"] == expected and counts["labelled"] == sum(expected.values())


def test_rntuple_twin_gives_the_ttree_counts_and_a_cut_one_is_named(tmp_path):
    """coffea's RNTuple twin of nano_dy.root: Spectrum reads it (its pages checked against the file's
    size, as a TTree's baskets are) to the same counts; cut short, it fails naming the file."""
    rntuple = os.path.join(COFFEA, "nano_dy_rntuple.root")
    cfg = config_from_dict(nano_raw({"DY": [NANO_DY]}), str(tmp_path / "c.yaml"))
    tree, twin = file_spectrum(cfg, NANO_DY, "DY"), file_spectrum(cfg, rntuple, "DY")
    assert twin["entries"] == tree["entries"] == 40 and twin["candidates"] == tree["candidates"] == 29
    np.testing.assert_array_equal(np.asarray(twin["counts_flow"]), np.asarray(tree["counts_flow"]))
    with open(rntuple, "rb") as f:
        data = f.read()
    # the header and footer stay readable: only a page of the data is cut off
    from taggerflow.integrity import check_rntuple_pages

    ntuple = uproot.open(rntuple)["Events"]
    ends = [p.locator.offset + p.locator.num_bytes for cl in ntuple.page_link_list for col in cl for p in col.pages]
    assert max(ends) <= len(data)
    check_rntuple_pages(ntuple, rntuple)   # intact: no error
    cut = tmp_path / "nano_dy_rntuple_cut.root"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(InputError, match=rf"^{cut}: .*(truncated|corrupt)"):
        file_spectrum(cfg, str(cut), "DY")


# -- law run Pipeline on the real file: the summary, the report and the logs -------------------------
@pytest.mark.slow
def test_pipeline_on_nanoaod_summary_counts_and_class_names(tmp_path):
    """40 events with 29 taus, class names of our own (not tau/e/mu/jet): the summary counts the
    candidates of the spectrum and of the shards, names the configured pairs, and the one jet-like
    tau cannot be in every split, so the split without it carries a warning, not a NaN."""
    import glob

    import h5py

    from conftest import write_config
    from test_e2e import _law, _law_env

    labels = {"hadronic": [5], "electron": [1, 3, 15], "muon": [2, 4], "fake": [0]}
    raw = nano_raw({"DY": [NANO_DY]})
    raw["name"] = "nano"
    raw["classes"]["labels"] = labels
    raw["resampling"]["class_ratio"] = {c: -1 for c in labels}   # take every candidate
    raw["resampling"]["enable_emptybin"] = True
    raw["training"].update({"epochs": 1, "batch_size": 8})
    raw["export"]["n_check"] = 10
    raw["evaluation"] = {"signals": ["hadronic"], "working_points": [0.5]}
    env = _law_env(tmp_path)
    _law(["index", "-q"], env)
    proc = _law(["run", "Pipeline", "--version", "v1", "--config", write_config(raw, tmp_path)], env)
    data = tmp_path / "data"

    flav = ak.to_numpy(ak.flatten(uproot.open(NANO_DY)["Events"]["Tau_genPartFlav"].array()))
    per_class = {c: int(np.isin(flav, v).sum()) for c, v in labels.items()}
    written = sum(json.load(open(m))["entries_written"]
                  for m in glob.glob(str(data / "ShuffleMergeSpectral/v1/*/manifest_*.json")))
    text = open(glob.glob(str(data / "ConvertLwtnn/v1/*/dense/pipeline_summary.md"))[0]).read()
    assert (f"- Spectrum: 1 input files, 40 tree entries, 29 candidates, {sum(per_class.values())} after the "
            f"selection and with a class (per class {per_class})") in text
    assert f"{written} candidates kept ({100 * written / 29:.1f} % of 29)" in text
    assert "AUC hadronic vs electron " in text and "hadronic vs fake " in text and "tau vs jet" not in text

    # the test split as written: the classes it lacks are exactly the summary's and the report's warnings
    test_labels = np.concatenate([h5py.File(p, "r")["jets/labels"][:]
                                  for p in sorted(glob.glob(str(data / "WriteTrainSample/v1/*/test_*.h5")))])
    absent = [c for i, c in enumerate(labels) if not np.any(test_labels == i)]
    assert absent, "the single 'fake' candidate cannot be in every split"
    summary = json.load(open(glob.glob(str(data / "Training/v1/*/dense/summary.json"))[0]))
    assert [w.split("'")[1] for w in summary["test"]["warnings"]] == absent
    for c in absent:
        assert f"  - **warning**: class '{c}' has no candidates in the test split" in text
        assert f"warning: class '{c}' has no candidates in the test split" in proc.stdout + proc.stderr
    report = open(glob.glob(str(data / "EvaluationReport/v1/*/report.md"))[0]).read()
    assert all(f"> **Warning** (dense): class '{c}' has no candidates in the test split" in report for c in absent)
    assert not re.search(r"\bnan\b", report, re.I)
    metrics = open(glob.glob(str(data / "Evaluation/v1/*/dense/metrics.json"))[0]).read()
    assert "NaN" not in metrics
