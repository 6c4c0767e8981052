"""frugally-deep export of the recurrent family (taggerflow.fdeep LSTM/GRU, PaddingMask as a
variable-length input): the numpy evaluator of the written file against Keras, the written layout
against Keras' weights, Keras itself on the written graph, the refusals, the export glue on real
shards."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import glob
import hashlib
import json

import numpy as np
import pytest

from taggerflow.fdeep_eval import FdeepModel, inputs_from_raw

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")
TOL = 1e-6
N_CAND = 5
SEQS = {"trk": (7, 3), "clu": (4, 2), "mu": (2, 2)}
# rnn family configs, and hand-built variants the family does not build (reset_after GRU, other activations)
MODELS = {
    "lstm": {"type": "rnn", "cell": "lstm", "rnn_units": {"trk": 6, "clu": 3, "mu": 2}, "f_layers": [8]},
    "gru": {"type": "rnn", "cell": "gru", "rnn_units": 5, "f_layers": [8, 6], "activation": "tanh"},
    "gru_reset_after": None,
    "lstm_other_activations": None,
}


def _hand_model(kind: str, seed: int):
    """candidate + per collection PaddingMask -> recurrent layer, concatenated, Dense softmax."""
    import keras

    from taggerflow.models_rnn import PaddingMask

    cand = keras.Input((N_CAND,), name="candidate")
    inputs, states = [cand], []
    for i, (coll, (n_max, n_vars)) in enumerate(SEQS.items()):
        seq, valid = keras.Input((n_max, n_vars), name=coll), keras.Input((n_max,), name=f"{coll}_valid")
        inputs += [seq, valid]
        init = dict(kernel_initializer=keras.initializers.GlorotUniform(seed=seed + i),
                    recurrent_initializer=keras.initializers.Orthogonal(seed=seed + 10 + i),
                    bias_initializer=keras.initializers.RandomNormal(stddev=0.3, seed=seed + 20 + i))
        if kind == "gru_reset_after":
            layer = keras.layers.GRU(4, reset_after=True, name=f"{coll}_gru", **init)
        elif i == 0:
            layer = keras.layers.LSTM(4, activation="relu", recurrent_activation="hard_sigmoid",
                                      name=f"{coll}_lstm", **init)
        else:
            layer = keras.layers.GRU(3, reset_after=bool(i % 2), use_bias=False, activation="softsign",
                                     recurrent_activation="sigmoid", name=f"{coll}_gru",
                                     **{k: v for k, v in init.items() if k != "bias_initializer"})
        states.append(layer(PaddingMask(name=f"{coll}_padding")([seq, valid])))
    x = keras.layers.Concatenate(name="concatenate")(states + [cand])
    out = keras.layers.Dense(3, activation="softmax", name="output",
                             kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 30))(x)
    return keras.Model(inputs, out, name=kind)


def _inputs(n: int, seed: int) -> dict[str, np.ndarray]:
    """Scaled inputs; real constituents first; per collection 0, 1 and n_max real ones in the first
    rows, then random counts; padded slots hold junk (the PaddingMask must hide it)."""
    rng = np.random.default_rng(seed)
    out = {"candidate": rng.normal(size=(n, N_CAND)).astype(np.float32)}
    for coll, (n_max, n_vars) in SEQS.items():
        counts = rng.integers(0, n_max + 1, size=n)
        counts[:3] = [0, 1, n_max]
        valid = (np.arange(n_max)[None, :] < counts[:, None]).astype(np.float32)
        x = (rng.normal(size=(n, n_max, n_vars)) * 2).astype(np.float32)
        x[valid < 0.5] = 1e6
        out[coll], out[f"{coll}_valid"] = x, valid
    return out


def _real(x: dict, coll: str) -> list[np.ndarray]:
    return [x[coll][i][x[f"{coll}_valid"][i] > 0.5] for i in range(len(x[coll]))]


def _fdeep_inputs(x: dict) -> dict:
    """What C++ passes: the candidate and per collection the real constituents only."""
    return {"candidate": x["candidate"], **{c: _real(x, c) for c in SEQS}}


def _trained(kind: str, seed: int = 1):
    import keras

    from taggerflow.models import build_model

    if MODELS[kind] is None:
        model = _hand_model(kind, seed)
    else:
        model = build_model(MODELS[kind], N_CAND, SEQS, 3, seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    x = _inputs(256, seed + 10)
    model.fit(x, np.random.default_rng(seed).integers(0, 3, size=256), epochs=1, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module", params=sorted(MODELS))
def rnn_model(request):
    return request.param, _trained(request.param)


def _doc(model, **kw) -> dict:
    from taggerflow.fdeep import fdeep_json_text, keras_to_fdeep

    return json.loads(fdeep_json_text(keras_to_fdeep(model, **kw)))  # the written text only


def test_rnn_export_matches_keras(rnn_model):
    from taggerflow.fdeep import keras_outputs

    kind, model = rnn_model
    test_rows = {k: v[3:6] for k, v in _inputs(6, 5).items()}
    for coll in SEQS:  # at least one real constituent per sequence (a real value in slot 0)
        test_rows[f"{coll}_valid"][:, 0] = 1.0
        test_rows[coll][:, 0] = 0.5
    doc = _doc(model, test_inputs=test_rows)
    fd = FdeepModel(doc)
    # the loader's view: variable-length sequences without mask inputs, no PaddingMask
    assert fd.input_names == ["candidate", *SEQS]
    assert doc["input_shapes"] == [[N_CAND]] + [[None, v] for _, v in SEQS.values()]
    layers = {entry["name"]: entry for entry in doc["architecture"]["config"]["layers"]}
    assert [layers[c]["config"]["batch_shape"] for c in SEQS] == [[None, None, v] for _, v in SEQS.values()]
    classes = [entry["class_name"] for entry in layers.values()]
    assert "PaddingMask" not in classes and not any(n.endswith("_valid") for n in layers)
    assert sum(c in ("LSTM", "GRU") for c in classes) == len(SEQS)
    # the embedded test cases: each row's real constituents, and what Keras gives the padded row
    keras_out = keras_outputs(model, [test_rows[t.name] for t in model.inputs])[0]
    np.testing.assert_allclose(keras_out, model.predict(test_rows, verbose=0), atol=1e-7)
    assert len(doc["tests"]) == 3
    for i, (case_in, case_out) in enumerate(fd.test_cases()):
        for coll, x in zip(SEQS, case_in[1:]):
            np.testing.assert_array_equal(x[0], _real(test_rows, coll)[i])
        np.testing.assert_array_equal(case_out[0][0], keras_out[i])
    assert fd.run_tests() < TOL
    # the evaluator on the written file agrees with Keras on other candidates (0, 1, n_max constituents)
    x = _inputs(400, 7)
    got = fd.predict(_fdeep_inputs(x))[0]
    diff = np.abs(got - model.predict(x, verbose=0)).max(axis=1)
    assert diff.max() < TOL, (kind, diff.max())
    counts = {c: x[f"{c}_valid"].sum(axis=1) for c in SEQS}
    assert all({0, 1, SEQS[c][0]} <= set(counts[c][:3].astype(int)) for c in SEQS)


def test_written_layout_is_keras_weights(rnn_model):
    """trainable_params are Keras' get_weights() row-major (frugally-deep's converter layout) and the
    config holds what create_lstm_layer / create_gru_layer read."""
    from taggerflow.fdeep import decode_floats

    _, model = rnn_model
    doc = _doc(model)
    layers = {entry["name"]: entry for entry in doc["architecture"]["config"]["layers"]}
    for layer in model.layers:
        cls = type(layer).__name__
        if cls not in ("LSTM", "GRU"):
            continue
        entry, params = layers[layer.name], doc["trainable_params"][layer.name]
        cfg = layer.get_config()
        assert entry["class_name"] == cls
        want = {"name": layer.name, "units": cfg["units"], "activation": cfg["activation"],
                "recurrent_activation": cfg["recurrent_activation"], "use_bias": cfg["use_bias"],
                "return_sequences": False, "return_state": False}
        if cls == "GRU":
            want["reset_after"] = cfg["reset_after"]
        assert entry["config"] == want
        weights = layer.get_weights()
        assert sorted(params) == sorted(["weights", "recurrent_weights", "bias"][:len(weights)])
        for key, w in zip(("weights", "recurrent_weights", "bias"), weights):
            np.testing.assert_array_equal(decode_floats(params[key]), w.ravel())
        (source,) = [r["config"]["keras_history"][0] for r in entry["inbound_nodes"][0]["args"]]
        assert source == layer.name.rsplit("_", 1)[0]  # the sequence input itself, not the PaddingMask


def test_keras_runs_the_written_graph_on_real_constituents(rnn_model):
    """Keras itself, unmasked, on the written architecture with the written parameters and only the
    real constituents, gives the scores of the masked model over n_max padded slots: the claim the
    variable-length export rests on, checked without our evaluator (rows of >= 1 constituent)."""
    import keras

    from taggerflow.fdeep import decode_floats

    _, model = rnn_model
    doc = _doc(model)
    rebuilt = keras.models.model_from_json(json.dumps(doc["architecture"]))
    for layer in rebuilt.layers:
        p = {k: decode_floats(v) for k, v in doc["trainable_params"].get(layer.name, {}).items()}
        if p:
            ref = model.get_layer(layer.name).get_weights()
            layer.set_weights([p[k].reshape(w.shape) for k, w in zip(("weights", "recurrent_weights", "bias"), ref)]
                              if type(layer).__name__ in ("LSTM", "GRU") else
                              [p["weights"].reshape(ref[0].shape), p["bias"]])
    assert [t.name for t in rebuilt.inputs] == ["candidate", *SEQS]
    x = _inputs(120, 9)
    keep = np.all([x[f"{c}_valid"].sum(axis=1) > 0 for c in SEQS], axis=0)
    ref = model.predict(x, verbose=0)
    real = {c: _real(x, c) for c in SEQS}
    groups: dict = {}
    for i in np.flatnonzero(keep):
        groups.setdefault(tuple(len(real[c][i]) for c in SEQS), []).append(i)
    assert len(groups) > 10
    worst = 0.0
    for rows in groups.values():
        got = rebuilt.predict([x["candidate"][rows]] + [np.stack([real[c][i] for i in rows]) for c in SEQS], verbose=0)
        worst = max(worst, float(np.abs(got - ref[rows]).max()))
    assert worst < TOL


def test_rnn_export_is_deterministic(rnn_model, tmp_path):
    import keras

    from taggerflow.fdeep import keras_to_fdeep, write_fdeep
    from taggerflow.models import save_model

    _, model = rnn_model
    a = write_fdeep(keras_to_fdeep(model, seed=3), tmp_path / "a.json")
    save_model(model, str(tmp_path / "m.keras"))
    b = write_fdeep(keras_to_fdeep(keras.models.load_model(str(tmp_path / "m.keras")), seed=3), tmp_path / "b.json")
    digests = {hashlib.sha256(open(p, "rb").read()).hexdigest() for p in (a, b)}
    assert len(digests) == 1
    assert str(tmp_path) not in open(a).read()
    # the seeded test cases hold 1 .. n_max constituents per sequence
    doc = json.load(open(a))
    assert all(1 <= t["shape"][0] <= SEQS[c][0] for case in doc["tests"] for c, t in zip(SEQS, case["inputs"][1:]))


def test_evaluator_gru_and_lstm_by_hand():
    """One-unit LSTM and GRU (both reset_after settings) computed by hand from the loader's equations."""
    from taggerflow.fdeep import encode_floats

    def doc(cls, config, params, n_in):
        layers = [{"class_name": "InputLayer", "name": "s", "config": {"name": "s", "batch_shape": [None, None, n_in]},
                   "inbound_nodes": []},
                  {"class_name": cls, "name": "r", "config": {"name": "r", "units": 1, **config},
                   "inbound_nodes": [{"args": [{"class_name": "__keras_tensor__", "config": {
                       "shape": [None, None, n_in], "keras_history": ["s", 0, 0]}}], "kwargs": {}}]}]
        return {"architecture": {"class_name": "Functional", "config": {"name": "m", "layers": layers,
                "input_layers": [["s", 0, 0]], "output_layers": [["r", 0, 0]]}}, "image_data_format": "channels_last",
                "input_shapes": [[None, n_in]], "output_shapes": [[1]],
                "trainable_params": {"r": {k: encode_floats(v) for k, v in params.items()}}}

    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    xs = np.array([0.5, -1.0])
    # LSTM: kernel [i f c o] = [1, 2, 3, 4], U = [0.5, 0.5, 0.5, 0.5], bias 0.1 each
    h = c = 0.0
    for x in xs:
        i, f, g, o = (sig(x * 1 + h * 0.5 + 0.1), sig(x * 2 + h * 0.5 + 0.1), np.tanh(x * 3 + h * 0.5 + 0.1),
                      sig(x * 4 + h * 0.5 + 0.1))
        c = f * c + i * g
        h = o * np.tanh(c)
    lstm = FdeepModel(doc("LSTM", {}, {"weights": [[1, 2, 3, 4]], "recurrent_weights": [[0.5] * 4],
                                       "bias": [0.1] * 4}, 1))
    np.testing.assert_allclose(lstm.predict([xs.reshape(1, 2, 1)])[0], [[h]], rtol=1e-7)
    assert lstm.predict([np.zeros((1, 0, 1))])[0].tolist() == [[0.0]]  # no step: the zero state
    # GRU [z r h]: kernel [1, 2, 3], U [0.5, -0.5, 0.25], bias_x [0.1, 0.2, 0.3], bias_h [0.4, 0.5, 0.6]
    for reset_after in (False, True):
        h = 0.0
        for x in xs:
            if reset_after:
                z = sig(x + 0.1 + h * 0.5 + 0.4)
                r = sig(2 * x + 0.2 - h * 0.5 + 0.5)
                m = np.tanh(3 * x + 0.3 + r * (h * 0.25 + 0.6))
            else:
                z = sig(x + 0.1 + h * 0.5)
                r = sig(2 * x + 0.2 - h * 0.5)
                m = np.tanh(3 * x + 0.3 + (r * h) * 0.25)
            h = z * h + (1 - z) * m
        bias = [0.1, 0.2, 0.3] + ([0.4, 0.5, 0.6] if reset_after else [])
        gru = FdeepModel(doc("GRU", {"reset_after": reset_after}, {"weights": [[1, 2, 3]],
                                                                   "recurrent_weights": [[0.5, -0.5, 0.25]],
                                                                   "bias": bias}, 1))
        np.testing.assert_allclose(gru.predict([xs.reshape(1, 2, 1)])[0], [[h]], rtol=1e-7)
        wrong = FdeepModel(doc("GRU", {"reset_after": not reset_after}, {"weights": [[1, 2, 3]],
                                                                         "recurrent_weights": [[0.5, -0.5, 0.25]],
                                                                         "bias": bias}, 1))
        with pytest.raises(ValueError, match="biases"):
            wrong.predict([xs.reshape(1, 2, 1)])


def _refusal_model(case: str):
    import keras

    from taggerflow.models import MaskedSum
    from taggerflow.models_rnn import PaddingMask

    seq, valid = keras.Input((4, 2), name="trk"), keras.Input((4,), name="trk_valid")
    masked = PaddingMask(name="pad")([seq, valid])
    if case == "masking":
        x = keras.layers.LSTM(3, name="rnn")(keras.layers.Masking(0.0, name="mask")(seq))
        return keras.Model(seq, x), r"layer 'mask' \(Masking\): Keras Masking is an identity layer in frugally-deep"
    if case == "padding_to_dense":
        x = keras.layers.Dense(2, name="d")(keras.layers.LSTM(3, name="rnn")(masked))
        y = MaskedSum(name="sum")([keras.layers.Dense(2, name="phi")(masked), valid])
        x = keras.layers.Concatenate(name="cat")([x, y])
        return keras.Model([seq, valid], x), r"layer 'phi' \(Dense\): reads sequence input 'trk' through PaddingMask"
    if case == "sequence_also_summed":
        x = keras.layers.LSTM(3, name="rnn")(masked)
        y = MaskedSum(name="sum")([keras.layers.Dense(2, name="phi")(seq), valid])
        return (keras.Model([seq, valid], keras.layers.Concatenate(name="cat")([x, y])),
                r"layer 'phi' \(Dense\): reads sequence input 'trk' through PaddingMask; only LSTM/GRU")
    if case == "mask_also_summed":
        other = keras.Input((4, 2), name="other")
        x = keras.layers.LSTM(3, name="rnn")(masked)
        y = MaskedSum(name="sum")([keras.layers.Dense(2, name="phi")(other), valid])
        return (keras.Model([seq, valid, other], keras.layers.Concatenate(name="cat")([x, y])),
                r"layer 'sum' \(Dot\): reads input 'trk_valid', the mask of sequence 'trk'")
    if case == "go_backwards":
        return (keras.Model([seq, valid], keras.layers.GRU(3, go_backwards=True, name="rnn")(masked)),
                r"layer 'rnn' \(GRU\): go_backwards=True is not supported")
    if case == "return_state":
        out = keras.layers.LSTM(3, return_state=True, name="rnn")(masked)
        return keras.Model([seq, valid], out[0]), r"layer 'rnn' \(LSTM\): return_state=True is not supported"
    if case == "activation":
        return (keras.Model([seq, valid], keras.layers.LSTM(3, activation="gelu", name="rnn")(masked)),
                r"layer 'rnn' \(LSTM\): activation 'gelu' is not supported by the frugally-deep export of recurrent")
    if case == "initial_state":
        h0 = keras.Input((3,), name="h0")
        return (keras.Model([seq, valid, h0], keras.layers.GRU(3, name="rnn")(masked, initial_state=h0)),
                r"layer 'rnn' \(GRU\): called with a tensor keyword argument 'initial_state'")
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["masking", "padding_to_dense", "sequence_also_summed", "mask_also_summed",
                                  "go_backwards", "return_state", "activation", "initial_state"])
def test_rnn_refusals_name_the_layer(case):
    from taggerflow.fdeep import FdeepConversionError, keras_to_fdeep

    model, match = _refusal_model(case)
    with pytest.raises(FdeepConversionError, match=match) as err:
        keras_to_fdeep(model)
    assert "\n" not in str(err.value)


def test_empty_test_row_is_refused():
    from taggerflow.fdeep import FdeepConversionError, keras_to_fdeep

    model = _hand_model("gru_reset_after", 3)
    x = _inputs(3, 1)  # row 0 has no constituent
    with pytest.raises(FdeepConversionError, match="row 0 has no constituent in sequence 'trk'"):
        keras_to_fdeep(model, x)


# ----------------------------------------------------------------------------------------------
# export glue on real shards, and the task through law


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_export_on_shard_candidates(files_config, shard_and_scaling, tmp_path, cell):
    from taggerflow.export import check_inputs
    from taggerflow.fdeep_export import export_fdeep
    from taggerflow.models import build_model, save_model

    cfg = files_config
    shard, scaling, _ = shard_and_scaling
    seqs = {n: (c.n_max, len(c.variables)) for n, c, _ in cfg.sequences()}
    model = build_model({"type": "rnn", "cell": cell, "rnn_units": 6, "f_layers": [8]},
                        len(cfg.candidate_variables), seqs, len(cfg.class_names), seed=4)
    save_model(model, str(tmp_path / "m.keras"))
    out = {"fdeep": str(tmp_path / "fdeep.json"), "check": str(tmp_path / "check.json")}
    result = export_fdeep(str(tmp_path / "m.keras"), cfg, scaling, [shard], out, log=lambda m: None)
    assert result["passed"] and result["max_abs_diff"] < TOL and result["tests_max_abs_diff"] < TOL
    assert result["n_candidates"] > 100
    text = open(out["fdeep"]).read()
    doc = json.loads(text)
    info = doc["taggerflow"]
    assert info["model_inputs"] == ["candidate", "pfcand"] == FdeepModel(doc).input_names
    seq = info["inputs"][1]
    assert seq["mask"] is None and seq["length"] == "variable" and seq["n_max"] == cfg.collections[0].n_max
    assert "(n_real, n_vars)" in info["note"]
    assert len(doc["tests"]) == 2 and all(case["inputs"][1]["shape"][0] >= 1 for case in doc["tests"])
    # the recipe on raw values gives the real constituents of the training files' padded inputs
    inputs = check_inputs(cfg, [shard], scaling, 50)
    prepared = inputs_from_raw(doc, inputs["raw"])
    from taggerflow.export import keras_inputs

    padded = keras_inputs(inputs, ["pfcand"])
    counts = padded["pfcand_valid"].sum(axis=1).astype(int)
    assert counts.min() < counts.max()
    for i, real in enumerate(prepared["pfcand"]):
        np.testing.assert_allclose(real, padded["pfcand"][i][:counts[i]], atol=1e-6)
    out2 = {"fdeep": str(tmp_path / "again.json"), "check": str(tmp_path / "again_check.json")}
    export_fdeep(str(tmp_path / "m.keras"), cfg, scaling, [shard], out2, log=lambda m: None)
    assert open(out2["fdeep"], "rb").read() == text.encode()


# ConvertFdeep through law on an RNN training (three collections, lstm and gru variants)
def test_convert_fdeep_on_rnn_training_through_law(demo_files, tmp_path):
    from conftest import tiny_raw, write_config
    from test_e2e import _law, _law_env
    from test_rnn import _three_collection_file

    files = {}
    for ds, path in demo_files.items():
        files[ds] = str(tmp_path / f"{ds}_3coll.root")
        _three_collection_file(path, files[ds])
    raw = tiny_raw()
    del raw["demo"]
    raw["name"] = "fdeep_rnn"
    raw["inputs"]["datasets"] = {ds: {"files": [p]} for ds, p in files.items()}
    colls = raw["features"]["collections"]
    colls["trk"] = {"n_max": 5, "sort_by": "abs(d0_sig)", "variables": {
        "pt_frac": {"expression": "pt / cand_pt", "scaling": "linear", "limits": [0.0, 1.0]},
        "d0_sig": {"scaling": "normal", "limits": [-5, 5]}}}
    colls["neu"] = {"n_max": 3, "sort_by": "pt", "variables": {
        "pt_frac": {"expression": "pt / cand_pt", "scaling": "linear", "limits": [0.0, 1.0]}}}
    raw["training"]["epochs"] = 1
    raw["training"]["variants"] = [
        {"name": "lstm", "model": {"type": "rnn", "cell": "lstm", "rnn_units": 4, "f_layers": [8]}},
        {"name": "gru", "model": {"type": "rnn", "cell": "gru", "rnn_units": 3, "f_layers": [8]}}]
    raw["export"]["n_check"] = 300
    config = write_config(raw, tmp_path)
    env = _law_env(tmp_path)
    _law(["index", "-q"], env)
    _law(["run", "ConvertFdeep", "--version", "rnn", "--config", config, "--workflow", "local"], env)
    for variant in ("lstm", "gru"):
        (path,) = glob.glob(str(tmp_path / "data" / "ConvertFdeep" / "rnn" / "*" / variant / "fdeep.json"))
        doc = json.load(open(path))
        fd = FdeepModel(doc)
        assert fd.input_names == ["candidate", "pfcand", "trk", "neu"]
        assert doc["input_shapes"][1:] == [[None, 9], [None, 2], [None, 1]]
        classes = [entry["class_name"] for entry in doc["architecture"]["config"]["layers"]]
        assert classes.count(variant.upper()) == 3
        assert fd.run_tests() < TOL and len(doc["tests"]) == 2
        check = json.load(open(os.path.join(os.path.dirname(path), "fdeep_check.json")))["fdeep"]
        assert check["passed"] and check["max_abs_diff"] < TOL and check["n_candidates"] > 100, check
        assert str(tmp_path) not in open(path).read()
