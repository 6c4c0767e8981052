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
        parse_model_config({"type": "rnn", "phi_layers": [4]})
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
