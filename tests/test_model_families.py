"""The model-family registry (taggerflow/model_families/): schemas, config checks, builders and the
exporters each family supports, and the pattern for adding a family (one module, one registry line,
one test: copy ``test_a_new_family_is_one_module_and_one_registry_line``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import REPO, load_default_raw
from taggerflow import model_families, schema
from taggerflow.config import ConfigError, config_from_dict


def test_registry_schemas_and_config_import_without_tensorflow():
    script = ("import sys, json; from taggerflow import model_families as mf; import taggerflow.config; "
              "mf.schemas(); [mf.parse_config({'type': t, 'f_layers': [2]}) for t in mf.NAMES]; "
              "print(json.dumps(sorted(m for m in ('keras', 'tensorflow', 'tf2onnx') if m in sys.modules)))")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == []


def test_the_training_model_schema_is_the_union_of_the_families():
    spec = model_families.schemas()["training.model"]
    assert set(spec) == {"type", "phi_layers", "f_layers", "activation", "batch_norm", "dropout", "alpha",
                         "cell", "rnn_units"}
    # required: what every family requires
    assert sorted(k for k, (_, required, *_) in spec.items() if required) == ["f_layers", "type"]
    # a default all families declaring the key share is the section's (the resolved configuration
    # and its hash hold it); rnn_units is rnn's alone, so it is rnn's default
    assert spec["rnn_units"] == ((int, dict), False, 32)
    assert spec["activation"] == (str, False, "relu") and spec["alpha"][2] is None
    # the defaults are the families' (one place): what parse_config fills in
    for name in model_families.NAMES:
        parsed = model_families.parse_config({"type": name})
        for key, value in model_families.defaults(name).items():
            if key != "alpha":   # None: the activation's own default
                assert parsed[key] == value, (name, key)
    assert model_families.defaults("rnn")["rnn_units"] == 32
    assert model_families.defaults("deepsets")["phi_layers"] == [64, 64]


def _raw_with_model(model: dict, variants=None) -> dict:
    raw = load_default_raw()
    raw["training"]["model"] = model
    raw["training"]["variants"] = variants or [{"name": "only"}]
    return raw


@pytest.mark.parametrize("model, collections, key, message", [
    ({"type": "cnn", "f_layers": [4]}, True, "training.model.type", "unknown model type 'cnn'"),
    ({"type": "dense", "f_layers": [4], "activation": "gelu"}, True, "training.model.activation", "'gelu' cannot be evaluated by lwtnn"),
    ({"type": "rnn", "f_layers": [4]}, False, "training.model.type", "rnn needs at least one collection"),
    ({"type": "deepsets", "f_layers": [4]}, False, "training.model.type", "deepsets needs at least one"),
])
def test_family_checks_at_config_load_name_the_key(model, collections, key, message):
    raw = _raw_with_model(model)
    if not collections:
        raw["features"].pop("collections")
        raw["train_sample"].pop("constituent_labels", None)
        raw["train_sample"]["concat_jet_tracks"] = False
        raw["export"].pop("sequence_names", None)
    with pytest.raises(ConfigError, match=rf"<dict>: {key}: {message}"):
        config_from_dict(raw)


def test_a_dense_model_needs_no_collection():
    raw = _raw_with_model({"type": "dense", "f_layers": [4]})
    raw["features"].pop("collections")
    raw["train_sample"].pop("constituent_labels", None)
    raw["train_sample"]["concat_jet_tracks"] = False
    raw["export"].pop("sequence_names", None)
    assert config_from_dict(raw).training_variants()[0]["model"]["type"] == "dense"


def test_exporters_of_each_family_and_the_refusal_names_family_and_key(monkeypatch):
    table = {name: [e for e in model_families.EXPORTER_NAMES if model_families.supports(name, e)]
             for name in model_families.NAMES}
    assert table == {"deepsets": ["lwtnn", "onnx", "fdeep"], "dense": ["lwtnn", "onnx", "fdeep"],
                     "rnn": ["lwtnn", "onnx", "fdeep"]}
    for name, exporters in table.items():
        for exporter in exporters:
            assert callable(model_families.converter(name, exporter))
    # a family without an exporter (rnn as it was before its frugally-deep LSTM/GRU converter)
    monkeypatch.delitem(model_families.module("rnn").EXPORTERS, "fdeep")
    with pytest.raises(model_families.ExportRefused) as info:
        model_families.require_exporter({"type": "rnn"}, "fdeep")
    assert str(info.value) == "training.model.type: model family 'rnn' has no fdeep export (its exporters: lwtnn, onnx)"
    with pytest.raises(ValueError, match="unknown exporter 'tflite'"):
        model_families.supports("dense", "tflite")


def test_the_export_tasks_refuse_a_variant_by_its_family(monkeypatch):
    from taggerflow.export import FDEEP_EXPORTERS, LWTNN_EXPORTERS, export_model, require_exporters

    raw = _raw_with_model({"type": "deepsets", "f_layers": [4]},
                          [{"name": "ds"}, {"name": "rec", "model": {"type": "rnn", "cell": "gru"}}])
    cfg = config_from_dict(raw)
    require_exporters(cfg, "ds", LWTNN_EXPORTERS + FDEEP_EXPORTERS)
    require_exporters(cfg, "rec", LWTNN_EXPORTERS + FDEEP_EXPORTERS)
    monkeypatch.delitem(model_families.module("rnn").EXPORTERS, "fdeep")   # a family without fdeep
    with pytest.raises(model_families.ExportRefused,
                       match=r"^training\.variants\[1\]\.model\.type: model family 'rnn' has no fdeep export"):
        require_exporters(cfg, "rec", FDEEP_EXPORTERS)
    with pytest.raises(ValueError, match="no variant named 'nope'"):
        require_exporters(cfg, "nope", LWTNN_EXPORTERS)


# ----------------------------------------------------------------------------------------------
# adding a family: one module, one registry line (MODULES), this test


TINY_FAMILY = '''
"""A test family: one Dense layer of ``width`` units on the candidate, then the shared head."""
from taggerflow.model_families import _common

FAMILY = "tiny"
SCHEMA = {"training.model": {"type": _common.TYPE_ENTRY, **_common.HEAD_SCHEMA, "width": (int, False, 3),
                             "init": (dict, False)},
          "training.model.init": {"scale": ((int, float), True, 1.0)}}
EXPORTERS = {"onnx": "taggerflow.onnx_export:export_onnx"}


def validate(model_section, cfg, err):
    _common.validate_head(model_section, err)
    if model_section.get("width", 3) < 1:
        raise err("width", "must be >= 1")


def parse_config(model_cfg):
    _common.unknown_keys(model_cfg, tuple(SCHEMA["training.model"]), {"phi_layers", "cell", "rnn_units"}, FAMILY)
    return {"type": FAMILY, **_common.parse_head(model_cfg), "conditional": False,
            "width": model_cfg.get("width", SCHEMA["training.model"]["width"][2]),
            "scale": (model_cfg.get("init") or {}).get("scale", SCHEMA["training.model.init"]["scale"][2])}


def build(cfg, candidate, sequences, seeds, add_vars=None):
    import keras

    init = keras.initializers.GlorotUniform(seed=seeds.next())
    x = keras.layers.Dense(cfg["width"], activation="tanh", kernel_initializer=init, name="tiny")(candidate)
    return [], keras.layers.Rescaling(cfg["scale"], name="tiny_scale")(x)
'''


@pytest.fixture
def tiny_family(tmp_path, monkeypatch):
    (tmp_path / "tiny_family.py").write_text(textwrap.dedent(TINY_FAMILY))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(model_families.MODULES, "tiny", "tiny_family")   # the one registry line
    # the schema reads the registries once per process: a family registered at run time needs a fresh read
    monkeypatch.setattr(schema, "_REGISTRY", None)
    monkeypatch.setattr(schema, "_CLASSES", {})
    yield "tiny"
    sys.modules.pop("tiny_family", None)


def test_a_new_family_is_one_module_and_one_registry_line(tiny_family, tmp_path):
    from taggerflow.export import FDEEP_EXPORTERS, LWTNN_EXPORTERS, export_model, require_exporters
    from taggerflow.models import build_model

    # config: its keys enter the training.model schema, its checks run at load, naming the key
    raw = _raw_with_model({"type": "deepsets", "f_layers": [4]},
                          [{"name": "base"}, {"name": "t", "model": {"type": "tiny", "width": 2}}])
    cfg = config_from_dict(raw)
    assert cfg.training_variants()[1]["model"] == {"type": "tiny", "f_layers": [4], "width": 2}
    bad = _raw_with_model({"type": "tiny", "f_layers": [4], "width": 0})
    with pytest.raises(ConfigError, match=r"<dict>: training\.model\.width: must be >= 1"):
        config_from_dict(bad)
    typo = _raw_with_model({"type": "tiny", "f_layers": [4], "widht": 2})
    with pytest.raises(ConfigError, match=r"training\.model\.widht: unknown key \(allowed: .*width"):
        config_from_dict(typo)
    nested = _raw_with_model({"type": "tiny", "f_layers": [4], "init": {"scael": 2}})   # its own nested section
    with pytest.raises(ConfigError, match=r"training\.model\.init\.scael: unknown key \(allowed: scale\)"):
        config_from_dict(nested)
    # build: the family's layer, then the shared head, seeded
    variant = cfg.training_variants()[1]
    model = build_model(variant["model"], 5, {"pfcand": (16, 4)}, 4, seed=3)
    assert [layer.name for layer in model.layers] == ["candidate", "tiny", "tiny_scale", "f0", "output"]
    assert model.get_layer("tiny").units == 2
    again = build_model(variant["model"], 5, {"pfcand": (16, 4)}, 4, seed=3)
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    scores = model.predict({"candidate": np.ones((2, 5), np.float32)}, verbose=0)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-6)
    # exporters: what it declares, the others refused by name
    require_exporters(cfg, "t", ("onnx",))
    with pytest.raises(model_families.ExportRefused,
                       match=r"training\.variants\[1\]\.model\.type: model family 'tiny' has no lwtnn export "
                             r"\(its exporters: onnx\)"):
        require_exporters(cfg, "t", LWTNN_EXPORTERS)
    with pytest.raises(model_families.ExportRefused, match="'tiny' has no fdeep export"):
        require_exporters(cfg, "t", FDEEP_EXPORTERS)
    # ConvertLwtnn's export_model refuses it before reading the model (there is none) and writes nothing
    out = {k: str(tmp_path / "out" / f"x.{k}") for k in ("lwtnn", "check", "onnx", "card")}
    with pytest.raises(model_families.ExportRefused, match="'tiny' has no lwtnn export"):
        export_model(str(tmp_path / "missing.keras"), cfg, {}, [], out, variant="t")
    assert not (tmp_path / "out").exists()
