"""Evaluation metrics, predictions file, plots and report, on synthetic scores with known answers."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from taggerflow.evaluation import evaluate, roc_curve, thresholds, working_point, write_predictions


def _synthetic(n=20000, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    logits = rng.normal(0, 1, (n, 3))
    logits[np.arange(n), labels] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    pt = 20 + rng.exponential(40, n)
    eta = rng.uniform(-2.3, 2.3, n)
    return probs, labels, pt, eta


def test_working_point_hits_the_signal_efficiency():
    rng = np.random.default_rng(1)
    sig, bkg = rng.normal(1, 1, 50000), rng.normal(-1, 1, 50000)
    for eff in (0.5, 0.7, 0.9):
        w = working_point(sig, bkg, eff)
        assert w["signal_efficiency"] == pytest.approx(eff, abs=1e-3)
        # background efficiency of a unit-gaussian background at the threshold
        from math import erf, sqrt
        expected = 0.5 * (1 - erf((w["threshold"] + 1) / sqrt(2)))
        assert w["background_efficiency"] == pytest.approx(expected, abs=0.01)
        assert w["background_rejection"] == pytest.approx(1 / w["background_efficiency"])
    roc = roc_curve(sig, bkg)
    rej = roc["background_rejection"]
    finite = np.isfinite(rej)
    assert finite[-100:].all() and not finite[0]  # no background passes the tightest cut
    assert np.all(np.diff(rej[finite]) <= 1e-9)  # rejection falls with efficiency


def test_evaluate_pairs_and_bins():
    probs, labels, pt, eta = _synthetic()
    classes = ["tau", "e", "jet"]
    m = evaluate(probs, labels, classes, ["tau"], [0.6, 0.9], pt, eta, [20, 50, 100, 1000], [0.0, 1.0, 2.3])
    assert set(m["pairs"]) == {"tau_vs_e", "tau_vs_jet"}
    assert m["per_class"] == {c: int(np.sum(labels == i)) for i, c in enumerate(classes)}
    pair = m["pairs"]["tau_vs_jet"]
    assert 0.85 < pair["auc"] < 0.99
    wp = pair["working_points"]["0.9"]
    assert wp["signal_efficiency"] == pytest.approx(0.9, abs=0.005)
    rows = pair["binned"]["0.9"]["pt"]
    # binned signal counts add up to the signal candidates inside the bin range
    in_range = (labels == 0) & (pt >= 20) & (pt < 1000)
    assert sum(r["n_signal"] for r in rows) == in_range.sum()
    # the efficiency over all bins, weighted by counts, is the working point's efficiency
    eff = sum(r["signal_efficiency"] * r["n_signal"] for r in rows) / sum(r["n_signal"] for r in rows)
    assert eff == pytest.approx(wp["signal_efficiency"], abs=0.01)
    assert thresholds(m)["tau_vs_jet"]["0.6"] == pair["working_points"]["0.6"]["threshold"]


def test_predictions_file(tmp_path):
    probs, labels, pt, eta = _synthetic(100)
    arrays = {"jets/labels": labels.astype(np.int32), "jets/pt": pt.astype(np.float32),
              "jets/eta": eta.astype(np.float32), "jets/event": np.arange(100, dtype=np.uint64)}
    path = str(tmp_path / "pred.h5")
    write_predictions(path, probs, arrays, ["tau", "e", "jet"])
    with h5py.File(path, "r") as f:
        np.testing.assert_allclose(f["jets/scores"][:], probs, rtol=1e-6)
        np.testing.assert_array_equal(f["jets/event"][:], np.arange(100))
        assert list(f["jets/scores"].attrs["classes"]) == ["tau", "e", "jet"]


def test_plots_and_report(tmp_path, monkeypatch):
    from taggerflow import plotting
    from taggerflow.report import write_evaluation_report

    probs, labels, pt, eta = _synthetic(4000)
    classes = ["tau", "e", "jet"]
    results = {}
    for name, noise in (("good", 0.0), ("worse", 1.5)):
        p = probs + np.random.default_rng(2).normal(0, noise * 0.1, probs.shape).clip(-0.09, 0.09)
        p = np.clip(p, 1e-6, None)
        p /= p.sum(1, keepdims=True)
        m = evaluate(p, labels, classes, ["tau"], [0.7], pt, eta, [20, 60, 1000], [0.0, 2.3])
        d = tmp_path / name
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps(m))
        hist = [{"epoch": str(i), "loss": str(1 / (i + 1)), "accuracy": str(0.5 + i / 10),
                 "val_loss": str(1.1 / (i + 1)), "val_accuracy": str(0.5 + i / 11)} for i in range(4)]
        paths = {"metrics": str(d / "metrics.json"), "predictions": str(d / "p.h5"), "working_points": str(d / "w.json"),
                 "history": plotting.plot_history(hist, str(d / "history.png")),
                 "scores_tau": plotting.plot_scores(p, labels, classes, "tau", str(d / "scores.png")),
                 "eff": plotting.plot_efficiency_binned(m["pairs"]["tau_vs_jet"]["binned"], "pt", str(d / "eff.png"))}
        results[name] = paths
    monkeypatch.setenv("TAGGERFLOW_DATA", str(tmp_path))  # the report names files as stored
    summary = write_evaluation_report(results, str(tmp_path / "report" / "report.md"),
                                      str(tmp_path / "report" / "summary.json"))
    assert summary["good"]["auc"]["tau_vs_jet"] > summary["worse"]["auc"]["tau_vs_jet"]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| good |" in text and "![roc_tau_vs_jet.png](plots/roc_tau_vs_jet.png)" in text
    assert "](../good/history.png)" in text
    assert "predictions: `$TAGGERFLOW_DATA/good/p.h5`, thresholds: `$TAGGERFLOW_DATA/good/w.json`" in text
    assert str(tmp_path) not in text
    for png in list((tmp_path / "report" / "plots").iterdir()) + [tmp_path / "good" / "history.png"]:
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


# ---------------------------------------------------------------------------------------------
# in bins of pt and |eta|: known answers

def _binned_sample(n=20000, seed=3):
    """Two classes (tau, jet), the discriminant = p(tau) = the score. pt bin [20, 50): tau in
    [0.6, 1), jet in [0, 0.4) (separated); pt bin [50, 100): both uniform in [0, 1) (identical);
    pt bin [100, 200): empty; and some candidates outside the bins. |eta| bin [0, 1): both
    classes, [1, 2): jets only, [2, 3): empty."""
    rng = np.random.default_rng(seed)
    scores, labels, pt, eta = [], [], [], []

    def add(lab, lo, hi, pt_lo, pt_hi, eta_hi, m):
        scores.append(rng.uniform(lo, hi, m))
        labels.append(np.full(m, lab))
        pt.append(rng.uniform(pt_lo, pt_hi, m))
        eta.append(rng.uniform(0, eta_hi, m) * rng.choice([-1, 1], m))

    add(0, 0.6, 1.0, 20, 50, 1.0, n)    # tau, separated bin
    add(1, 0.0, 0.4, 20, 50, 2.0, n)    # jet, separated bin
    add(0, 0.0, 1.0, 50, 100, 1.0, n)   # tau, identical bin
    add(1, 0.0, 1.0, 50, 100, 2.0, n)   # jet, identical bin
    add(0, 0.0, 1.0, 1000, 2000, 1.0, 50)  # outside the pt bins
    s = np.concatenate(scores)
    return (np.stack([s, 1 - s], axis=1), np.concatenate(labels), np.concatenate(pt), np.concatenate(eta))


def _no_nan(obj, where=""):
    if isinstance(obj, float):
        assert not np.isnan(obj), where
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _no_nan(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _no_nan(v, f"{where}[{i}]")


PT_BINS, ETA_BINS = [20, 50, 100, 200], [0.0, 1.0, 2.0, 3.0]


def test_binned_auc_rejection_and_flat_thresholds():
    probs, labels, pt, eta = _binned_sample()
    wps = [0.5, 0.7, 0.9]
    m = evaluate(probs, labels, ["tau", "jet"], ["tau"], wps, pt, eta, PT_BINS, ETA_BINS)
    pair = m["pairs"]["tau_vs_jet"]
    sep, same, empty = pair["binned_roc"]["pt"]
    assert (sep["low"], sep["high"], same["low"], empty["high"]) == (20, 50, 50, 200)
    assert sep["auc"] == 1.0
    assert same["auc"] == pytest.approx(0.5, abs=0.02)
    assert empty["n_signal"] == empty["n_background"] == 0 and empty["auc"] is None and empty["roc"] is None
    assert np.isinf(sep["roc"]["background_rejection"]).all()  # no jet above any tau threshold
    # identical distributions: rejection = 1 / signal efficiency along the curve
    eff, rej = np.array(same["roc"]["signal_efficiency"]), np.array(same["roc"]["background_rejection"])
    np.testing.assert_allclose(rej[eff >= 0.2], 1 / eff[eff >= 0.2], rtol=0.08)

    for wp in wps:
        rows = pair["binned"][f"{wp:g}"]["pt"]
        r_sep, r_same, r_empty = rows
        # per-bin thresholds: the target efficiency in each bin, to within one candidate
        for r in (r_sep, r_same):
            assert abs(r["bin_signal_efficiency"] - wp) <= 1 / r["n_signal"]
            in_bin = (labels == 0) & (pt >= r["low"]) & (pt < r["high"])
            assert np.mean(probs[in_bin, 0] >= r["bin_threshold"]) == r["bin_signal_efficiency"]
        assert r_sep["bin_threshold"] == pytest.approx(1.0 - 0.4 * wp, abs=0.01)
        assert r_sep["bin_background_efficiency"] == 0.0 and r_sep["bin_background_rejection"] == float("inf")
        assert r_same["bin_threshold"] == pytest.approx(1.0 - wp, abs=0.01)
        assert r_same["bin_background_rejection"] == pytest.approx(1 / wp, rel=0.05)
        # nothing in the empty bin: every value null
        assert all(r_empty[k] is None for k in ("signal_efficiency", "background_efficiency", "background_rejection",
                                                "bin_threshold", "bin_signal_efficiency",
                                                "bin_background_efficiency", "bin_background_rejection"))

    # the inclusive threshold at 50 %: tau = half U[0.6, 1) + half U[0, 1) (+ 50 at high pt): P(>= x)
    # = 1.75 (1 - x) = 0.5 -> x = 5/7; tau efficiency 5/7 in the separated bin, 2/7 in the other
    incl = pair["binned"]["0.5"]["pt"]
    assert pair["working_points"]["0.5"]["threshold"] == pytest.approx(5 / 7, abs=0.01)
    assert incl[0]["signal_efficiency"] == pytest.approx(5 / 7, abs=0.015)
    assert incl[1]["signal_efficiency"] == pytest.approx(2 / 7, abs=0.015)
    assert incl[0]["background_rejection"] == float("inf")
    assert incl[1]["background_rejection"] == pytest.approx(3.5, rel=0.05)
    assert incl[1]["background_rejection"] == pytest.approx(1 / incl[1]["background_efficiency"])

    # |eta|: [1, 2) holds jets only, [2, 3) nothing
    both, jets_only, nothing = pair["binned"]["0.7"]["abs_eta"]
    assert both["n_signal"] == 2 * 20000 + 50  # each binning on its own: |eta| bins take every pt
    assert abs(both["bin_signal_efficiency"] - 0.7) <= 1 / both["n_signal"]
    assert jets_only["n_signal"] == 0 and jets_only["n_background"] > 0
    assert jets_only["signal_efficiency"] is None and jets_only["bin_threshold"] is None
    assert jets_only["bin_background_rejection"] is None
    assert jets_only["background_efficiency"] == pytest.approx(
        np.mean(probs[(labels == 1) & (np.abs(eta) >= 1) & (np.abs(eta) < 2), 0] >= pair["working_points"]["0.7"]["threshold"]))
    assert nothing["n_signal"] == nothing["n_background"] == 0 and nothing["background_efficiency"] is None
    eta_roc = pair["binned_roc"]["abs_eta"]
    assert eta_roc[1]["auc"] is None and eta_roc[2]["auc"] is None and 0.5 < eta_roc[0]["auc"] < 1

    # every per-bin value is JSON-serialisable without NaN (undefined -> null)
    _no_nan(pair["binned"])
    _no_nan(pair["binned_roc"])
    json.dumps(pair["binned"])
    json.dumps(pair["binned_roc"])

    # the thresholds file: the inclusive keys unchanged, the per-bin thresholds under "binned"
    t = thresholds(m)
    assert set(t["tau_vs_jet"]) == {"0.5", "0.7", "0.9"}
    assert t["tau_vs_jet"]["0.9"] == pair["working_points"]["0.9"]["threshold"]
    per_bin = t["binned"]["tau_vs_jet"]["0.9"]
    assert [r["threshold"] for r in per_bin["pt"]] == [r["bin_threshold"] for r in pair["binned"]["0.9"]["pt"]]
    assert per_bin["abs_eta"][1] == {"low": 1.0, "high": 2.0, "threshold": None, "n_signal": 0}
    json.loads(json.dumps(t, allow_nan=False))  # strict JSON


def test_binned_class_missing_everywhere():
    """A background class without candidates: its pair is evaluated, the per-bin values are null."""
    probs, labels, pt, eta = _binned_sample(2000)
    probs3 = np.concatenate([probs * 0.9, np.full((len(probs), 1), 0.1)], axis=1)
    m = evaluate(probs3, labels, ["tau", "jet", "e"], ["tau"], [0.8], pt, eta, PT_BINS, ETA_BINS)
    pair = m["pairs"]["tau_vs_e"]
    assert pair["working_points"]["0.8"]["background_rejection"] is None  # no background: undefined (null), not inf
    for var in ("pt", "abs_eta"):
        for r in pair["binned"]["0.8"][var]:
            assert r["background_efficiency"] is None and r["bin_background_rejection"] is None
        for r in pair["binned_roc"][var]:
            assert r["auc"] is None
    _no_nan(pair["binned"])
    _no_nan(pair["binned_roc"])
    t = thresholds(m)
    json.dumps(t, allow_nan=False)
    # the same tau candidates, the same cut: D(tau vs jet) = s, D(tau vs e) = 0.9 s / (0.9 s + 0.1)
    cut = m["pairs"]["tau_vs_jet"]["binned"]["0.8"]["pt"][0]["bin_threshold"]
    assert t["binned"]["tau_vs_e"]["0.8"]["pt"][0]["threshold"] == pytest.approx(0.9 * cut / (0.9 * cut + 0.1), abs=1e-6)


def test_evaluate_training_writes_binned_thresholds(tmp_path, monkeypatch):
    """The files of taggerflow.training.evaluate_training (model and inputs replaced by known
    scores): working_points.json and metrics.json hold the per-bin entries, the extra plots exist."""
    import sys
    import types

    from taggerflow import plotting, training

    probs, labels, pt, eta = _binned_sample(3000)
    arrays = {"jets/labels": labels, "jets/pt": pt, "jets/eta": eta}
    monkeypatch.setitem(sys.modules, "keras", types.SimpleNamespace(models=types.SimpleNamespace(load_model=lambda p: None)))
    monkeypatch.setitem(sys.modules, "taggerflow.models", types.ModuleType("taggerflow.models"))
    monkeypatch.setattr(training, "read_h5", lambda files: arrays)
    monkeypatch.setattr(training, "predict", lambda model, arrays, *a, **k: probs)
    hist = tmp_path / "history.csv"
    hist.write_text("epoch,loss,accuracy\n0,1.0,0.5\n1,0.5,0.7\n")
    classes, ev = ["tau", "jet"], {"signals": ["tau"], "working_points": [0.5, 0.9], "pt_bins": PT_BINS,
                                   "eta_bins": ETA_BINS}
    out = {"predictions": str(tmp_path / "pred.h5"), "metrics": str(tmp_path / "metrics.json"),
           "working_points": str(tmp_path / "working_points.json")}
    names = training.evaluation_plots(classes, ev["signals"])
    assert {f"{k}_tau_vs_jet" for k in training.BINNED_PLOT_KINDS} <= set(names)
    out.update({k: str(tmp_path / "plots" / f) for k, f in names.items()})
    metrics = training.evaluate_training("model.keras", ["test.h5"], str(hist), classes, ev, out, name="m")
    written = plotting.plot_binned_rejections(metrics, out)
    assert sorted(written) == sorted(out[f"{k}_tau_vs_jet"] for k in training.BINNED_PLOT_KINDS)

    wps = json.loads((tmp_path / "working_points.json").read_text())
    assert set(wps["tau_vs_jet"]) == {"0.5", "0.9"}  # as before
    rows = wps["binned"]["tau_vs_jet"]["0.9"]["pt"]
    assert [(r["low"], r["high"]) for r in rows] == [(20, 50), (50, 100), (100, 200)]
    assert rows[0]["threshold"] == pytest.approx(1 - 0.4 * 0.9, abs=0.02)
    assert rows[1]["threshold"] == pytest.approx(0.1, abs=0.03)
    assert rows[2]["threshold"] is None
    assert wps["binned"]["tau_vs_jet"]["0.9"]["abs_eta"][1]["threshold"] is None
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["pairs"]["tau_vs_jet"]["binned_roc"]["pt"][0]["auc"] == 1.0
    assert saved["pairs"]["tau_vs_jet"]["binned"]["0.9"]["pt"][2]["bin_background_rejection"] is None
    for key in names:
        data = open(out[key], "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", key


def test_binned_plot_without_finite_values(tmp_path):
    """Rejection infinite (or undefined) in every bin: the log-scale plot is still written."""
    from taggerflow import plotting

    rows = [{"low": 20.0, "high": 50.0, "bin_background_rejection": float("inf")},
            {"low": 50.0, "high": 100.0, "bin_background_rejection": None}]
    path = plotting.plot_efficiency_binned({"0.5": {"pt": rows}}, "pt", str(tmp_path / "r.png"),
                                           what="bin_background_rejection", logy=True)
    assert open(path, "rb").read()[:8] == b"\x89PNG\r\n\x1a\n"
