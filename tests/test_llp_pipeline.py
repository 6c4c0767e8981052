"""configs/llp.yaml (shrunk) through law: the LLP demo files, control-region files, the rnn over
three collections, and the Evaluation's S/sqrt(B) and per-(m_H, m_S) efficiencies."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import uproot
import yaml

from conftest import REPO, write_config
from test_e2e import _law, _law_env


def test_llp_demo_pipeline(tmp_path):
    with open(os.path.join(REPO, "configs", "llp.yaml")) as f:
        raw = yaml.safe_load(f)
    for spec in list(raw["demo"]["datasets"].values()) + list(raw["demo"]["control"]["datasets"].values()):
        spec["entries_per_file"] = 600
    raw["training"]["epochs"] = 1
    raw["export"]["n_check"] = 200
    config = write_config(raw, tmp_path)
    env = _law_env(tmp_path)
    _law(["index", "-q"], env)
    _law(["run", "Pipeline", "--version", "t", "--config", config, "--workers", "2"], env)
    data = str(tmp_path / "data")

    def one(pattern):
        found = glob.glob(os.path.join(data, pattern), recursive=True)
        assert len(found) == 1, (pattern, found)
        return found[0]

    # control files beside the main ones; data = MC + shift in log_ratio only
    cr = {ds: uproot.open(one(f"GenerateDemoSamples/t/**/{ds}/{ds}_0.root"))["candidates"].arrays(library="np")
          for ds in ("CR_data", "CR_mc")}
    shift = raw["demo"]["control"]["shift"]["amount"]
    assert len(cr["CR_data"]["log_ratio"]) == 600
    # different names -> different random streams: the shift shows in the means, not per entry
    assert abs(np.mean(cr["CR_data"]["log_ratio"]) - np.mean(cr["CR_mc"]["log_ratio"]) - shift) < 0.1
    # the control datasets are not main inputs: the test split holds only the five main datasets
    from taggerflow.resample import dataset_id

    import h5py

    ids, control_ids = set(), set()
    for path in glob.glob(os.path.join(data, "WriteTrainSample/t/**/test_*.h5"), recursive=True):
        with h5py.File(path) as f:
            (control_ids if "/control/" in path else ids).update(np.unique(f["jets/dataset_id"][:]).tolist())
    assert ids == {dataset_id(ds) for ds in raw["demo"]["datasets"]}
    # the control sample's training files (--sample control) are the demo's generated control files
    assert control_ids == {dataset_id("CR_data"), dataset_id("CR_mc")}

    metrics = json.load(open(one("Evaluation/t/**/lambda0/metrics.json")))
    scan = metrics["signal_scan"]["signal"]
    assert scan["best"]["significance"] > 1.0
    assert [r["parameters"] for r in scan["efficiency_map"]] == [
        {"m_H": 125, "m_S": 15}, {"m_H": 125, "m_S": 40}, {"m_H": 600, "m_S": 150}]
    assert all(r["n"] > 0 and 0.0 <= r["efficiency"][0] <= 1.0 for r in scan["efficiency_map"])
    assert os.path.getsize(one("Evaluation/t/**/lambda0/plots/eff_map_signal.png")) > 1000
    assert os.path.getsize(one("Evaluation/t/**/lambda0/plots/significance_signal.png")) > 1000
    report = open(one("EvaluationReport/t/**/report.md")).read()
    assert "| lambda0 | mH600_mS150 | 600 | 150 |" in report and "Best S/sqrt(B) of 'signal'" in report
    assert glob.glob(os.path.join(data, "ConvertLwtnn/t/**/lambda0/lwtnn.json"), recursive=True)
