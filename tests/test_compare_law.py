"""CompareTrainings with `law run` on the tiny configuration's two variants: the report's numbers are
those of each variant's own history.csv, summary.json and metrics.json."""

from __future__ import annotations

import csv
import glob
import json
import os

import pytest

from conftest import tiny_raw, write_config
from test_e2e import _law, _law_env

pytestmark = pytest.mark.slow


def _one(pattern: str) -> str:
    found = glob.glob(pattern)
    assert len(found) == 1, (pattern, found)
    return found[0]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    env = _law_env(tmp)
    raw = tiny_raw()
    raw["training"]["epochs"] = 3
    raw["training"]["tensorboard"] = False
    config = write_config(raw, tmp)
    _law(["index", "-q"], env)
    _law(["run", "CompareTrainings", "--version", "c1", "--config", config, "--workflow", "local"], env)
    return {"env": env, "config": config, "data": tmp / "data"}


def test_report_numbers_are_each_variants_own(compared):
    data = compared["data"]
    summary = json.load(open(_one(str(data / "CompareTrainings/c1/*/all/summary.json"))))
    report = open(_one(str(data / "CompareTrainings/c1/*/all/report.md"))).read()
    assert list(summary) == ["deepsets", "dense"]
    for name, row in summary.items():
        with open(_one(str(data / f"Training/c1/*/{name}/history.csv"))) as f:
            history = list(csv.DictReader(f))
        val_loss = [float(r["val_loss"]) for r in history]
        best = val_loss.index(min(val_loss))
        train_summary = json.load(open(_one(str(data / f"Training/c1/*/{name}/summary.json"))))
        metrics = json.load(open(_one(str(data / f"Evaluation/c1/*/{name}/metrics.json"))))
        assert row["best_epoch"]["epoch"] == best and row["val_loss"] == min(val_loss)
        assert row["evaluated_epoch"] == train_summary["epochs_run"] - 1 == len(history) - 1
        assert row["model_type"] == name and row["ks"] == {}
        assert set(row["auc"]) == {"tau_vs_e", "tau_vs_mu", "tau_vs_jet"}
        for pair, m in metrics["pairs"].items():
            assert row["auc"][pair] == m["auc"]
            # the same test candidates and model as Training's own test metrics
            assert row["auc"][pair] == pytest.approx(train_summary["test"]["auc"][pair], abs=1e-6)
            for wp, w in m["working_points"].items():
                assert row["rejection"][pair][wp] == w["background_rejection"]
        line = next(l for l in report.splitlines() if l.startswith(f"| {name} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[2].startswith(f"{best} (lowest val_loss = ") and cells[4] == f"{min(val_loss):.4f}"
        assert f"{metrics['pairs']['tau_vs_jet']['auc']:.4f}" in cells
    assert summary["deepsets"]["auc"]["tau_vs_jet"] > 0.8
    assert "KS" not in report   # plain trainings: no KS columns in their histories
    for image in ("roc_tau_vs_jet.png", "loss.png"):
        assert f"](plots/{image})" in report
        assert glob.glob(str(data / f"CompareTrainings/c1/*/all/plots/{image}"))


def test_one_variant_and_unknown_variant(compared):
    env, config, data = compared["env"], compared["config"], compared["data"]
    trained = sorted(glob.glob(str(data / "Training/c1/*/*/*.*")) + glob.glob(str(data / "Evaluation/c1/*/*/*.*")))
    before = {p: os.stat(p).st_mtime_ns for p in trained}
    _law(["run", "CompareTrainings", "--version", "c1", "--config", config, "--variants", "dense"], env)
    summary = json.load(open(_one(str(data / "CompareTrainings/c1/*/variants_dense/summary.json"))))
    everything = json.load(open(_one(str(data / "CompareTrainings/c1/*/all/summary.json"))))
    assert summary == {"dense": everything["dense"]}
    assert before and {p: os.stat(p).st_mtime_ns for p in trained} == before   # nothing retrained
    bad = _law(["run", "CompareTrainings", "--version", "c1", "--config", config, "--variants", "dense,lstm"],
               env, check=False)
    assert bad.returncode != 0
    assert "--variants: unknown variant 'lstm' (config 'tiny' has: deepsets, dense)" in bad.stdout + bad.stderr
    assert not glob.glob(str(data / "CompareTrainings/c1/*/variants_dense-lstm"))


def test_one_variant_across_versions(compared):
    """--versions c1,c2: c2's chain runs (a new version never reuses c1's outputs), each row is its
    own version's numbers."""
    env, config, data = compared["env"], compared["config"], compared["data"]
    _law(["run", "CompareTrainings", "--version", "c2", "--config", config, "--versions", "c1,c2",
          "--variants", "dense", "--workflow", "local"], env)
    summary = json.load(open(_one(str(data / "CompareTrainings/c2/*/variants_dense_versions_c1-c2/summary.json"))))
    assert list(summary) == ["dense@c1", "dense@c2"]
    for version in ("c1", "c2"):
        metrics = json.load(open(_one(str(data / f"Evaluation/{version}/*/dense/metrics.json"))))
        row = summary[f"dense@{version}"]
        assert row["auc"] == {p: m["auc"] for p, m in metrics["pairs"].items()}
    report = open(_one(str(data / "CompareTrainings/c2/*/variants_dense_versions_c1-c2/report.md"))).read()
    assert "| dense@c1 |" in report and "| dense@c2 |" in report and "versions c1, c2" in report
    assert not glob.glob(str(data / "Training/c2/*/deepsets"))   # only the asked variant trained


def test_versions_and_variants_select_the_workflows(tmp_path, monkeypatch):
    """Built from the configuration alone: which Training/Evaluation branches and versions are
    required, and the folder the selection writes into."""
    from tasks.compare import CompareTrainings

    monkeypatch.setenv("TAGGERFLOW_DATA", str(tmp_path / "data"))
    config = write_config(tiny_raw(), tmp_path)
    task = CompareTrainings(version="v2", config=config, versions=("v1", "v2"), variants=("dense",))
    reqs = task.requires()
    assert list(reqs) == ["v1", "v2"]
    for v in ("v1", "v2"):
        for kind in ("training", "evaluation"):
            assert reqs[v][kind].version == v and list(reqs[v][kind].get_branch_map()) == [1]
    assert task.output()["report"].path.endswith("/variants_dense_versions_v1-v2/report.md")
    everything = CompareTrainings(version="v2", config=config)
    assert everything.chosen() == [(0, "deepsets"), (1, "dense")]
    assert list(everything.requires()) == ["v2"] and everything.requires()["v2"]["training"].branches == ()
    assert everything.output()["report"].path.endswith("/all/report.md")
    with pytest.raises(ValueError, match="--versions: expected distinct version names, got v1,v1"):
        CompareTrainings(version="v2", config=config, versions=("v1", "v1"))
