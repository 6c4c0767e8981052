"""Configuration validation: every error names the file and the key."""

from __future__ import annotations

import copy
import re

import pytest

from conftest import DEFAULT_CONFIG, load_default_raw, write_config
from taggerflow.config import ConfigError, config_from_dict, load_config


def test_default_config_is_valid():
    cfg = load_config(DEFAULT_CONFIG)
    assert cfg.class_names == ["tau", "e", "mu", "jet"]
    assert [c.name for c in cfg.collections] == ["pfcand"]
    assert cfg.collections[0].n_max == 16
    assert cfg.required_branches()["pfcand_pt"].startswith("features.collections.pfcand")
    assert cfg.required_branches()["pt"] == "spectrum"
    assert [v["name"] for v in cfg.training_variants()] == ["deepsets", "dense"]
    assert cfg.training_variants()[1]["model"]["type"] == "dense"


def _error(raw, tmp_path) -> str:
    path = write_config(raw, tmp_path)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert path in str(e.value)
    return str(e.value)


@pytest.mark.parametrize("mutate, key, words", [
    (lambda r: r["resampling"].update(n_jobz=3), "resampling.n_jobz", "unknown key"),
    (lambda r: r["export"].update(tolerance=1e-4), "export.tolerance", "tolerance <= 1e-05"),
    (lambda r: r["export"].update(n_check=0), "export.n_check", "at least 1"),
    (lambda r: r["features"]["candidate"]["pt"].update(selection="pt >"), "features.candidate.pt.selection",
     "invalid expression"),
    (lambda r: r.update(colour="red"), "colour", "unknown key"),
    (lambda r: r["features"]["candidate"]["pt"].update(scaling="norm"), "features.candidate.pt.scaling",
     "unknown scaling type 'norm'"),
    (lambda r: r["resampling"]["class_ratio"].update(gluon=1), "resampling.class_ratio.gluon",
     "class without a label"),
    (lambda r: r["resampling"].update(pt_bins=[20, 33, 1000]), "resampling.pt_bins", "does not lie on an edge"),
    (lambda r: r["features"]["candidate"]["mass"].update(expression="os.system('x')"),
     "features.candidate.mass.expression", "invalid expression"),
    (lambda r: r["features"]["candidate"]["mass"].update(limits=[3, 1]), "features.candidate.mass.limits",
     "low < high"),
    (lambda r: r["features"]["candidate"]["lead_pt_frac"].pop("limits"),
     "features.candidate.lead_pt_frac.limits", "linear scaling needs limits"),
    (lambda r: r.pop("seed"), "seed", "missing required key"),
    (lambda r: r["train_sample"]["split"].update(train=0.9), "train_sample.split", "sum to 1"),
    (lambda r: r["training"]["model"].update(activation="gelu"), "training.model.activation", "lwtnn"),
    (lambda r: r["demo"]["datasets"]["DY"]["class_fractions"].update(gluon=0.1),
     "demo.datasets.DY.class_fractions.gluon", "class without a label"),
    (lambda r: r["classes"]["labels"].update(b=[5]), "classes.labels.b", "also used by class 'tau'"),
    (lambda r: r["resampling"].update(n_jobs="4"), "resampling.n_jobs", "expected an integer"),
    (lambda r: r["resampling"].update(compression_level=23), "resampling.compression_level",
     "expected 1 to 22 for root shards"),
    (lambda r: r["resampling"].update(compression_level=12, output_format="hdf5"), "resampling.compression_level",
     "expected 0 to 9 for hdf5 shards"),
])
def test_errors_name_file_and_key(tmp_path, mutate, key, words):
    raw = load_default_raw()
    mutate(raw)
    msg = _error(raw, tmp_path)
    assert f": {key}:" in msg
    assert words in msg


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))


def test_variants_override_base():
    raw = load_default_raw()
    raw["training"]["variants"] = [{"name": "a"}, {"name": "b", "epochs": 1, "model": {"f_layers": [8]}}]
    cfg = config_from_dict(raw)
    a, b = cfg.training_variants()
    assert a["epochs"] == raw["training"]["epochs"] and b["epochs"] == 1
    assert b["model"]["f_layers"] == [8] and b["model"]["type"] == "deepsets"
    raw2 = copy.deepcopy(raw)
    raw2["training"]["variants"] = [{"name": "a"}, {"name": "a"}]
    with pytest.raises(ConfigError, match="unique"):
        config_from_dict(raw2)


def test_sections_hash_changes_only_with_its_sections():
    raw = load_default_raw()
    base = config_from_dict(raw)
    raw2 = copy.deepcopy(raw)
    raw2["training"]["epochs"] = 99
    other = config_from_dict(raw2)
    assert base.sections_hash(("spectrum", "resampling")) == other.sections_hash(("spectrum", "resampling"))
    assert base.sections_hash(("training",)) != other.sections_hash(("training",))


def test_input_globs_must_match(tmp_path):
    raw = load_default_raw()
    del raw["demo"]
    raw["inputs"]["datasets"] = {"DY": {"files": ["nothing_here/*.root"]}}
    path = write_config(raw, tmp_path)
    # reported when the configuration is loaded, naming the file and the key
    with pytest.raises(ConfigError, match=re.escape(path) + r": inputs\.datasets\.DY\.files: no file matches "
                       r"'.*nothing_here/\*\.root'$"):
        load_config(path)


def test_input_globs_expanded_at_load(tmp_path, monkeypatch):
    raw = load_default_raw()
    del raw["demo"]
    (tmp_path / "in").mkdir()
    for name in ("b.root", "a.root", "c.txt"):
        (tmp_path / "in" / name).write_bytes(b"")
    raw["inputs"]["datasets"] = {"DY": {"files": ["in/*.root"]}}
    path = write_config(raw, tmp_path)
    cfg = load_config(path)
    (tmp_path / "in" / "a.root").unlink()   # the list is the one of the load, sorted
    assert cfg.dataset_files() == {"DY": [str(tmp_path / "in" / "a.root"), str(tmp_path / "in" / "b.root")]}
    # a batch job (LAW_JOB_HOME) does not expand them at load: it may never read the inputs
    (tmp_path / "in" / "b.root").unlink()
    monkeypatch.setenv("LAW_JOB_HOME", str(tmp_path))
    cfg = load_config(path)
    with pytest.raises(ConfigError, match=r"inputs\.datasets\.DY\.files: no file matches"):
        cfg.dataset_files()
    # a demo configuration's inputs are the generated files: an unmatched glob beside it is no error
    monkeypatch.delenv("LAW_JOB_HOME")
    raw = load_default_raw()
    raw["inputs"]["datasets"] = {"DY": {"files": ["nothing_here/*.root"]}}
    assert load_config(write_config(raw, tmp_path / "in")).is_demo
