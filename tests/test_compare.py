"""taggerflow.compare on synthetic history/summary/prediction files: the best epoch per training by
its criterion, the table's numbers, AUCs equal to Evaluation's, KS only where the history has it."""

from __future__ import annotations

import csv
import filecmp
import json
import os

import numpy as np
import pytest

from taggerflow.compare import best_epoch, compare_trainings, read_history
from taggerflow.evaluation import evaluate
from taggerflow.utils import write_json

CLASSES = ["tau", "e", "jet"]


def _history(path, columns: dict[str, list[float]]):
    n = len(next(iter(columns.values())))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", *columns])
        for i in range(n):
            w.writerow([i, *[repr(v[i]) for v in columns.values()]])


def _training(tmp, name, columns, seed, separation, selection=None):
    """history.csv, summary.json, and metrics.json written by Evaluation's evaluate() from synthetic
    predictions; returns the paths and the predictions."""
    d = tmp / name
    d.mkdir()
    _history(d / "history.csv", columns)
    write_json(d / "summary.json", {"name": name, "epochs_run": len(columns["loss"])})
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, 600)
    logits = rng.normal(size=(600, 3)) + separation * np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    metrics = evaluate(probs, labels, CLASSES, ["tau"], [0.5, 0.7], rng.uniform(20, 200, 600),
                       rng.uniform(-2, 2, 600), [20, 1000], [0.0, 2.5])
    write_json(d / "metrics.json", metrics)
    paths = {"history": str(d / "history.csv"), "summary": str(d / "summary.json"),
             "metrics": str(d / "metrics.json")}
    if selection is not None:
        write_json(d / "selection.json", selection)
        paths["selection"] = str(d / "selection.json")
    return paths, probs, labels


def _auc_by_pairs(sig, bkg):
    """P(s > b) + 0.5 P(s == b) over every signal/background pair (independent of metrics.roc_auc)."""
    s, b = np.asarray(sig)[:, None], np.asarray(bkg)[None, :]
    return float(np.mean((s > b) + 0.5 * (s == b)))


PLAIN = {"name": "plain", "model": {"type": "deepsets"}}
ADV = {"name": "adv", "model": {"type": "dense"},
       "adversary": {"lambda": 10.0, "ks_cut": {"output": "jet", "max": 0.3}, "select_by": "val_loss"}}
PLAIN_COLUMNS = {"loss": [1.0, 0.6, 0.5, 0.45], "val_loss": [0.9, 0.5, 0.6, 0.55], "accuracy": [0.5, 0.6, 0.7, 0.72],
                 "val_accuracy": [0.5, 0.66, 0.64, 0.65]}
ADV_COLUMNS = {"loss": [1.1, 0.8, 0.6, 0.5], "val_loss": [1.0, 0.7, 0.4, 0.6], "ks_jet": [0.5, 0.25, 0.35, 0.2],
               "ks_pvalue_jet": [0.001, 0.02, 0.01, 0.3], "ks_tau": [0.1, 0.1, 0.1, 0.05],
               "ks_pvalue_tau": [0.5, 0.5, 0.5, 0.6]}


def test_best_epoch_by_the_configured_criterion(tmp_path):
    _history(tmp_path / "p.csv", PLAIN_COLUMNS)
    _history(tmp_path / "a.csv", ADV_COLUMNS)
    plain, adv = read_history(str(tmp_path / "p.csv")), read_history(str(tmp_path / "a.csv"))
    # plain: the early-stopping monitor, val_loss
    assert best_epoch(plain, PLAIN) == {"epoch": 1, "select_by": "val_loss", "value": 0.5,
                                        "reason": "lowest val_loss = 0.5 of 4 epochs"}
    # adversarial: epoch 2 has the lowest val_loss but fails the KS cut; of epochs 1 and 3, 3
    b = best_epoch(adv, ADV)
    assert (b["epoch"], b["value"]) == (3, 0.6)
    assert b["reason"] == "lowest val_loss = 0.6 of 2 epochs with ks_jet < 0.3"
    by_acc = {**PLAIN, "adversary": {"lambda": 0.0, "select_by": "val_accuracy"}}
    assert best_epoch(plain, by_acc)["epoch"] == 1   # highest val_accuracy 0.66
    by_ks = {**ADV, "adversary": {**ADV["adversary"], "select_by": "ks"}}
    assert best_epoch(adv, by_ks)["epoch"] == 3 and best_epoch(adv, by_ks)["select_by"] == "ks_jet"
    none_pass = {**ADV, "adversary": {**ADV["adversary"], "ks_cut": {"output": "jet", "max": 0.1}}}
    assert best_epoch(adv, none_pass)["epoch"] == 3
    assert best_epoch(adv, none_pass)["reason"] == "no epoch has ks_jet < 0.1: the last one"
    # a selection record (the adversarial training's own choice) is taken as it is
    record = {"chosen": {"epoch": 1, "select_by": "val_loss", "value": 0.7, "reason": "ks_jet = 0.25 < 0.3"}}
    assert best_epoch(adv, ADV, record)["epoch"] == 1
    with pytest.raises(ValueError, match="history has no column ks_jet"):
        best_epoch(plain, ADV)


def test_report_table_plots_and_bytes(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    plain, probs_p, labels_p = _training(inputs, "plain", PLAIN_COLUMNS, 1, 2.0)
    adv, probs_a, labels_a = _training(inputs, "adv", ADV_COLUMNS, 2, 1.0)
    trainings = {"plain": {**plain, "variant": PLAIN}, "adv": {**adv, "variant": ADV}}
    outs = []
    for run in ("a", "b"):
        out = tmp_path / run
        summary = compare_trainings(trainings, str(out / "report.md"), str(out / "summary.json"), str(out / "plots"))
        outs.append(out)
    assert summary["plain"]["best_epoch"]["epoch"] == 1 and summary["plain"]["evaluated_epoch"] == 3
    assert summary["adv"]["best_epoch"]["epoch"] == 3 and summary["adv"]["evaluated_epoch"] == 3
    assert summary["plain"]["val_loss"] == 0.5 and summary["adv"]["val_loss"] == 0.6
    assert summary["adv"]["ks"] == {"jet": 0.2, "tau": 0.05} and summary["adv"]["ks_pvalue"]["jet"] == 0.3
    assert summary["plain"]["ks"] == {} and summary["plain"]["model_type"] == "deepsets"
    assert summary["adv"]["model_type"] == "dense + adversary (lambda 10.0)"
    # AUCs: Evaluation's, and equal to the pair-counting definition on the discriminant
    for name, probs, labels in (("plain", probs_p, labels_p), ("adv", probs_a, labels_a)):
        metrics = json.load(open(trainings[name]["metrics"]))
        for bi, b in ((1, "e"), (2, "jet")):
            d = probs[:, 0] / (probs[:, 0] + probs[:, bi])
            expected = _auc_by_pairs(d[labels == 0], d[labels == bi])
            assert summary[name]["auc"][f"tau_vs_{b}"] == metrics["pairs"][f"tau_vs_{b}"]["auc"]
            assert summary[name]["auc"][f"tau_vs_{b}"] == pytest.approx(expected, abs=1e-12)
            assert summary[name]["rejection"][f"tau_vs_{b}"]["0.7"] == \
                metrics["pairs"][f"tau_vs_{b}"]["working_points"]["0.7"]["background_rejection"]
    assert summary["plain"]["auc"]["tau_vs_jet"] > summary["adv"]["auc"]["tau_vs_jet"] > 0.6

    report = open(outs[0] / "report.md").read()
    rows = {line.split(" | ")[0].lstrip("| "): [c.strip() for c in line.strip("|").split("|")]
            for line in report.splitlines() if line.startswith(("| plain", "| adv"))}
    header = [c.strip() for c in next(l for l in report.splitlines() if l.startswith("| training")).strip("|").split("|")]
    assert header == ["training", "model", "best epoch (why)", "evaluated epoch", "val loss (best epoch)",
                      "AUC tau_vs_e", "AUC tau_vs_jet", "rejection tau_vs_e @ 50% / 70%",
                      "rejection tau_vs_jet @ 50% / 70%", "KS jet (best epoch)", "KS tau (best epoch)"]
    p, a = rows["plain"], rows["adv"]
    assert p[2] == "1 (lowest val_loss = 0.5 of 4 epochs)" and p[3] == "3" and p[4] == "0.5000"
    assert p[6] == f"{summary['plain']['auc']['tau_vs_jet']:.4f}"
    rej = summary["adv"]["rejection"]["tau_vs_jet"]
    assert a[8] == f"{rej['0.5']:.1f} / {rej['0.7']:.1f}"
    assert (a[9], a[10], p[9], p[10]) == ("0.2000", "0.0500", "n/a", "n/a")
    for image in ("roc_tau_vs_e.png", "roc_tau_vs_jet.png", "loss.png", "ks_jet.png", "ks_tau.png"):
        assert f"](plots/{image})" in report
        assert filecmp.cmp(outs[0] / "plots" / image, outs[1] / "plots" / image, shallow=False)
    assert filecmp.cmp(outs[0] / "report.md", outs[1] / "report.md", shallow=False)
    assert filecmp.cmp(outs[0] / "summary.json", outs[1] / "summary.json", shallow=False)

    # without any KS column: no KS column, no KS plot; a selection record decides the epoch
    record = {"chosen": {"epoch": 2, "select_by": "val_loss", "value": 0.6, "reason": "plain training"}}
    _, _, _ = _training(inputs, "plain2", PLAIN_COLUMNS, 3, 2.0, selection=record)
    plain2 = {k: str(inputs / "plain2" / f"{k}.{'csv' if k == 'history' else 'json'}")
              for k in ("history", "summary", "metrics", "selection")}
    out = tmp_path / "c"
    summary = compare_trainings({"plain": {**plain, "variant": PLAIN}, "plain2": {**plain2, "variant": PLAIN}},
                                str(out / "report.md"), str(out / "summary.json"), str(out / "plots"))
    assert summary["plain2"]["best_epoch"]["epoch"] == 2 and summary["plain2"]["evaluated_epoch"] == 2
    report = open(out / "report.md").read()
    assert "KS" not in report and not any(f.startswith("ks_") for f in os.listdir(out / "plots"))


def test_bad_history_names_the_file(tmp_path):
    bad = tmp_path / "history.csv"
    bad.write_text("epoch,loss\n0,abc\n")
    with pytest.raises(ValueError, match=r"history.csv: row 1: could not convert"):
        read_history(str(bad))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="empty.csv: no epochs"):
        read_history(str(tmp_path / "empty.csv"))
