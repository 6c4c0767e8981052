"""End to end: the whole DAG with `law run ... --workflow local` on a tiny configuration, as a user
runs it, asserting on the values each stage produced."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from conftest import REPO, tiny_raw, write_config

pytestmark = pytest.mark.slow


def _law_env(tmp_path) -> dict:
    env = dict(os.environ)
    env.update({"PYTHONPATH": REPO, "LAW_CONFIG_FILE": os.path.join(REPO, "law.cfg"),
                "LAW_HOME": str(tmp_path / "law_home"), "TAGGERFLOW_DATA": str(tmp_path / "data"),
                "TF_CPP_MIN_LOG_LEVEL": "2"})
    return env


def _law(args: list[str], env: dict, check: bool = True) -> subprocess.CompletedProcess:
    law_bin = shutil.which("law", path=os.path.dirname(sys.executable)) or shutil.which("law")
    proc = subprocess.run([law_bin, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"law {' '.join(args)} failed:\n{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    env = _law_env(tmp)
    raw = tiny_raw()
    raw["training"]["epochs"] = 4
    config = write_config(raw, tmp)
    _law(["index", "-q"], env)
    proc = _law(["run", "ConvertLwtnn", "--version", "e2e", "--config", config, "--workflow", "local"], env)
    # the wrapper adds the evaluation of every training and the report
    proc2 = _law(["run", "Pipeline", "--version", "e2e", "--config", config], env)
    return {"tmp": tmp, "env": env, "config": config, "raw": raw, "log": proc.stdout + proc.stderr + proc2.stderr,
            "data": tmp / "data"}


def _one(pattern: str) -> str:
    found = glob.glob(pattern, recursive=True)
    assert len(found) == 1, (pattern, found)
    return found[0]


def test_resampling_balances_classes(e2e):
    manifests = sorted(glob.glob(str(e2e["data"] / "ShuffleMergeSpectral/e2e/*/manifest_*.json")))
    assert len(manifests) == e2e["raw"]["resampling"]["n_jobs"]
    per_class = np.zeros(4)
    read = 0
    for m in manifests:
        d = json.load(open(m))
        per_class += [d["written_per_class"][c] for c in ("tau", "e", "mu", "jet")]
        read += sum(f["read"] for f in d["files"].values())
    n_in = sum(s["entries_per_file"] * s["n_files"] for s in e2e["raw"]["demo"]["datasets"].values())
    assert read == n_in  # every input candidate was read exactly once
    np.testing.assert_allclose(per_class / per_class.sum(), 0.25, atol=0.05)


def test_train_file_is_scaled(e2e):
    train = sorted(glob.glob(str(e2e["data"] / "WriteTrainSample/e2e/*/train_*.h5")))
    x = np.concatenate([h5py.File(p, "r")["jets/inputs"][:] for p in train])
    names = list(h5py.File(train[0], "r")["jets/inputs"].attrs["variables"])
    for name, spec in e2e["raw"]["features"]["candidate"].items():
        col = x[:, names.index(name)]
        if spec["scaling"] == "normal":
            lo, hi = spec["limits"]
            assert col.min() >= lo and col.max() <= hi, name  # clamped
            clamped = np.mean((col <= lo) | (col >= hi))
            assert abs(col.mean()) < 0.1, name
            # clamping heavy tails at the limits can only shrink the spread
            if clamped < 0.002:
                assert 0.85 < col.std() < 1.15, name
            else:
                assert 0.5 < col.std() < 1.0, name


def test_model_learned_and_lwtnn_agrees(e2e):
    summary = json.load(open(_one(str(e2e["data"] / "Training/e2e/*/deepsets/summary.json"))))
    assert summary["test"]["accuracy"] > 0.6  # chance is 0.25
    assert summary["test"]["auc"]["tau_vs_jet"] > 0.85
    both = json.load(open(_one(str(e2e["data"] / "ConvertLwtnn/e2e/*/deepsets/export_check.json"))))
    check = both["lwtnn"]
    assert check["passed"] and check["max_abs_diff"] <= 1e-5 and check["n_candidates"] > 100
    assert both["onnx"]["passed"] and both["onnx"]["max_abs_diff"] <= 1e-5
    card = json.load(open(_one(str(e2e["data"] / "ConvertLwtnn/e2e/*/deepsets/model_card.json"))))
    assert card["outputs"][0]["labels"] == ["tau", "e", "mu", "jet"]
    mass_card = next(v for v in card["inputs"][0]["variables"] if v["name"] == "mass")
    assert mass_card["mean"] == pytest.approx(scaling_mass_mean(e2e))
    lw = json.load(open(_one(str(e2e["data"] / "ConvertLwtnn/e2e/*/deepsets/lwtnn.json"))))
    scaling = json.load(open(_one(str(e2e["data"] / "MergeScaling/e2e/*/scaling.json"))))
    cand = {v["name"]: v for v in lw["inputs"][0]["variables"]}
    assert set(cand) == set(e2e["raw"]["features"]["candidate"])
    mass = scaling["candidate"]["mass"]["global"]
    assert cand["mass"]["offset"] == pytest.approx(-mass["mean"])
    assert cand["mass"]["scale"] == pytest.approx(1 / mass["std"])
    assert lw["input_sequences"][0]["name"] == "pfcand"
    assert lw["outputs"]["tagger"]["labels"] == ["tau", "e", "mu", "jet"]
    summary_md = open(_one(str(e2e["data"] / "ConvertLwtnn/e2e/*/deepsets/pipeline_summary.md"))).read()
    assert "ShuffleMergeSpectral" in summary_md and "max |lwtnn - Keras|" in summary_md
    # the dense variant (a branch of the same workflows) is exported in lwtnn's sequential format
    dense = json.load(open(_one(str(e2e["data"] / "ConvertLwtnn/e2e/*/dense/lwtnn.json"))))
    assert "nodes" not in dense and dense["outputs"] == ["tau", "e", "mu", "jet"]
    assert json.load(open(_one(str(e2e["data"] / "ConvertLwtnn/e2e/*/dense/export_check.json"))))["lwtnn"]["passed"]


def scaling_mass_mean(e2e) -> float:
    return json.load(open(_one(str(e2e["data"] / "MergeScaling/e2e/*/scaling.json"))))["candidate"]["mass"]["global"]["mean"]


def test_check_export_task(e2e):
    proc = _law(["run", "CheckExport", "--version", "e2e", "--config", e2e["config"], "--n-check", "200",
                 "--branch", "0"], e2e["env"])
    result = json.load(open(_one(str(e2e["data"] / "CheckExport/e2e/*/deepsets/check_200.json"))))
    assert result["lwtnn"]["n_candidates"] == 200 and result["lwtnn"]["passed"] and result["onnx"]["passed"]
    assert "fraction above" in proc.stdout + proc.stderr


def test_evaluation_report(e2e):
    report = open(_one(str(e2e["data"] / "EvaluationReport/e2e/*/report.md"))).read()
    assert "| deepsets |" in report and "| dense |" in report
    summary = json.load(open(_one(str(e2e["data"] / "EvaluationReport/e2e/*/summary.json"))))
    assert summary["deepsets"]["auc"]["tau_vs_jet"] > 0.85
    wps = json.load(open(_one(str(e2e["data"] / "Evaluation/e2e/*/deepsets/working_points.json"))))
    assert set(wps["tau_vs_jet"]) == {"0.5", "0.7", "0.9"}
    pred = _one(str(e2e["data"] / "Evaluation/e2e/*/deepsets/predictions_test.h5"))
    with h5py.File(pred, "r") as f:
        scores = f["jets/scores"][:]
        np.testing.assert_allclose(scores.sum(1), 1, atol=1e-5)
        assert len(scores) == len(f["jets/pt"])


def test_rerun_recomputes_nothing_and_new_config_never_overwrites(e2e):
    outputs = [p for p in glob.glob(str(e2e["data"] / "**/*"), recursive=True) if os.path.isfile(p)]
    before = {p: os.stat(p).st_mtime_ns for p in outputs}
    proc = _law(["run", "Pipeline", "--version", "e2e", "--config", e2e["config"]], e2e["env"])
    after = {p: os.stat(p).st_mtime_ns for p in outputs}
    assert before == after
    assert "Did not run any tasks" in proc.stdout + proc.stderr

    # a changed training section: upstream outputs are reused, Training gets a new directory
    raw = dict(e2e["raw"])
    raw["training"] = dict(raw["training"], epochs=1)
    raw["name"] = "tiny"
    cfg2 = write_config(raw, e2e["tmp"] / "cfg2") if os.path.isdir(e2e["tmp"] / "cfg2") else None
    if cfg2 is None:
        os.makedirs(e2e["tmp"] / "cfg2")
        cfg2 = write_config(raw, e2e["tmp"] / "cfg2")
    _law(["run", "Training", "--version", "e2e", "--config", cfg2], e2e["env"])
    assert len(glob.glob(str(e2e["data"] / "Training/e2e/*/deepsets/model.keras"))) == 2
    assert len(glob.glob(str(e2e["data"] / "Training/e2e/*/dense/model.keras"))) == 2
    assert len(glob.glob(str(e2e["data"] / "WriteTrainSample/e2e/*"))) == 1
    after2 = {p: os.stat(p).st_mtime_ns for p in outputs}
    assert before == after2


def test_bad_config_fails_before_anything_runs(tmp_path):
    env = _law_env(tmp_path)
    raw = tiny_raw()
    raw["features"]["candidate"]["pt"]["scaling"] = "gaussian"
    config = write_config(raw, tmp_path)
    _law(["index", "-q"], env)
    proc = _law(["run", "Spectrum", "--version", "bad", "--config", config], env, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"{config}: features.candidate.pt.scaling: unknown scaling type 'gaussian'" in out
    assert not (tmp_path / "data" / "GenerateDemoSamples").exists()


def test_publish_to_a_store(e2e, tmp_path):
    """Publish copies the deliverables through law's targets to the file system a law.cfg section
    names, with a manifest of sizes and sha256 written last; a missing store is a clear error."""
    import hashlib

    store = tmp_path / "store"
    cfg = tmp_path / "law.cfg"
    cfg.write_text(f"[core]\ninherit: {os.path.join(REPO, 'law.cfg')}\n\n[test_store]\nbase: {store}\n")
    env = dict(e2e["env"], LAW_CONFIG_FILE=str(cfg))
    _law(["run", "Publish", "--version", "e2e", "--config", e2e["config"], "--store", "test_store"], env)
    manifest = json.loads(_one(str(store / "e2e" / "*" / "published.json")) and
                          open(_one(str(store / "e2e" / "*" / "published.json"))).read())
    names = set(manifest["files"])
    for variant in ("deepsets", "dense"):
        assert {f"{variant}/lwtnn.json", f"{variant}/model.onnx", f"{variant}/model_card.json"} <= names
    assert "report/report.md" in names
    root = os.path.dirname(_one(str(store / "e2e" / "*" / "published.json")))
    for name, info in manifest["files"].items():
        data = open(os.path.join(root, name), "rb").read()
        assert len(data) == info["size"] and hashlib.sha256(data).hexdigest() == info["sha256"], name
    # the published lwtnn file is the one ConvertLwtnn wrote
    src = _one(str(e2e["data"] / "ConvertLwtnn/e2e/*/deepsets/lwtnn.json"))
    assert open(os.path.join(root, "deepsets/lwtnn.json"), "rb").read() == open(src, "rb").read()
    # no store configured, or a section that does not exist: the error says what to set
    proc = _law(["run", "Publish", "--version", "e2e", "--config", e2e["config"]], e2e["env"], check=False)
    assert proc.returncode != 0 and "publish_store" in proc.stdout + proc.stderr
    proc = _law(["run", "Publish", "--version", "e2e", "--config", e2e["config"], "--store", "nope"], env,
                check=False)
    assert proc.returncode != 0 and "no section [nope]" in proc.stdout + proc.stderr
