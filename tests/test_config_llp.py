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
    assert [v["name"] for v in cfg.training_variants()] == ["lambda0", "adversarial"]
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


@pytest.mark.parametrize("mutate, key, words", [
    (lambda r: r["control"]["datasets"].update(CR_other={"is_data": False}), "control.datasets.CR_other.files",
     "only a dataset the demo generates (a name of demo.control.datasets) may omit it"),
    (lambda r: r["control"]["datasets"]["CR_mc"].update(is_data=True), "control.datasets.CR_mc.is_data",
     "True but demo.control.datasets.CR_mc.is_data is False"),
    (lambda r: r["control"]["datasets"]["CR_mc"].update(format="nanoaod"), "control.datasets.CR_mc.format",
     "candidate trees"),
    (lambda r: r["control"]["datasets"]["CR_mc"].update(colour="red"), "control.datasets.CR_mc.colour", "unknown key"),
    (lambda r: (r["control"]["datasets"].update(CR_more={"files": ["x.root"], "is_data": False}),
                r["inputs"].update(tree="Events")), "inputs.tree", "have the tree 'candidates' (demo.tree)"),
])
def test_control_datasets_the_demo_generates(tmp_path, mutate, key, words):
    raw = _llp_raw()
    mutate(raw)
    path = write_config(raw, tmp_path)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert path in str(e.value) and f": {key}:" in str(e.value) and words in str(e.value), str(e.value)


def test_control_view_reads_the_demo_generated_files(tmp_path):
    """The control view has no demo, the generated datasets no files (tasks.demo.input_files names
    them) and the candidate-tree format; what the generated files depend on (demo.control, the
    tree) is in its control section, which the control outputs' paths hash."""
    from taggerflow.control_config import control_config, generated_datasets

    cfg = load_config(LLP_CONFIG)
    view = control_config(cfg)
    assert not view.is_demo and "demo" not in view.raw
    assert generated_datasets(cfg) == generated_datasets(view) == ["CR_data", "CR_mc"]
    assert view.raw["inputs"]["datasets"] == {"CR_data": {"files": [], "format": "candidate_tree"},
                                              "CR_mc": {"files": [], "format": "candidate_tree"}}
    assert view.dataset_files() == {"CR_data": [], "CR_mc": []} and view.tree == "candidates"
    assert view.raw["control"]["generated_by_demo"] == {"tree": "candidates", "control": cfg.raw["demo"]["control"]}
    raw = _llp_raw()
    raw["demo"]["control"]["shift"]["amount"] = 0.1
    other = control_config(load_config(write_config(raw, tmp_path)))
    assert other.sections_hash(("control",)) != view.sections_hash(("control",))
    assert cfg.sections_hash(("control",)) == load_config(write_config(raw, tmp_path)).sections_hash(("control",))
    # a control dataset with files keeps them, beside the generated ones
    raw = _llp_raw()
    (tmp_path / "cr").mkdir()
    (tmp_path / "cr" / "more.root").write_bytes(b"")
    raw["control"]["datasets"]["CR_more"] = {"files": ["cr/*.root"], "is_data": False}
    view = control_config(load_config(write_config(raw, tmp_path)))
    assert generated_datasets(view) == ["CR_data", "CR_mc"]
    assert view.dataset_files()["CR_more"] == [str(tmp_path / "cr" / "more.root")]
