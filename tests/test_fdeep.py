"""Tests of the frugally-deep export (taggerflow.fdeep), of the independent numpy evaluator of the
written JSON (taggerflow.fdeep_eval), of the export glue on real shards (taggerflow.fdeep_export)
and of ConvertFdeep run through law."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import glob
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from taggerflow.fdeep_eval import FdeepModel, inputs_from_raw

# Keras' own .keras saving trips a numpy 2 DeprecationWarning inside TensorFlow; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")
TOL = 1e-6
SEQS = {"trk": (6, 4), "sv": (3, 2)}

MODEL_FAMILIES = {
    "dense": {"type": "dense", "f_layers": [12, 8]},
    "deepsets": {"type": "deepsets", "phi_layers": [10, 8], "f_layers": [9]},
    "deepsets_bn_dropout_leaky": {"type": "deepsets", "phi_layers": [7], "f_layers": [6], "batch_norm": True,
                                  "dropout": 0.2, "activation": "leaky_relu", "alpha": 0.1},
    "deepsets_elu": {"type": "deepsets", "phi_layers": [7], "f_layers": [6], "activation": "elu", "alpha": 0.5},
    "dense_silu_bn": {"type": "dense", "f_layers": [8], "activation": "silu", "batch_norm": True},
    "deepsets_conditional": {"type": "deepsets", "phi_layers": [6], "f_layers": [5], "conditional": True,
                             "activation": "tanh"},
    "other_layers": None,  # Activation, ReLU(max_value), Add, Softmax: _other_layers_model
}
N_ADD_VARS = 2


def _other_layers_model(seed: int):
    import keras

    inp = keras.Input((5,), name="candidate")
    init = keras.initializers.GlorotUniform(seed=seed)
    a = keras.layers.ReLU(max_value=0.5, name="relu6ish")(keras.layers.Dense(6, kernel_initializer=init, name="d1")(inp))
    b = keras.layers.Activation("sigmoid", name="sig")(keras.layers.Dense(6, kernel_initializer=init, name="d2")(inp))
    x = keras.layers.Add(name="add")([a, b])
    x = keras.layers.Dense(4, kernel_initializer=init, name="logits")(x)
    return keras.Model([inp], keras.layers.Softmax(name="output")(x), name="other")


def _inputs(model, n: int, seed: int) -> list[np.ndarray]:
    """Normal values; masks with 0..n_max real slots first; padded slots hold 0 as in the training files."""
    rng = np.random.default_rng(seed)
    out, masks = [], {}
    for t in model.inputs:
        if t.name.endswith("_valid"):
            n_max = int(t.shape[1])
            k = rng.integers(0, n_max + 1, size=n)
            masks[t.name[:-6]] = (np.arange(n_max)[None, :] < k[:, None]).astype(np.float32)
    for t in model.inputs:
        if t.name.endswith("_valid"):
            out.append(masks[t.name[:-6]])
        else:
            x = rng.normal(size=(n,) + tuple(t.shape[1:])).astype(np.float32)
            if t.name in masks:
                x *= masks[t.name][:, :, None]
            out.append(x)
    return out


def _trained(family: str, seed: int = 1):
    """A tiny model of the family, fitted for one epoch (BatchNormalization statistics move)."""
    import keras

    from taggerflow.models import build_model

    if MODEL_FAMILIES[family] is None:
        model = _other_layers_model(seed)
    else:
        model = build_model(MODEL_FAMILIES[family], 5, SEQS, 4, seed=seed, n_add_vars=N_ADD_VARS)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    x = _inputs(model, 256, seed + 10)
    y = np.random.default_rng(seed).integers(0, 4, size=256)
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    return model


# ----------------------------------------------------------------------------------------------
# without Keras


def test_evaluator_and_writer_import_without_keras():
    code = ("import sys, taggerflow.fdeep_eval, taggerflow.fdeep; "
            "bad = [m for m in ('keras', 'tensorflow') if m in sys.modules]; assert not bad, bad")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_float_encoding_is_the_loaders():
    from taggerflow.fdeep import decode_floats, encode_floats

    x = np.array([1.0, -2.5, 3.25e-8, np.float32(0.1)], dtype=np.float32)
    enc = encode_floats(x)
    # little-endian float32 bytes, base64: 1.0 = 00 00 80 3f
    assert enc[0].startswith("AACAPwAAIMA")
    np.testing.assert_array_equal(decode_floats(enc), x)
    np.testing.assert_array_equal(decode_floats([1.0, 2.0]), [1.0, 2.0])  # the loader also reads numbers
    big = np.arange(1000, dtype=np.float32)
    chunks = encode_floats(big)
    assert [len(c) for c in chunks[:-1]] == [1024] * (len(chunks) - 1) and len(chunks) == 6
    np.testing.assert_array_equal(decode_floats(chunks), big)


def _hand_doc() -> dict:
    """candidate (2) -> Dense(3, relu) ; trk (3 slots, 2 vars) -> Dense(2) ; Dot(valid, trk) ->
    Concatenate -> Dense(2, softmax); hand-computable."""
    from taggerflow.fdeep import encode_floats

    def ref(name, shape):
        return {"class_name": "__keras_tensor__", "config": {"shape": shape, "dtype": "float32",
                                                             "keras_history": [name, 0, 0]}}

    def layer(cls, name, config, args):
        return {"class_name": cls, "name": name, "config": {"name": name, **config},
                "inbound_nodes": [{"args": args, "kwargs": {}}] if args is not None else []}

    layers = [
        layer("InputLayer", "c", {"batch_shape": [None, 2]}, None),
        layer("InputLayer", "trk", {"batch_shape": [None, 3, 2]}, None),
        layer("InputLayer", "trk_valid", {"batch_shape": [None, 3]}, None),
        layer("Dense", "d1", {"units": 3, "use_bias": True, "activation": "relu"}, [ref("c", [None, 2])]),
        layer("Dense", "phi", {"units": 2, "use_bias": False, "activation": "linear"}, [ref("trk", [None, 3, 2])]),
        layer("Dot", "sum", {"axes": [1, 1], "normalize": False},
              [[ref("trk_valid", [None, 3]), ref("phi", [None, 3, 2])]]),
        layer("Concatenate", "cat", {"axis": -1}, [[ref("sum", [None, 2]), ref("d1", [None, 3])]]),
        layer("Dense", "out", {"units": 2, "use_bias": True, "activation": "softmax"}, [ref("cat", [None, 5])]),
    ]
    return {"architecture": {"class_name": "Functional", "config": {
                "name": "m", "layers": layers, "input_layers": [["c", 0, 0], ["trk", 0, 0], ["trk_valid", 0, 0]],
                "output_layers": [["out", 0, 0]]}},
            "image_data_format": "channels_last", "input_shapes": [[2], [3, 2], [3]], "output_shapes": [[2]],
            "trainable_params": {
                "d1": {"weights": encode_floats([[1, 0, -1], [0, 2, 1]]), "bias": [0.5, 0.0, 0.0]},
                "phi": {"weights": encode_floats([[1, 0], [0, 1]])},
                "out": {"weights": encode_floats(np.zeros((5, 2)) + [[1, 0]] + np.eye(5, 2)), "bias": [0.0, 0.0]}}}


def test_evaluator_handcheck():
    model = FdeepModel(_hand_doc())
    c = np.array([[1.0, 2.0]])
    trk = np.array([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])
    valid = np.array([[1.0, 1.0, 0.0]])
    # d1 = relu([1, 4, 1] + [0.5, 0, 0]) = [1.5, 4, 1]; sum = [4, 6] (third slot masked); cat = [4, 6, 1.5, 4, 1]
    # out logits: W = [[2,0],[1,1],[1,0],[1,0],[1,0]] -> [8 + 6 + 1.5 + 4 + 1, 6] = [20.5, 6]
    got = model.predict([c, trk, valid])[0]
    np.testing.assert_allclose(got, [[1 / (1 + np.exp(-14.5)), 1 / (1 + np.exp(14.5))]], rtol=1e-12)
    assert model.input_names == ["c", "trk", "trk_valid"]
    with pytest.raises(ValueError, match="input 'trk'"):
        model.predict([c, trk[:, :2], valid])


# ----------------------------------------------------------------------------------------------
# converter against Keras


@pytest.fixture(scope="module", params=sorted(MODEL_FAMILIES))
def family_model(request):
    return request.param, _trained(request.param)


def test_export_matches_keras(family_model):
    from taggerflow.fdeep import fdeep_json_text, keras_outputs, keras_to_fdeep

    family, model = family_model
    test_in = _inputs(model, 3, 5)
    doc = keras_to_fdeep(model, test_in)
    parsed = json.loads(fdeep_json_text(doc))  # the evaluator reads the written text only
    fd = FdeepModel(parsed)
    # what the loader requires
    assert parsed["image_data_format"] == "channels_last"
    assert parsed["input_shapes"] == [list(t.shape[1:]) for t in model.inputs]
    assert parsed["output_shapes"] == [[4]]
    assert fd.input_names == [t.name for t in model.inputs]
    classes = [layer["class_name"] for layer in parsed["architecture"]["config"]["layers"]]
    assert "Dropout" not in classes and "MaskedSum" not in classes
    assert ("Dot" in classes) == family.startswith("deepsets")
    assert ("RepeatVector" in classes) == family.endswith("conditional")
    assert len(parsed["hash"]) == 64
    # the embedded test cases are what Keras computes on their inputs (one eager call: see keras_outputs)
    keras_out = keras_outputs(model, test_in)[0]
    np.testing.assert_allclose(keras_out, model.predict(test_in, verbose=0), atol=1e-7)
    assert len(parsed["tests"]) == 3
    for i, case in enumerate(fd.test_cases()):
        for x, want in zip(case[0], test_in):
            np.testing.assert_array_equal(x[0], want[i])
        np.testing.assert_array_equal(case[1][0][0], keras_out[i].astype(np.float32))
    assert fd.run_tests() < TOL
    # and the evaluator agrees with Keras on other candidates
    x = _inputs(model, 400, 7)
    diff = np.abs(fd.predict(x)[0] - model.predict(x, verbose=0)).max()
    assert diff < TOL, (family, diff)


def test_architecture_is_a_keras_config_of_the_same_model(family_model):
    """Keras itself rebuilds the written graph (MaskedSum written as Dot) and, with the written
    parameters in the loader's layouts, computes the same scores: the wiring follows Keras' format."""
    import keras

    from taggerflow.fdeep import decode_floats, keras_to_fdeep

    _, model = family_model
    doc = json.loads(json.dumps(keras_to_fdeep(model)))
    rebuilt = keras.models.model_from_json(json.dumps(doc["architecture"]))
    for layer in rebuilt.layers:
        p = {k: decode_floats(v) for k, v in doc["trainable_params"].get(layer.name, {}).items()}
        if type(layer).__name__ == "Dense":
            units = layer.get_config()["units"]
            layer.set_weights([p["weights"].reshape(-1, units)] + ([p["bias"]] if "bias" in p else []))
        elif type(layer).__name__ == "BatchNormalization":
            layer.set_weights([p[k] for k in ("gamma", "beta", "moving_mean", "moving_variance") if k in p])
        else:
            assert not p and not layer.get_weights()
    x = _inputs(model, 300, 11)
    np.testing.assert_allclose(rebuilt.predict(x, verbose=0), model.predict(x, verbose=0), atol=TOL)


def test_export_is_deterministic(family_model):
    from taggerflow.fdeep import fdeep_json_text, keras_to_fdeep

    _, model = family_model
    first = fdeep_json_text(keras_to_fdeep(model, seed=3))
    assert fdeep_json_text(keras_to_fdeep(model, seed=3)) == first
    assert "/tmp" not in first and os.getcwd() not in first


def test_saved_and_loaded_model_gives_the_same_bytes(tmp_path):
    import keras

    from taggerflow.fdeep import fdeep_json_text, keras_to_fdeep, write_fdeep
    from taggerflow.models import save_model

    model = _trained("deepsets", seed=2)
    save_model(model, str(tmp_path / "m.keras"))
    loaded = keras.models.load_model(str(tmp_path / "m.keras"))
    a = write_fdeep(keras_to_fdeep(model), tmp_path / "a.json")
    b = write_fdeep(keras_to_fdeep(loaded), tmp_path / "b.json")
    assert open(a, "rb").read() == open(b, "rb").read() == fdeep_json_text(keras_to_fdeep(model)).encode()
    # and in another process, from another working directory
    code = ("import sys, keras, taggerflow.models; from taggerflow.fdeep import keras_to_fdeep, write_fdeep; "
            "write_fdeep(keras_to_fdeep(keras.models.load_model(sys.argv[1])), sys.argv[2])")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.keras"), str(tmp_path / "c.json")],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert open(tmp_path / "c.json", "rb").read() == open(a, "rb").read()


def test_masked_slots_change_nothing():
    from taggerflow.fdeep import keras_to_fdeep

    model = _trained("deepsets", seed=4)
    fd = FdeepModel(keras_to_fdeep(model))
    x = _inputs(model, 50, 9)
    base = fd.predict(x)[0]
    names = [t.name for t in model.inputs]
    trk, valid = x[names.index("trk")], x[names.index("trk_valid")]
    trk2 = trk + (1.0 - valid[:, :, None]) * 37.0  # anything finite in padded slots
    x[names.index("trk")] = trk2
    np.testing.assert_allclose(fd.predict(x)[0], base, atol=1e-12)
    np.testing.assert_allclose(base, model.predict(x, verbose=0), atol=TOL)


@pytest.mark.parametrize("case", ["lstm", "flatten", "conv1d", "relu_slope", "nested"])
def test_unsupported_layer_is_refused_naming_it(case):
    import keras

    from taggerflow.fdeep import FdeepConversionError, keras_to_fdeep

    inp = keras.Input((5, 3), name="seq")
    if case == "lstm":  # LSTM/GRU are written; a sequence output is not (the loader's layer is its final state)
        x = keras.layers.LSTM(4, return_sequences=True, name="rnn")(inp)
        match = r"layer 'rnn' \(LSTM\): return_sequences=True is not supported"
    elif case == "flatten":
        x = keras.layers.Dense(4, name="d")(keras.layers.Flatten(name="flat")(inp))
        match = r"layer 'flat' \(Flatten\): layer type Flatten is not supported"
    elif case == "conv1d":
        x = keras.layers.Dense(2, name="d")(keras.layers.Conv1D(2, 2, name="conv")(inp))
        match = r"layer 'conv' \(Conv1D\)"
    elif case == "relu_slope":
        x = keras.layers.ReLU(negative_slope=0.1, name="r")(keras.layers.Dense(2, name="d")(inp))
        match = r"layer 'r' \(ReLU\): ReLU with negative_slope/threshold is not supported"
    else:
        inner = keras.Sequential([keras.layers.Dense(2)], name="inner")
        x = inner(keras.layers.Dense(3, name="d")(inp))
        match = r"layer 'inner' \(Sequential\): nested models"
    model = keras.Model(inp, x)
    with pytest.raises(FdeepConversionError, match=match) as err:
        keras_to_fdeep(model)
    assert "\n" not in str(err.value)


def test_unsupported_activation_is_refused_naming_the_layer():
    import keras

    from taggerflow.fdeep import FdeepConversionError, keras_to_fdeep

    inp = keras.Input((3,), name="candidate")
    model = keras.Model(inp, keras.layers.Dense(2, activation="gelu", name="g")(inp))
    with pytest.raises(FdeepConversionError, match=r"layer 'g' \(Dense\): activation 'gelu' is not supported"):
        keras_to_fdeep(model)


# ----------------------------------------------------------------------------------------------
# export glue on real shards


@pytest.mark.parametrize("model_type", ["deepsets", "dense"])
def test_export_on_shard_candidates(files_config, shard_and_scaling, tmp_path, model_type):
    from taggerflow.fdeep_export import export_fdeep
    from taggerflow.models import build_model, save_model

    cfg = files_config
    shard, scaling, _ = shard_and_scaling
    seqs = {n: (c.n_max, len(c.variables)) for n, c, _ in cfg.sequences()}
    model = build_model({"type": model_type, "phi_layers": [16, 16], "f_layers": [16]},
                        len(cfg.candidate_variables), seqs, len(cfg.class_names), seed=3)
    model_path = str(tmp_path / "model.keras")
    save_model(model, model_path)
    out = {"fdeep": str(tmp_path / "fdeep.json"), "check": str(tmp_path / "fdeep_check.json")}
    logs = []
    result = export_fdeep(model_path, cfg, scaling, [shard], out, log=logs.append)
    assert result["passed"] and result["max_abs_diff"] < TOL and result["tests_max_abs_diff"] < TOL
    from taggerflow.export import check_inputs, keras_inputs

    assert result["n_candidates"] == check_inputs(cfg, [shard], scaling, cfg.raw["export"]["n_check"])["n"] > 100
    assert "frugally-deep vs Keras" in logs[0]
    text = open(out["fdeep"]).read()
    assert str(tmp_path) not in text
    doc = json.loads(text)
    info = doc["taggerflow"]
    assert info["model_inputs"] == [t.name for t in model.inputs]
    assert info["classes"] == cfg.class_names and "clamp the raw value" in info["input_recipe"]
    cand = info["inputs"][0]
    assert cand["kind"] == "candidate" and [v["name"] for v in cand["variables"]] == \
        [v.name for v in cfg.candidate_variables]
    first = cand["variables"][0]
    entry = scaling["candidate"][first["name"]]["global"]
    assert first["mean"] == entry["mean"] and first["std"] == entry["std"]
    if entry["lim_max"] is not None:
        assert first["raw_max"] == pytest.approx(entry["mean"] + entry["lim_max"] * entry["std"], rel=1e-15)
    if model_type == "deepsets":
        seq = info["inputs"][1]
        assert seq["kind"] == "sequence" and seq["mask"] == "pfcand_valid" and seq["n_max"] == cfg.collections[0].n_max
    else:
        assert len(info["inputs"]) == 1
    # the recipe on raw values gives the training files' inputs
    inputs = check_inputs(cfg, [shard], scaling, 100)
    prepared = inputs_from_raw(doc, inputs["raw"])
    for name, x in keras_inputs(inputs, ["pfcand"] if model_type == "deepsets" else []).items():
        np.testing.assert_allclose(prepared[name], x, atol=1e-6)
    check = json.load(open(out["check"]))
    assert check["fdeep"]["passed"] and check["file"] == "fdeep.json"
    # a second export writes the same bytes
    out2 = {"fdeep": str(tmp_path / "again.json"), "check": str(tmp_path / "again_check.json")}
    export_fdeep(model_path, cfg, scaling, [shard], out2, log=lambda m: None)
    assert open(out2["fdeep"], "rb").read() == text.encode()


def test_export_with_concat_jet_tracks(files_config, shard_and_scaling, tmp_path):
    """Constituents carrying candidate variables: documented with the candidate's numbers, and the
    recipe on raw values (the candidate's raw value on every constituent) agrees with Keras."""
    from taggerflow.config import config_from_dict
    from taggerflow.fdeep_export import export_fdeep
    from taggerflow.models import build_model, save_model

    shard, scaling, _ = shard_and_scaling
    raw = json.loads(json.dumps(files_config.raw))
    raw["train_sample"]["concat_jet_tracks"] = ["pt", "abs_eta"]
    cfg = config_from_dict(raw, files_config.path)
    coll = cfg.collections[0]
    model = build_model({"type": "deepsets", "phi_layers": [12], "f_layers": [12]}, len(cfg.candidate_variables),
                        {"pfcand": (coll.n_max, len(coll.variables) + 2)}, len(cfg.class_names), seed=8)
    save_model(model, str(tmp_path / "m.keras"))
    out = {"fdeep": str(tmp_path / "fdeep.json"), "check": str(tmp_path / "check.json")}
    result = export_fdeep(str(tmp_path / "m.keras"), cfg, scaling, [shard], out, log=lambda m: None)
    assert result["passed"] and result["max_abs_diff"] < TOL
    info = json.load(open(out["fdeep"]))["taggerflow"]
    seq = info["inputs"][1]["variables"]
    cand = {v["name"]: v for v in info["inputs"][0]["variables"]}
    assert [v["name"] for v in seq] == coll.variable_names + ["pt", "abs_eta"]
    assert seq[-1] == cand["abs_eta"] and seq[-2] == cand["pt"]
    assert info["concat_jet_tracks"] == ["pt", "abs_eta"]


def test_failed_check_writes_nothing(files_config, shard_and_scaling, tmp_path, monkeypatch):
    import copy

    from taggerflow.fdeep_export import export_fdeep
    from taggerflow.models import build_model, save_model

    cfg = files_config
    shard, scaling, _ = shard_and_scaling
    seqs = {n: (c.n_max, len(c.variables)) for n, c, _ in cfg.sequences()}
    model = build_model({"type": "dense", "f_layers": [8]}, len(cfg.candidate_variables), seqs,
                        len(cfg.class_names), seed=5)
    model_path = str(tmp_path / "model.keras")
    save_model(model, model_path)
    # the documented scaling differs from what the training files used: the check must catch it
    wrong = copy.deepcopy(scaling)
    name = cfg.candidate_variables[0].name
    wrong["candidate"][name]["global"]["mean"] += 3.0 * wrong["candidate"][name]["global"]["std"]
    import taggerflow.fdeep_export as fe

    original = fe.documentation
    monkeypatch.setattr(fe, "documentation", lambda cfg_, scaling_, *a, **k: original(cfg_, wrong, *a, **k))
    out = {"fdeep": str(tmp_path / "fdeep.json"), "check": str(tmp_path / "fdeep_check.json")}
    with pytest.raises(RuntimeError, match="frugally-deep check failed.*no file written"):
        export_fdeep(model_path, cfg, scaling, [shard], out, log=lambda m: None)
    assert not os.path.exists(out["fdeep"]) and not os.path.exists(out["check"])


def test_conditional_model_is_refused(files_config):
    from taggerflow.fdeep_export import documentation

    with pytest.raises(ValueError, match="model input 'add_vars'.*not supported"):
        documentation(files_config, {}, ["candidate", "add_vars"])


# ----------------------------------------------------------------------------------------------
# the task through law


def test_convert_fdeep_task_through_law(tmp_path):
    from conftest import REPO, tiny_raw, write_config

    raw = tiny_raw()
    raw["training"]["epochs"] = 1
    config = write_config(raw, tmp_path)
    env = dict(os.environ)
    env.update({"PYTHONPATH": REPO, "LAW_CONFIG_FILE": os.path.join(REPO, "law.cfg"),
                "LAW_HOME": str(tmp_path / "law_home"), "TAGGERFLOW_DATA": str(tmp_path / "data"),
                "TF_CPP_MIN_LOG_LEVEL": "2"})
    law_bin = shutil.which("law", path=os.path.dirname(sys.executable)) or shutil.which("law")
    for args in (["index", "-q"], ["run", "ConvertFdeep", "--version", "t", "--config", config,
                                   "--workflow", "local"]):
        proc = subprocess.run([law_bin, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    variants = [v["name"] for v in raw["training"]["variants"]]
    for name in variants:
        (path,) = glob.glob(str(tmp_path / "data" / "ConvertFdeep" / "t" / "*" / name / "fdeep.json"))
        doc = json.load(open(path))
        fd = FdeepModel(doc)
        assert fd.run_tests() < TOL and len(doc["tests"]) == 2
        assert doc["taggerflow"]["model_inputs"] == fd.input_names
        check = json.load(open(os.path.join(os.path.dirname(path), "fdeep_check.json")))["fdeep"]
        assert check["passed"] and check["max_abs_diff"] < TOL
        assert str(tmp_path) not in open(path).read()
