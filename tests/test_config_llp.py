"""Validation of the llp demo family (configs/llp.yaml) and of per-dataset signal parameters."""

from __future__ import annotations

import os

import pytest
import yaml

from conftest import REPO, load_default_raw, write_config
from taggerflow.config import ConfigError, load_config
from tasks.evaluation import signal_parameters_by_id
from taggerflow.resample import dataset_id

LLP_CONFIG = os.path.join(REPO, "configs", "llp.yaml")


def _llp_raw() -> dict:
    with open(LLP_CONFIG) as f:
        return yaml.safe_load(f)


def test_llp_config_is_valid():
    cfg = load_config(LLP_CONFIG)
    assert cfg.class_names == ["qcd", "signal", "bib"]
    assert [c.name for c in cfg.collections] == ["clus", "trk", "mseg"]
    assert [v["name"] for v in cfg.training_variants()] == ["lambda0"]
    by_id = signal_parameters_by_id(cfg)
    assert by_id[dataset_id("mH125_mS40")] == ("mH125_mS40", {"m_H": 125, "m_S": 40})
    assert len(by_id) == 3


@pytest.mark.parametrize("mutate, key, words", [
    (lambda d: d["datasets"]["QCD"].update(process="ttbar"), "demo.datasets.QCD.process", "expected one of"),
    (lambda d: d["datasets"]["mH125_mS40"]["parameters"].pop("m_S"), "demo.datasets.mH125_mS40.parameters",
     "keys ['m_H'] differ from mH125_mS15's ['m_H', 'm_S']"),
    (lambda d: d["datasets"]["mH125_mS15"]["parameters"].update(m_S=70), "demo.datasets.mH125_mS15.parameters",
     "0 < 2 m_S < m_H"),
    (lambda d: d["datasets"]["mH125_mS15"]["parameters"].update(m_S="15"),
     "demo.datasets.mH125_mS15.parameters.m_S", "expected a finite number"),
    (lambda d: d["datasets"]["QCD"].update(parameters={"m_H": 1, "m_S": 0.1}), "demo.datasets.QCD.parameters",
     "only signal datasets"),
    (lambda d: d["datasets"]["QCD"].update(eta_width=1.0), "demo.datasets.QCD.eta_width", "not a key of the llp"),
    (lambda d: d["control"]["shift"].update(variable="llp_class"), "demo.control.shift.variable", "is not one of"),
    (lambda d: d["control"]["datasets"]["CR_data"].update(is_data=False), "demo.control.datasets",
     "one data (is_data: true) and one MC"),
    (lambda d: d["control"]["datasets"]["CR_data"].update(is_data="yes"), "demo.control.datasets.CR_data.is_data",
     "expected"),
    (lambda d: d.update(family="tau2"), "demo.family", "unknown demo family"),
])
def test_llp_errors_name_the_key(tmp_path, mutate, key, words):
    raw = _llp_raw()
    mutate(raw["demo"])
    path = write_config(raw, tmp_path)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert path in str(e.value) and f": {key}:" in str(e.value) and words in str(e.value), str(e.value)


def test_tau_family_keys_and_input_parameters(tmp_path):
    raw = load_default_raw()
    raw["demo"]["datasets"]["DY"].pop("pt_scale")
    with pytest.raises(ConfigError, match=r"demo\.datasets\.DY: missing pt_scale"):
        load_config(write_config(raw, tmp_path))
    raw = load_default_raw()
    raw["demo"]["control"] = _llp_raw()["demo"]["control"]
    with pytest.raises(ConfigError, match=r"demo\.control: only for demo\.family: llp"):
        load_config(write_config(raw, tmp_path))
    # inputs.datasets.<ds>.parameters: the same keys for every dataset that has them
    raw = load_default_raw()
    del raw["demo"]
    raw["inputs"]["datasets"] = {"A": {"files": ["a.root"], "parameters": {"m_H": 125, "m_S": 15}},
                                 "B": {"files": ["b.root"], "parameters": {"m_H": 125, "ms": 15}}}
    with pytest.raises(ConfigError, match=r"inputs\.datasets\.B\.parameters: keys \['m_H', 'ms'\] differ from A's"):
        load_config(write_config(raw, tmp_path))
