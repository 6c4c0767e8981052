"""The rnn model family (one LSTM/GRU per constituent collection): masking, lwtnn and ONNX export."""

from __future__ import annotations

import json

import numpy as np
import pytest

SEQS = {"trk": (7, 3), "clu": (4, 2)}
N_CAND = 5


def _model(cell: str, seed: int = 1, **extra):
    from taggerflow.models import build_model

    cfg = {"type": "rnn", "cell": cell, "rnn_units": 6, "f_layers": [8], "activation": "tanh"} | extra
    return build_model(cfg, N_CAND, SEQS, 3, seed=seed)


def _inputs(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Scaled inputs; real constituents first, random counts including zero and n_max."""
    rng = np.random.default_rng(seed)
    out = {"candidate": rng.normal(size=(n, N_CAND)).astype(np.float32)}
    for coll, (n_max, n_vars) in SEQS.items():
        counts = rng.integers(0, n_max + 1, size=n)
        counts[:2] = [0, n_max]
        valid = (np.arange(n_max)[None, :] < counts[:, None]).astype(np.float32)
        out[coll] = (rng.normal(size=(n, n_max, n_vars)) * 2).astype(np.float32)
        out[f"{coll}_valid"] = valid
    return out


def _predict(model, inputs):
    return np.asarray(model.predict({k: v for k, v in inputs.items()}, verbose=0, batch_size=4096), dtype=np.float64)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_padding_changes_nothing(cell):
    from taggerflow.models import build_model

    model = _model(cell)
    x = _inputs(300)
    ref = _predict(model, x)
    # padded slots holding anything (large values, inf, NaN) give identical outputs
    y = {k: v.copy() for k, v in x.items()}
    for coll in SEQS:
        pad = y[f"{coll}_valid"] < 0.5
        y[coll][pad] = np.array([1e30, -np.inf, np.nan][: SEQS[coll][1]] + [7.0] * 3)[: SEQS[coll][1]]
    np.testing.assert_array_equal(_predict(model, y), ref)
    # appending padding rows: the same weights in a model with larger n_max give identical outputs
    longer = {c: (n + 3, v) for c, (n, v) in SEQS.items()}
    model2 = build_model(dict(type="rnn", cell=cell, rnn_units=6, f_layers=[8], activation="tanh"), N_CAND,
                         longer, 3, seed=1)
    model2.set_weights(model.get_weights())
    z = dict(x)
    for coll, (n_max, n_vars) in SEQS.items():
        z[coll] = np.concatenate([x[coll], np.full((300, 3, n_vars), 5.0, np.float32)], axis=1)
        z[f"{coll}_valid"] = np.concatenate([x[f"{coll}_valid"], np.zeros((300, 3), np.float32)], axis=1)
    np.testing.assert_allclose(_predict(model2, z), ref, rtol=0, atol=1e-6)
    # and the constituents do matter: changing a real one changes the output
    w = {k: v.copy() for k, v in x.items()}
    w["trk"][1, 0] += 1.0
    assert np.abs(_predict(model, w)[1] - ref[1]).max() > 1e-4


def test_builds_lstm_and_gru_per_collection():
    lstm = _model("lstm", rnn_units={"trk": 5, "clu": 3})
    gru = _model("gru")
    kinds = {l.name: (type(l).__name__, l.units) for l in lstm.layers if hasattr(l, "units") and hasattr(l, "cell")}
    assert kinds == {"trk_lstm": ("LSTM", 5), "clu_lstm": ("LSTM", 3)}
    grus = [l for l in gru.layers if type(l).__name__ == "GRU"]
    assert [l.name for l in grus] == ["trk_gru", "clu_gru"] and all(not l.cell.reset_after for l in grus)
    assert [t.name for t in lstm.inputs] == ["candidate", "trk", "trk_valid", "clu", "clu_valid"]
    assert lstm.get_layer("concatenate").output.shape[-1] == 5 + 3 + N_CAND


def test_config_errors():
    from taggerflow.models import parse_model_config

    with pytest.raises(ValueError, match="'cell'"):
        parse_model_config({"type": "rnn", "cell": "rnn"})
    with pytest.raises(ValueError, match="'rnn_units'"):
        parse_model_config({"type": "rnn", "rnn_units": 0})
    with pytest.raises(ValueError, match="phi_layers"):
        parse_model_config({"type": "rnn", "phi_layers": [0]})
    with pytest.raises(ValueError, match="unknown key\\(s\\) \\['n_heads'\\]"):
        parse_model_config({"type": "rnn", "n_heads": 2})
    # a variant inherits the other families' keys from the base section: ignored
    assert parse_model_config({"type": "rnn", "phi_layers": [4]})["phi_layers"] == []
    assert parse_model_config({"type": "dense", "cell": "gru", "rnn_units": 4})["type"] == "dense"
    with pytest.raises(ValueError, match="missing \\['clu'\\]"):
        _model("lstm", rnn_units={"trk": 5})
    cfg = parse_model_config({"type": "rnn", "f_layers": [4]})
    assert (cfg["cell"], cfg["rnn_units"], cfg["f_layers"]) == ("lstm", 32, [4])


def _variables(n: int, prefix: str) -> list[dict]:
    return [{"name": f"{prefix}{i}", "offset": 0.0, "scale": 1.0} for i in range(n)]


def _lwtnn(model):
    from taggerflow.lwtnn import keras_to_lwtnn

    return keras_to_lwtnn(model, _variables(N_CAND, "c"),
                          {c: _variables(v, f"{c}_") for c, (_, v) in SEQS.items()}, ["a", "b", "c"])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_lwtnn_export_agrees_with_keras(cell):
    from taggerflow.lwtnn_eval import LwtnnGraph, flatten_padded

    model = _model(cell, seed=7)
    doc = json.loads(json.dumps(_lwtnn(model)))  # through JSON text, as lwtnn reads it
    seq_nodes = [n for n in doc["nodes"] if n["type"] == "sequence"]
    assert len(seq_nodes) == 2
    layer = doc["layers"][seq_nodes[0]["layer_index"]]
    gates = "ifco" if cell == "lstm" else "zrh"
    assert layer["architecture"] == cell and sorted(layer["components"]) == sorted(gates)
    assert layer["activation"] == "tanh" and layer["inner_activation"] == "sigmoid"
    # the layout of lwtnn's converter: per gate kernel[:, block].T row-major, U likewise, bias[block]
    keras_layer = model.get_layer(f"trk_{cell}")
    kernel, rec, bias = (np.asarray(w, np.float64) for w in keras_layer.get_weights())
    u = rec.shape[0]
    for k, g in enumerate(gates):
        np.testing.assert_array_equal(layer["components"][g]["weights"], kernel[:, k * u:(k + 1) * u].T.ravel())
        np.testing.assert_array_equal(layer["components"][g]["U"], rec[:, k * u:(k + 1) * u].T.ravel())
        np.testing.assert_array_equal(layer["components"][g]["bias"], bias[k * u:(k + 1) * u])
    x = _inputs(400, seed=3)
    ref = _predict(model, x)
    graph = LwtnnGraph(doc)
    seqs = {c: flatten_padded(x[c], x[f"{c}_valid"]) for c in SEQS}
    got = graph.compute_batch({"candidate": x["candidate"]}, seqs)
    assert np.abs(got - ref).max() < 1e-6
    # one candidate at a time, from name maps (zero constituents as empty vectors), as lwtnn is called
    for k in (0, 1, 2):
        inputs = {"candidate": {f"c{i}": float(x["candidate"][k, i]) for i in range(N_CAND)}}
        sequences = {}
        for c, (n_max, n_vars) in SEQS.items():
            real = x[c][k][x[f"{c}_valid"][k] > 0.5]
            sequences[c] = {f"{c}_{i}": real[:, i].tolist() for i in range(n_vars)}
        one = graph.compute(inputs, sequences)
        assert max(abs(one[lab] - ref[k, j]) for j, lab in enumerate("abc")) < 1e-6


def test_lwtnn_refuses_what_it_cannot_evaluate():
    import keras

    from taggerflow.lwtnn import LwtnnConversionError, keras_to_lwtnn
    from taggerflow.models_rnn import PaddingMask

    seq, valid = keras.Input((4, 2), name="trk"), keras.Input((4,), name="trk_valid")
    masked = PaddingMask()([seq, valid])
    for layer, x, message in [(keras.layers.GRU(3), masked, "reset_after=True"),
                              (keras.layers.LSTM(3), seq, "through PaddingMask")]:
        out = keras.layers.Dense(2, activation="softmax")(layer(x))
        model = keras.Model([seq, valid], out)
        with pytest.raises(LwtnnConversionError, match=message):
            keras_to_lwtnn(model, {}, {"trk": _variables(2, "t")}, ["a", "b"])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_onnx_export_agrees_with_keras(cell, tmp_path):
    from taggerflow.onnx_export import export_onnx, onnx_scores

    model = _model(cell, seed=11)
    path = str(tmp_path / "m.onnx")
    export_onnx(model, path, check_tolerance=1e-5)
    x = _inputs(300, seed=5)
    for coll in SEQS:  # padding holding junk must not matter in ONNX either
        x[coll][x[f"{coll}_valid"] < 0.5] = 1e20
    got = np.asarray(onnx_scores(path, x), dtype=np.float64)
    ref = _predict(model, x)
    assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-6


# ----------------------------------------------------------------------------------------------
# three constituent collections through every stage, with law


def _three_collection_file(src: str, dst: str) -> None:
    """The demo file with two more collections made of its constituents: ``trk`` (the charged ones)
    and ``neu`` (the neutral ones), beside ``pfcand``; real ROOT files for the pipeline to read."""
    import awkward as ak
    import uproot

    with uproot.open(src) as f:
        arrays = f["candidates"].arrays()
    fields = [k[len("pfcand_"):] for k in arrays.fields if k.startswith("pfcand_")]
    pf = ak.zip({k: arrays[f"pfcand_{k}"] for k in fields})
    data = {k: arrays[k] for k in arrays.fields if not k.startswith("pfcand_") and k != "npfcand"}
    data |= {"pfcand": pf, "trk": pf[pf.charge != 0], "neu": pf[pf.charge == 0]}
    types = {k: v.type.content for k, v in data.items() if k not in ("pfcand", "trk", "neu")}
    record = ", ".join(f"{k}: {pf[k].type.content.content}" for k in fields)
    types |= {c: f"var * {{{record}}}" for c in ("pfcand", "trk", "neu")}  # -> <c>_<field> branches, n<c>
    with uproot.recreate(dst) as f:
        f.mktree("candidates", types).extend(data)


def test_three_collections_law_training_and_export(demo_files, tmp_path):
    import glob
    import os

    import h5py

    from conftest import tiny_raw, write_config
    from test_e2e import _law, _law_env

    files = {}
    for ds, path in demo_files.items():
        files[ds] = str(tmp_path / f"{ds}_3coll.root")
        _three_collection_file(path, files[ds])
    raw = tiny_raw()
    del raw["demo"]
    raw["name"] = "three"
    raw["inputs"]["datasets"] = {ds: {"files": [p]} for ds, p in files.items()}
    colls = raw["features"]["collections"]
    colls["trk"] = {"n_max": 5, "sort_by": "abs(d0_sig)", "variables": {
        "pt_frac": {"expression": "pt / cand_pt", "scaling": "linear", "limits": [0.0, 1.0]},
        "d0_sig": {"scaling": "normal", "limits": [-5, 5]}, "charge": {"scaling": "categorical"}}}
    colls["neu"] = {"n_max": 3, "sort_by": "pt", "variables": {
        "pt_frac": {"expression": "pt / cand_pt", "scaling": "linear", "limits": [0.0, 1.0]},
        "deta": {"scaling": "normal", "limits": [-5, 5]}}}
    raw["training"]["epochs"] = 6
    raw["training"]["batch_size"] = 64  # ~700 training candidates: enough steps to learn something
    raw["training"]["variants"] = [
        {"name": "lstm", "model": {"type": "rnn", "cell": "lstm", "rnn_units": {"pfcand": 8, "trk": 4, "neu": 3},
                                   "f_layers": [16]}},
        {"name": "gru", "model": {"type": "rnn", "cell": "gru", "rnn_units": 6, "f_layers": [16]}}]
    raw["export"]["n_check"] = 300
    config = write_config(raw, tmp_path)
    env = _law_env(tmp_path)
    _law(["index", "-q"], env)
    _law(["run", "ConvertLwtnn", "--version", "rnn", "--config", config, "--workflow", "local"], env)
    data = tmp_path / "data"

    def one(pattern: str) -> str:
        found = glob.glob(str(data / pattern), recursive=True)
        assert len(found) == 1, (pattern, found)
        return found[0]

    # the training files hold every collection with its own n_max, sorted as configured
    train = sorted(glob.glob(str(data / "WriteTrainSample/rnn/**/*.h5"), recursive=True))
    assert train
    with h5py.File(train[0]) as h:
        shapes = {c: h[c]["inputs"].shape[1:] for c in ("pfcand", "trk", "neu") if c in h}
        assert shapes == {"pfcand": (16, 9), "trk": (5, 3), "neu": (3, 2)}, list(h)
    for variant in ("lstm", "gru"):
        lw = json.load(open(one(f"ConvertLwtnn/rnn/**/{variant}/lwtnn.json")))
        assert [s["name"] for s in lw["input_sequences"]] == ["pfcand", "trk", "neu"]
        archs = [lw["layers"][n["layer_index"]]["architecture"] for n in lw["nodes"] if n["type"] == "sequence"]
        assert archs == [variant] * 3
        check = json.load(open(one(f"ConvertLwtnn/rnn/**/{variant}/export_check.json")))
        assert check["lwtnn"]["passed"] and check["lwtnn"]["max_abs_diff"] < 1e-6, check["lwtnn"]
        assert check["lwtnn"]["n_candidates"] > 100
        assert check["onnx"]["passed"] and check["onnx"]["max_abs_diff"] < 1e-5, check["onnx"]
        summary = json.load(open(one(f"Training/rnn/**/{variant}/summary.json")))
        assert summary["test"]["accuracy"] > 0.7  # chance is 0.25 (measured 0.88 lstm, 0.91 gru)
    assert os.path.exists(one("ConvertLwtnn/rnn/**/lstm/model_card.json"))
