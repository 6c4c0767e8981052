"""Event weights and normalisation (issue 17, item 3) on real files nobody here wrote: coffea's NanoAOD
(nano_dy.root: genWeight, Runs/genEventSumw_ of older NanoAOD; pfnano.root: Runs/genEventSumw). The
weights in the training files are checked against an independent uproot computation, the weighted
metrics against hand-computed values and a brute-force pairwise sum, a training with a zero weight for a
class against one without, and law run Pipeline runs with weights in training and evaluation."""

from __future__ import annotations

import glob
import json
import os
import shutil

import h5py
import numpy as np
import pytest
import uproot

from coffea_samples import sample
from conftest import tiny_raw, write_config
from test_diagnostics import nano_raw

from taggerflow.config import ConfigError, config_from_dict
from taggerflow.event_weights import EventWeightError, dataset_norms
from taggerflow.sum_of_weights import file_sum_of_weights
from taggerflow.io import InputError
from taggerflow.resample import dataset_id
from taggerflow.spectrum import file_spectrum
from taggerflow import weighted_metrics as wm

XSEC_PB, LUMI_INVPB = 6077.22, 1000.0


def weighted_raw(files=None, **dataset_keys) -> dict:
    raw = nano_raw({"DY": files or [sample("nano_dy.root")]})
    raw["name"] = "nanow"
    raw["inputs"]["luminosity_invpb"] = LUMI_INVPB
    raw["inputs"]["datasets"]["DY"].update({"weight": "genWeight", "cross_section_pb": XSEC_PB, **dataset_keys})
    raw["resampling"]["class_ratio"] = {c: -1 for c in raw["classes"]["labels"]}   # every candidate
    raw["resampling"]["enable_emptybin"] = True
    return raw


# -- configuration and input errors: one line naming the file and the key ----------------------------
@pytest.mark.parametrize("change, key", [
    (lambda r: r["inputs"].pop("luminosity_invpb"), "inputs.datasets.DY.cross_section_pb"),
    (lambda r: r["inputs"]["datasets"]["DY"].update(cross_section_pb=-1), "inputs.datasets.DY.cross_section_pb"),
    (lambda r: r["inputs"]["datasets"]["DY"].update(sum_of_weights="runs"), "inputs.datasets.DY.sum_of_weights"),
    (lambda r: r["inputs"]["datasets"]["DY"].update(sum_of_weights={"tree": "Runs", "leaf": "x"}),
     "inputs.datasets.DY.sum_of_weights.leaf"),
    (lambda r: r["inputs"]["datasets"]["DY"].update(weight="genWeight["), "inputs.datasets.DY.weight"),
    (lambda r: r["inputs"]["datasets"]["DY"].update(weight="os.remove(x)"), "inputs.datasets.DY.weight"),
])
def test_weight_configuration_errors_name_the_key(tmp_path, change, key):
    raw = weighted_raw()
    change(raw)
    with pytest.raises(ConfigError, match=rf"c\.yaml: {key}: "):
        config_from_dict(raw, str(tmp_path / "c.yaml"))


def test_event_weights_switches_need_weights(tmp_path):
    raw = nano_raw({"DY": [sample("nano_dy.root")]})
    raw["training"]["event_weights"] = True
    with pytest.raises(ConfigError, match=r"training\.event_weights: true needs event weights"):
        config_from_dict(raw, str(tmp_path / "c.yaml"))
    raw["training"].pop("event_weights")
    raw["evaluation"] = {"signals": ["tau"], "working_points": [0.5], "event_weights": True}
    with pytest.raises(ConfigError, match=r"evaluation\.event_weights: true needs event weights"):
        config_from_dict(raw, str(tmp_path / "c.yaml"))


def test_unknown_branch_missing_runs_tree_and_zero_sum_are_named(tmp_path):
    dy = sample("nano_dy.root")
    cfg = config_from_dict(weighted_raw(weight="genWeight * LHEWeightX"), str(tmp_path / "c.yaml"))
    with pytest.raises(InputError, match=r"nano_dy\.root: branch 'LHEWeightX' \(needed by config key "
                                         r"inputs\.datasets\.DY\.weight\) not found in tree 'Events' \(dataset 'DY'\)$"):
        file_spectrum(cfg, dy, "DY")
    # coffea's missing_luminosityBlock.root has no Runs tree
    nolumi = sample("missing_luminosityBlock.root")
    cfg = config_from_dict(weighted_raw([nolumi]), str(tmp_path / "c.yaml"))
    with pytest.raises(InputError, match=r"missing_luminosityBlock\.root: no tree 'Runs' for the sum of weights "
                                         r"\(config key inputs\.datasets\.DY\.sum_of_weights\.tree; keys: Events\)"):
        file_spectrum(cfg, nolumi, "DY")
    cfg = config_from_dict(weighted_raw(sum_of_weights={"branch": "genEventSumwX"}), str(tmp_path / "c.yaml"))
    with pytest.raises(InputError, match=r"nano_dy\.root: tree 'Runs' has none of the branches genEventSumwX "
                                         r"\(config key inputs\.datasets\.DY\.sum_of_weights\.branch\)"):
        file_spectrum(cfg, dy, "DY")
    cfg = config_from_dict(weighted_raw(weight="0 * genWeight", sum_of_weights="computed"), str(tmp_path / "c.yaml"))
    s = file_spectrum(cfg, dy, "DY")["sum_of_weights"]
    assert s == 0.0
    with pytest.raises(EventWeightError, match=r"dataset 'DY' \(DY/nano_dy\.root\): sum of weights 0 over 1 file\(s\) "
                                               r"\(config key inputs\.datasets\.DY\.sum_of_weights\)"):
        dataset_norms(cfg, {"DY": [("DY/nano_dy.root", s)]})


def test_sum_of_weights_from_both_runs_namings_and_computed_before_the_selection(tmp_path):
    dy, pf = sample("nano_dy.root"), sample("pfnano.root")
    # older NanoAOD (nano_dy.root) names it genEventSumw_, newer (pfnano.root) genEventSumw: the default tries both
    cfg = config_from_dict(weighted_raw(), str(tmp_path / "c.yaml"))
    assert file_sum_of_weights(cfg, "DY", dy) == pytest.approx(
        float(np.sum(uproot.open(dy)["Runs"]["genEventSumw_"].array(library="np"))), rel=1e-15)
    assert file_sum_of_weights(cfg, "DY", pf) == float(np.sum(uproot.open(pf)["Runs"]["genEventSumw"].array(library="np")))
    # computed: the weight over every event (those without a tau too), whatever inputs.selection keeps
    raw = weighted_raw(sum_of_weights="computed")
    raw["inputs"]["selection"] = "pt > 1000"
    cfg = config_from_dict(raw, str(tmp_path / "c.yaml"))
    gen = uproot.open(dy)["Events"]["genWeight"].array(library="np").astype(np.float64)
    assert file_sum_of_weights(cfg, "DY", dy) == pytest.approx(gen.sum(), rel=1e-12)
    assert file_spectrum(cfg, dy, "DY")["deselected"] == file_spectrum(cfg, dy, "DY")["candidates"]


# -- law run WriteTrainSample: jets/event_weight against uproot -----------------------------------------
@pytest.mark.slow
def test_training_files_carry_the_normalised_weight(tmp_path):
    from test_e2e import _law, _law_env

    dy = sample("nano_dy.root")
    raw = weighted_raw()
    raw["name"] = "weights"
    env = _law_env(tmp_path)
    _law(["index", "-q"], env)
    _law(["run", "WriteTrainSample", "--version", "w", "--config", write_config(raw, tmp_path), "--workflow", "local"],
         env)
    files = sorted(glob.glob(str(tmp_path / "data" / "WriteTrainSample" / "w" / "*" / "*.h5")))
    assert len(files) == 3
    got = {k: np.concatenate([h5py.File(p, "r")[f"jets/{k}"][:] for p in files])
           for k in ("event_weight", "event", "dataset_id", "labels")}
    # independent: genWeight * xsec * lumi / sum(Runs.genEventSumw_), per event, read with uproot
    f = uproot.open(dy)
    events = f["Events"].arrays(["event", "genWeight", "nTau"], library="np")
    sumw = float(np.sum(f["Runs"]["genEventSumw_"].array(library="np"), dtype=np.float64))
    expected = dict(zip(events["event"].tolist(), events["genWeight"].astype(np.float64) * XSEC_PB * LUMI_INVPB / sumw))
    assert set(got["dataset_id"].tolist()) == {dataset_id("DY")}
    want = np.array([expected[int(e)] for e in got["event"]])
    np.testing.assert_allclose(got["event_weight"], want, rtol=1e-6)
    assert (got["event_weight"] < 0).any()                  # nano_dy.root has negative generator weights, kept
    taus = f["Events"].arrays(["Tau_pt", "Tau_eta"], library="np")
    pt, eta = np.concatenate(taus["Tau_pt"]), np.abs(np.concatenate(taus["Tau_eta"]))
    # every tau of the file within the resampling bins (class_ratio -1: all taken; each has a class)
    assert len(got["event"]) == int(((pt >= 20) & (pt < 1000) & (eta < 2.3)).sum()) < int(events["nTau"].sum())
    with h5py.File(files[0], "r") as h:
        assert "cross_section_pb" in h["jets/event_weight"].attrs["description"]
        assert h["jets/event_weight"].dtype == np.float32
    manifest = json.load(open(glob.glob(str(tmp_path / "data" / "ShuffleMergeSpectral" / "w" / "*" / "manifest_0.json"))[0]))
    assert manifest["event_weight_norms"]["DY"] == pytest.approx(
        {"factor": XSEC_PB * LUMI_INVPB / sumw, "sum_of_weights": sumw, "cross_section_pb": XSEC_PB,
         "luminosity_invpb": LUMI_INVPB}, rel=1e-12)


# -- weighted ROC, AUC, efficiencies, rejection -----------------------------------------------------------
def _brute_auc(s, b, ws, wb) -> float:
    """sum_ij w_i w_j ([s_i > b_j] + [s_i = b_j] / 2) / (W_s W_b), every pair spelled out."""
    gt = (s[:, None] > b[None, :]) + 0.5 * (s[:, None] == b[None, :])
    return float((ws[:, None] * wb[None, :] * gt).sum() / (ws.sum() * wb.sum()))


def test_weighted_metrics_by_hand():
    sig, w_sig = np.array([0.9, 0.4]), np.array([2.0, 1.0])
    bkg, w_bkg = np.array([0.5, 0.1]), np.array([1.0, 3.0])
    # pairs: 0.9 > 0.5 (2 * 1), 0.9 > 0.1 (2 * 3), 0.4 > 0.1 (1 * 3); 0.4 < 0.5: 11 of 3 * 4
    assert wm.weighted_roc_auc(sig, bkg, w_sig, w_bkg) == pytest.approx(11 / 12)
    assert wm.weighted_efficiencies(sig, bkg, w_sig, w_bkg, 0.45) == pytest.approx(
        {"signal_efficiency": 2 / 3, "background_efficiency": 1 / 4, "background_rejection": 4.0})
    # 50 % of the signal weight: the 0.9 candidate alone (2/3); no background above it
    wp = wm.weighted_working_point(sig, bkg, w_sig, w_bkg, 0.5)
    assert wp == {"threshold": 0.9, "signal_efficiency": 2 / 3, "background_efficiency": 0.0,
                  "background_rejection": float("inf")}
    assert wm.weighted_working_point(sig, bkg, w_sig, w_bkg, 0.9)["background_rejection"] == pytest.approx(4 / 1)
    # a negative background weight: kept; the background efficiency falls as the threshold is lowered to 0.1
    w_neg = np.array([1.0, -0.5])
    assert wm.non_monotonic(bkg, w_neg) and not wm.non_monotonic(bkg, w_bkg)
    assert wm.weighted_efficiency(bkg, w_neg, 0.3) == pytest.approx(2.0)   # 1 / 0.5: beyond 1, reported as is
    assert wm.weighted_roc_auc(sig, bkg, w_sig, w_neg) == pytest.approx(_brute_auc(sig, bkg, w_sig, w_neg))
    # a non-positive background weight sum: AUC and rejection undefined
    w_zero = np.array([1.0, -1.0])
    assert np.isnan(wm.weighted_roc_auc(sig, bkg, w_sig, w_zero))
    assert np.isnan(wm.weighted_efficiencies(sig, bkg, w_sig, w_zero, 0.45)["background_rejection"])
    assert wm.rejection(-0.1) != wm.rejection(-0.1)   # NaN for a negative efficiency


def test_weighted_metrics_against_independent_computations():
    from taggerflow.evaluation import evaluate, roc_curve, working_point
    from taggerflow.metrics import roc_auc

    rng = np.random.default_rng(4)
    s = np.round(rng.normal(0.6, 0.2, 300), 2)     # rounded: many ties between and within the classes
    b = np.round(rng.normal(0.4, 0.2, 400), 2)
    ws, wb = rng.uniform(0.1, 3, 300), rng.uniform(-0.5, 3, 400)
    assert wm.weighted_roc_auc(s, b, ws, wb) == pytest.approx(_brute_auc(s, b, ws, wb), rel=1e-12)
    # unit weights: exactly the unweighted Mann-Whitney AUC, thresholds reaching at least the efficiency
    assert wm.weighted_roc_auc(s, b, np.ones(300), np.ones(400)) == pytest.approx(roc_auc(s, b), rel=1e-12)
    roc = wm.weighted_roc_curve(s, b, ws, wb, 50)
    for eff, thr, rej in zip(roc["signal_efficiency"], roc["threshold"], roc["background_rejection"]):
        assert ws[s >= thr].sum() / ws.sum() >= eff - 1e-12                         # reaches the target
        higher = s[s > thr]
        assert not len(higher) or ws[s >= higher.min()].sum() / ws.sum() < eff      # the highest that does
        eff_b = wb[b >= thr].sum() / wb.sum()
        assert rej == pytest.approx(1 / eff_b) if eff_b > 0 else rej == float("inf")
    # evaluate() with weights: the same numbers, the sums, and the flags; without: the unweighted ones
    probs = np.zeros((700, 2))
    probs[:, 0] = np.concatenate([s, b]).clip(0.001, 0.999)
    probs[:, 1] = 1 - probs[:, 0]
    labels = np.concatenate([np.zeros(300, int), np.ones(400, int)])
    w = np.concatenate([ws, wb])
    pt, eta = np.full(700, 50.0), np.zeros(700)
    m = evaluate(probs, labels, ["sig", "bkg"], ["sig"], [0.5], pt, eta, [20, 1000], [0, 2.5], weights=w)
    pair = m["pairs"]["sig_vs_bkg"]
    d = probs[:, 0]
    assert pair["auc"] == pytest.approx(_brute_auc(d[:300], d[300:], ws, wb), rel=1e-12)
    assert m["weighted"] is True and m["sum_weights"] == pytest.approx({"sig": ws.sum(), "bkg": wb.sum()})
    assert pair["roc_non_monotonic"] is True                        # negative background weights
    assert any("class 'bkg' has" in x and "negative event weights" in x for x in m["warnings"])
    assert pair["binned_roc"]["pt"][0]["sum_weights_background"] == pytest.approx(wb.sum())
    plain = evaluate(probs, labels, ["sig", "bkg"], ["sig"], [0.5], pt, eta, [20, 1000], [0, 2.5])
    assert plain["pairs"]["sig_vs_bkg"]["auc"] == pytest.approx(roc_auc(d[:300], d[300:]))
    assert "weighted" not in plain and "roc_non_monotonic" not in plain["pairs"]["sig_vs_bkg"]
    assert plain["pairs"]["sig_vs_bkg"]["working_points"]["0.5"]["threshold"] == working_point(d[:300], d[300:], 0.5)["threshold"]
    assert plain["pairs"]["sig_vs_bkg"]["roc"]["threshold"] == pytest.approx(list(roc_curve(d[:300], d[300:])["threshold"]))
    # a background whose weights sum to zero: null AUC and rejection, and a warning
    w0 = np.concatenate([ws, np.where(np.arange(400) < 200, 1.0, -1.0)])
    m0 = evaluate(probs, labels, ["sig", "bkg"], ["sig"], [0.5], pt, eta, [20, 1000], [0, 2.5], weights=w0)
    assert m0["pairs"]["sig_vs_bkg"]["auc"] is None
    assert m0["pairs"]["sig_vs_bkg"]["working_points"]["0.5"]["background_rejection"] is None
    assert any("class 'bkg' has a non-positive sum of event weights" in x for x in m0["warnings"])


# -- training with event weights -------------------------------------------------------------------------
def _with_event_weight(src: str, dst: str, tau_weight: float) -> str:
    """A copy of a training file with jets/event_weight: 1, and ``tau_weight`` for class 0 (tau)."""
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        labels = f["jets/labels"][:]
        f["jets"].create_dataset("event_weight", data=np.where(labels == 0, tau_weight, 1.0).astype(np.float32))
    return dst


def test_zero_event_weight_for_a_class_changes_what_is_learned(files_config, shard_and_scaling, tmp_path):
    """A training whose tau candidates weigh 0 never learns to call anything a tau; with weight 1 it
    does. From the HDF5 files and from TFRecords (ToRecords carries jets/event_weight)."""
    import keras

    from test_training import _outputs

    from taggerflow.records import read_h5, write_records
    from taggerflow.trainsample import write_train_sample
    from taggerflow.training import h5_metadata, predict, train_model

    cfg = files_config
    shard, scaling, _ = shard_and_scaling
    h5 = {s: str(tmp_path / f"{s}.h5") for s in ("train", "validation", "test")}
    write_train_sample(cfg, [shard], scaling, h5)
    seqs = {n: (c.n_max, len(c.variables)) for n, c, _ in cfg.sequences()}
    variant = dict(cfg.training_variants()[0], epochs=2, batch_size=128, class_weights=None, tensorboard=False,
                   mlflow=False, event_weights=True, learning_rate=0.01)
    test = read_h5([h5["test"]])
    mean_tau, losses = {}, {}
    for source in ("h5", "records"):
        for tau_w in (0.0, 1.0):
            d = tmp_path / f"{source}_{tau_w:g}"
            d.mkdir()
            files = {s: _with_event_weight(h5[s], str(d / f"{s}.h5"), tau_w) for s in h5}
            if source == "h5":
                train, val, meta = [files["train"]], [files["validation"]], h5_metadata(files["train"])
            else:
                meta = write_records(files["train"], str(d / "train.tfrecord"), 128)
                write_records(files["validation"], str(d / "validation.tfrecord"), 128)
                assert "jets/event_weight" in meta["arrays"]
                train, val = [str(d / "train.tfrecord")], [str(d / "validation.tfrecord")]
            summary = train_model(dict(variant, source=source), cfg.class_names, seqs, len(cfg.candidate_variables),
                                  train, val, meta, [files["test"]], _outputs(d / "run"), 7, log=lambda m: None)
            assert summary["event_weights"] is True and summary["sample_weights"] is False
            model = keras.models.load_model(str(d / "run" / "model.keras"))
            probs = predict(model, test, None, meta["variables"]["jets/inputs"])
            mean_tau[(source, tau_w)] = float(probs[test["jets/labels"] == 0, 0].mean())
    for source in ("h5", "records"):
        # weight 0: the tau target never enters the loss, p(tau) is pushed towards 0 for every candidate
        assert mean_tau[(source, 0.0)] < 0.1 < 0.3 < mean_tau[(source, 1.0)], mean_tau


# -- law run Pipeline with weights on the real file ---------------------------------------------------
@pytest.mark.slow
def test_pipeline_on_nanoaod_with_event_weights(tmp_path):
    """Training with the event weights in the loss, evaluation weighted; the weighted sums of the
    metrics are those of the test files' jets/event_weight, the warnings name the classes whose
    weights are negative or sum to nothing positive."""
    from test_e2e import _law, _law_env

    raw = weighted_raw()
    raw["name"] = "nanoweights"
    raw["training"].update({"epochs": 1, "batch_size": 8, "event_weights": True})
    raw["export"]["n_check"] = 10
    raw["evaluation"] = {"signals": ["e"], "working_points": [0.5], "event_weights": True}
    env = _law_env(tmp_path)
    _law(["index", "-q"], env)
    _law(["run", "Pipeline", "--version", "v1", "--config", write_config(raw, tmp_path)], env)
    data = tmp_path / "data"
    summary = json.load(open(glob.glob(str(data / "Training/v1/*/dense/summary.json"))[0]))
    assert summary["event_weights"] is True
    metrics = json.load(open(glob.glob(str(data / "Evaluation/v1/*/dense/metrics.json"))[0]))
    test = [h5py.File(p, "r") for p in sorted(glob.glob(str(data / "WriteTrainSample/v1/*/test_*.h5")))]
    labels = np.concatenate([f["jets/labels"][:] for f in test])
    w = np.concatenate([f["jets/event_weight"][:] for f in test]).astype(np.float64)
    classes = list(raw["classes"]["labels"])
    assert metrics["weighted"] is True
    assert metrics["sum_weights"] == pytest.approx({c: w[labels == i].sum() for i, c in enumerate(classes)})
    assert [x for x in metrics["warnings"] if "event weights" in x] == wm.weight_warnings(labels, w, classes)
    # the 5 test candidates of nano_dy.root are 2 e and 3 mu (one with a negative weight): e vs mu is
    # defined, weighted, and flagged non-monotonic
    pair = metrics["pairs"]["e_vs_mu"]
    e, mu = labels == 1, labels == 2
    assert e.any() and mu.any() and (w[mu] < 0).any() and w[e].sum() > 0 and w[mu].sum() > 0
    pred = h5py.File(glob.glob(str(data / "Evaluation/v1/*/dense/predictions_test.h5"))[0], "r")
    p = pred["jets/scores"][:].astype(np.float64)
    np.testing.assert_allclose(pred["jets/event_weight"][:], w)
    d = p[:, 1] / np.maximum(p[:, 1] + p[:, 2], 1e-30)
    assert pair["auc"] == pytest.approx(_brute_auc(d[e], d[mu], w[e], w[mu]), rel=1e-9)
    assert pair["sum_weights_background"] == pytest.approx(w[mu].sum()) and pair["roc_non_monotonic"] is True
    assert metrics["pairs"]["e_vs_tau"]["auc"] is None        # no tau in the test split


def test_candidate_tree_weight_and_computed_sum(demo_files, tmp_path):
    """A candidate tree (one entry per candidate): the weight expression per candidate into the shard,
    normalised by the computed sum (one value per distinct event number of the file)."""
    from taggerflow.resample import acceptance, run_job, split_entries
    from taggerflow.spectrum import coarse_counts, fine_edges

    raw = tiny_raw()
    del raw["demo"]
    raw["inputs"]["datasets"] = {ds: {"files": [p]} for ds, p in demo_files.items()}
    first = next(iter(demo_files))
    raw["inputs"]["datasets"][first].update({"weight": "where(gen_match == 5, 2.0, 0.5)", "cross_section_pb": 3.0})
    raw["inputs"]["luminosity_invpb"] = 10.0
    cfg = config_from_dict(raw, str(tmp_path / "c.yaml"))
    t = uproot.open(demo_files[first])["candidates"].arrays(["event", "gen_match"], library="np")
    _, at = np.unique(t["event"], return_index=True)
    computed = float(np.where(t["gen_match"] == 5, 2.0, 0.5)[at].sum())
    rs = cfg.raw["resampling"]
    pt_e, eta_e = fine_edges(cfg)
    coarse, per_ds, sums = {}, {}, {}
    for ds, path in demo_files.items():
        res = file_spectrum(cfg, path, ds)
        coarse[ds] = coarse_counts(np.asarray(res["counts_flow"]), pt_e, eta_e, rs["pt_bins"], rs["eta_bins"])
        per_ds[ds] = [(path, res["entries"])]
        sums[ds] = [(ds, res["sum_of_weights"])]
    assert sums[first][0][1] == pytest.approx(computed, rel=1e-12)
    assert all(s[0][1] is None for ds, s in sums.items() if ds != first)   # no cross section: not normalised
    norms = dataset_norms(cfg, sums)
    P, p = acceptance(coarse, cfg.class_names, rs["class_ratio"], False, rs["pt_bins"], rs["eta_bins"])
    shard = str(tmp_path / "shard.root")
    run_job(cfg, 0, {ds: split_entries(f, 1)[0] for ds, f in per_ds.items()}, P, p, shard, str(tmp_path / "m.json"),
            weight_norms=norms)
    out = uproot.open(shard)["candidates"].arrays(["event_weight", "gen_match", "dataset_id"], library="np")
    mine = out["dataset_id"] == dataset_id(first)
    assert mine.any() and (~mine).any()
    np.testing.assert_allclose(out["event_weight"][mine],
                               np.where(out["gen_match"][mine] == 5, 2.0, 0.5) * 3.0 * 10.0 / computed, rtol=1e-12)
    assert (out["event_weight"][~mine] == 1.0).all()      # the other datasets: weight 1
