"""Shard validation: KS tests between shards, flatness of the achieved spectrum, report, law task."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, tiny_raw, write_config

from taggerflow.config import config_from_dict
from taggerflow.demo import generate_demo_file
from taggerflow.resample import plan_job, run_job
from taggerflow.spectrum import file_spectrum, fine_edges
from taggerflow.validation import kolmogorov_sf, ks_2samp, validate_shards

FRACTIONS = {"tau": 0.3, "e": 0.2, "mu": 0.2, "jet": 0.3}


def test_ks_against_reference_values():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=3000), rng.normal(size=2000)
    d, p = ks_2samp(a, b)
    # the same samples, the statistic computed by brute force over every point
    grid = np.concatenate([a, b])
    brute = max(abs(np.mean(a <= x) - np.mean(b <= x)) for x in grid)
    assert d == pytest.approx(brute)
    assert 0.01 < p <= 1
    d2, p2 = ks_2samp(a, rng.normal(0.2, 1, size=2000))
    assert p2 < 1e-3
    try:
        from scipy.stats import kstwobign

        for lam in (0.3, 0.8, 1.36, 2.0):
            assert kolmogorov_sf(lam) == pytest.approx(kstwobign.sf(lam), abs=1e-6)
    except ImportError:
        assert kolmogorov_sf(1.36) == pytest.approx(0.0494, abs=1e-3)


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory):
    d = tmp_path_factory.mktemp("val")
    files = []
    for i, ds in enumerate(("A", "A", "B")):
        p = str(d / ds / f"{ds}_{i}.root")
        generate_demo_file(p, ds, 6000, FRACTIONS, 35.0 + 10 * i, 1.3, seed=50 + i, file_index=i)
        files.append((ds, p))
    raw = tiny_raw()
    del raw["demo"]
    raw["inputs"]["datasets"] = {"A": {"files": [p for ds, p in files if ds == "A"]},
                                 "B": {"files": [p for ds, p in files if ds == "B"]}}
    raw["resampling"].pop("groups", None)
    raw["resampling"].update({"n_jobs": 3, "pt_bins": [20, 40, 70, 1000], "eta_bins": [0.0, 1.0, 2.3]})
    cfg = config_from_dict(raw, str(d / "cfg.yaml"))
    pt_e, eta_e = fine_edges(cfg)
    spectra = []
    for ds, p in files:
        r = file_spectrum(cfg, p, ds)
        spectra.append({"dataset": ds, "path": p, "entries": r["entries"], "pt_edges": pt_e, "abs_eta_edges": eta_e,
                        "counts_flow": np.stack([r["hists"][c].values(flow=True) for c in cfg.class_names])})
    shards = []
    for j in range(3):
        plan = plan_job(cfg, spectra, j, 3)
        shards.append(str(d / f"shard_{j}.root"))
        run_job(cfg, j, plan.segments, plan.P, plan.p_class, shards[-1], str(d / f"m_{j}.json"), N=plan.N)
    # a shard of another production: every candidate kept (not flattened, other class mix)
    raw2 = json.loads(json.dumps(raw))
    raw2["resampling"]["class_ratio"] = {c: -1 for c in FRACTIONS}
    cfg2 = config_from_dict(raw2, str(d / "cfg2.yaml"))
    plan = plan_job(cfg2, spectra, 0, 3)
    odd = str(d / "odd.root")
    run_job(cfg2, 0, plan.segments, plan.P, plan.p_class, odd, str(d / "m_odd.json"), N=plan.N)
    return cfg, shards, odd, d


def test_shards_of_one_production_pass(shard_set, tmp_path):
    cfg, shards, _, _ = shard_set
    rep = validate_shards(cfg, shards, str(tmp_path / "v"))
    assert rep["passed"], rep["failures"]
    assert rep["n_tests"] == 3 * (3 + 2 * 4)  # per shard: class, dataset id, group id, pt and |eta| per class
    assert all(0 <= t["p_value"] <= 1 for t in rep["tests"])
    for cls, e in rep["flatness"].items():
        assert e["flattened"] and e["chi2_ndf"] < 3, (cls, e)
    on_disk = json.load(open(tmp_path / "v" / "report.json"))
    assert on_disk["passed"] and len(on_disk["tests"]) == rep["n_tests"]
    for name in ("class_fractions.png", "pt_per_class.png", "abs_eta_per_class.png", "achieved_spectrum.png"):
        assert os.path.getsize(tmp_path / "v" / name) > 1000


def test_a_foreign_shard_is_flagged(shard_set, tmp_path):
    cfg, shards, odd, _ = shard_set
    rep = validate_shards(cfg, shards[:2] + [odd], str(tmp_path / "v"), plots=False)
    assert not rep["passed"]
    flagged = {(t["shard"], t["variable"]) for t in rep["tests"] if not t["passed"]}
    assert (2, "class_label") in flagged and (2, "pt") in flagged
    assert any("KS shard 2 vs the others: class_label" in f for f in rep["failures"])
    # the unflattened spectrum fails the flatness check
    assert not all(e["passed"] for e in rep["flatness"].values())


def test_failed_strict_validation_writes_only_the_failed_report(shard_set, tmp_path):
    cfg, shards, odd, _ = shard_set
    out = tmp_path / "v"
    rep = validate_shards(cfg, shards[:2] + [odd], str(out), plots=False, strict=True)
    assert not rep["passed"]
    assert json.load(open(out / "report.failed.json"))["failures"] == rep["failures"]
    assert not os.path.exists(out / "report.json")   # the task's output: it stays incomplete
    rep = validate_shards(cfg, shards, str(out), plots=False, strict=True)
    assert rep["passed"]
    assert json.load(open(out / "report.json"))["passed"]
    assert not os.path.exists(out / "report.failed.json")   # the stale failed report is gone


@pytest.mark.slow
def test_law_task_runs_on_the_demo(tmp_path):
    env = dict(os.environ)
    env.update({"PYTHONPATH": REPO, "LAW_CONFIG_FILE": os.path.join(REPO, "law.cfg"),
                "LAW_HOME": str(tmp_path / "law_home"), "TAGGERFLOW_DATA": str(tmp_path / "data")})
    raw = tiny_raw()
    config = write_config(raw, tmp_path)
    law_bin = shutil.which("law", path=os.path.dirname(sys.executable)) or shutil.which("law")
    subprocess.run([law_bin, "index", "-q"], env=env, cwd=REPO, check=True, capture_output=True)
    proc = subprocess.run([law_bin, "run", "ShardValidation", "--version", "v", "--config", config], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    reports = list((tmp_path / "data" / "ShardValidation").rglob("report.json"))
    assert len(reports) == 1
    rep = json.load(open(reports[0]))
    assert rep["n_tests"] == raw["resampling"]["n_jobs"] * (3 + 2 * 4)
    ids = list((tmp_path / "data" / "ShuffleMergeSpectral").rglob("ids_0.json"))
    maps = json.load(open(ids[0]))
    assert set(maps["dataset_ids"]) == set(raw["demo"]["datasets"]) == set(maps["dataset_group_ids"])
