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


def test_plots_and_report(tmp_path):
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
    summary = write_evaluation_report(results, str(tmp_path / "report" / "report.md"),
                                      str(tmp_path / "report" / "summary.json"))
    assert summary["good"]["auc"]["tau_vs_jet"] > summary["worse"]["auc"]["tau_vs_jet"]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| good |" in text and "![roc_tau_vs_jet.png](plots/roc_tau_vs_jet.png)" in text
    assert "](../good/history.png)" in text
    for png in list((tmp_path / "report" / "plots").iterdir()) + [tmp_path / "good" / "history.png"]:
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
