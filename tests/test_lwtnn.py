"""Tests of the lwtnn export (taggerflow.lwtnn) and of the independent evaluator (taggerflow.lwtnn_eval)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from taggerflow.lwtnn_eval import LwtnnGraph, LwtnnSequential, activation_function, flatten_padded, segment_sum

TOL = 1e-5
# Keras' own .keras saving trips a numpy 2 DeprecationWarning inside TensorFlow; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")
LABELS = ["tau", "e", "mu", "jet"]


# ----------------------------------------------------------------------------------------------
# evaluator alone (no Keras needed)


def test_evaluator_and_writer_import_without_keras():
    code = ("import sys, taggerflow.lwtnn_eval, taggerflow.lwtnn; "
            "bad = [m for m in ('keras', 'tensorflow') if m in sys.modules]; assert not bad, bad")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_evaluator_sequential_handcheck():
    doc = {
        "inputs": [{"name": "x", "offset": 1.0, "scale": 2.0}, {"name": "y", "offset": -1.0, "scale": 0.5}],
        "layers": [{"architecture": "dense", "weights": [1, 2, 3, 4, 5, 6], "bias": [-7, -0.5, "1"],
                    "activation": "rectified"}],
        "outputs": ["a", "b", "c"],
    }
    net = LwtnnSequential(doc)
    # x' = (1 + 1) * 2 = 4, y' = (3 - 1) * 0.5 = 1; W x' = [6, 16, 26]; + b = [-1, 15.5, 27]; relu
    assert net.compute({"y": 3.0, "x": 1.0, "unused": 9.0}) == {"a": 0.0, "b": 15.5, "c": 27.0}
    np.testing.assert_array_equal(net.compute_batch([[1.0, 3.0], [-1.0, 1.0]]), [[0.0, 15.5, 27.0], [0.0, 0.0, 1.0]])
    with pytest.raises(KeyError, match="'y'"):
        net.compute({"x": 1.0})


def graph_doc() -> dict:
    """jet (1 var) + trk sequence (2 vars) -> sum -> concatenate [sum, jet] -> dense softmax.
    Nodes deliberately out of dependency order (lwtnn allows any order)."""
    return {
        "inputs": [{"name": "jet", "variables": [{"name": "x", "offset": 0.0, "scale": 2.0}]}],
        "input_sequences": [{"name": "trk", "variables": [{"name": "a", "offset": 1.0, "scale": 1.0},
                                                          {"name": "b", "offset": 0.0, "scale": 2.0}]}],
        "nodes": [
            {"type": "feed_forward", "sources": [3], "layer_index": 0},
            {"type": "input_sequence", "sources": [0], "size": 2},
            {"type": "sum", "sources": [1]},
            {"type": "concatenate", "sources": [2, 4]},
            {"type": "input", "sources": [0], "size": 1},
        ],
        "layers": [{"architecture": "dense", "weights": [1, 0, 0, 0, 1, -1], "bias": [0, 0], "activation": "softmax"}],
        "outputs": {"flavour": {"labels": ["p0", "p1"], "node_index": 0}},
    }


def test_evaluator_graph_handcheck():
    g = LwtnnGraph(graph_doc())
    # a' = [2, 3], b' = [6, -2] -> sum [5, 4]; x' = 1 -> [5, 4, 1] -> z = [5, 3]
    out = g.compute({"jet": {"x": 0.5}}, {"trk": {"a": [1.0, 2.0], "b": [3.0, -1.0]}})
    p0 = 1.0 / (1.0 + math.exp(-2.0))
    assert out["p0"] == pytest.approx(p0, abs=1e-15) and out["p1"] == pytest.approx(1 - p0, abs=1e-15)
    # zero constituents: sum = [0, 0] -> [0, 0, 1] -> z = [0, -1]
    empty = g.compute({"jet": {"x": 0.5}}, {"trk": {"a": [], "b": []}})
    assert empty["p0"] == pytest.approx(1.0 / (1.0 + math.exp(-1.0)), abs=1e-15)
    batch = g.compute_batch({"jet": [[0.5], [0.5]]}, {"trk": (np.array([[1.0, 3.0], [2.0, -1.0]]), np.array([2, 0]))})
    np.testing.assert_allclose(batch, [[out["p0"], out["p1"]], [empty["p0"], empty["p1"]]], rtol=0, atol=1e-15)
    with pytest.raises(KeyError, match="'b'"):
        g.compute({"jet": {"x": 0.5}}, {"trk": {"a": [1.0]}})
    with pytest.raises(KeyError, match="trk"):
        g.compute({"jet": {"x": 0.5}}, {})
    with pytest.raises(ValueError, match="Empty input map"):  # lwtnn's refusal: zero constituents = empty vectors
        g.compute({"jet": {"x": 0.5}}, {"trk": {}})
    with pytest.raises(ValueError, match="counts"):
        g.compute_batch({"jet": [[0.5], [0.5]]}, {"trk": (np.zeros((3, 2)), np.array([2, 0]))})


def test_evaluator_with_non_finite_raw_inputs():
    """Like lwtnn, the evaluator propagates a raw NaN or inf; through the input recipe (clamp, then
    non-finite -> default) the candidate's +inf sits at its bound, a constituent's NaN on an
    unbounded variable and -inf on a bounded one at the default and the bound."""
    from taggerflow.scaling import apply_raw_recipe

    g = LwtnnGraph(graph_doc())
    raw_jet, raw_a, raw_b = np.array([[np.inf]]), np.array([[np.nan], [2.0]]), np.array([[-np.inf], [1.0]])
    as_given = g.compute({"jet": {"x": 0.3}}, {"trk": {"a": raw_a[:, 0], "b": [3.0, -1.0]}})
    assert all(np.isnan(v) for v in as_given.values())
    x = apply_raw_recipe(raw_jet, -1.0, 1.0, 0.25)
    trk = apply_raw_recipe(np.hstack([raw_a, raw_b]), [-np.inf, -2.0], [np.inf, 2.0], [3.0, 0.0])
    np.testing.assert_array_equal(x, [[1.0]])
    np.testing.assert_array_equal(trk, [[3.0, -2.0], [2.0, 1.0]])
    out = g.compute({"jet": {"x": x[0, 0]}}, {"trk": {"a": trk[:, 0], "b": trk[:, 1]}})
    # a' = [4, 3], b' = [-4, 2] -> sum [7, -2]; x' = 2 -> [7, -2, 2] -> z = [7, -4]
    p0 = 1.0 / (1.0 + math.exp(-11.0))
    assert out["p0"] == pytest.approx(p0, abs=1e-15) and out["p1"] == pytest.approx(1 - p0, abs=1e-15)


def test_evaluator_rejects_what_lwtnn_would_get_wrong():
    doc = graph_doc()
    doc["layers"][0]["activation"] = "leakyrelu"     # plain string: alpha = NaN in lwtnn
    with pytest.raises(ValueError, match="leakyrelu"):
        LwtnnGraph(doc)
    doc = graph_doc()
    del doc["layers"][0]["activation"]
    with pytest.raises(ValueError, match="activation"):
        LwtnnGraph(doc)
    doc = graph_doc()
    doc["layers"][0]["activation"] = "gelu"
    with pytest.raises(ValueError, match="gelu"):
        LwtnnGraph(doc)
    doc = graph_doc()
    del doc["input_sequences"]
    with pytest.raises(ValueError, match="input_sequences"):
        LwtnnGraph(doc)
    doc = graph_doc()
    doc["nodes"][3]["sources"] = [0, 4]              # cycle
    with pytest.raises(ValueError, match="cycle"):
        LwtnnGraph(doc)


def test_activation_formulas():
    x = np.array([-40.0, -30.5, -1.0, 0.0, 2.0, 31.0])
    sig = activation_function("sigmoid")(x)
    assert sig[0] == 0.0 and sig[1] == 0.0 and sig[-1] == 1.0 and sig[3] == 0.5
    assert sig[2] == 1.0 / (1.0 + math.exp(1.0))
    np.testing.assert_array_equal(activation_function("hard_sigmoid")(x), [0, 0, 0.3, 0.5, 0.9, 1.0])
    np.testing.assert_array_equal(activation_function("rectified")(x), [0, 0, 0, 0, 2, 31])
    np.testing.assert_array_equal(activation_function({"function": "leakyrelu", "alpha": 0.5})(x),
                                  [-20, -15.25, -0.5, 0, 2, 31])
    np.testing.assert_allclose(activation_function("elu")(x), np.where(x >= 0, x, np.exp(x) - 1), rtol=1e-15)
    np.testing.assert_allclose(activation_function({"function": "elu", "alpha": 2.0})(x[2:3]), [2 * (math.exp(-1) - 1)])
    sw = activation_function({"function": "swish", "alpha": 1.0})(x)
    assert sw[0] == 0.0 and sw[-1] == 31.0 and sw[2] == pytest.approx(-1.0 / (1.0 + math.e), rel=1e-15)
    np.testing.assert_allclose(activation_function("softmax")(np.array([1000.0, 1000.0, -math.inf])), [0.5, 0.5, 0.0])
    np.testing.assert_array_equal(activation_function("abs")(x[:3]), [40.0, 30.5, 1.0])
    with pytest.raises(ValueError, match="swish"):
        activation_function("swish")


def test_segment_sum_and_flatten_padded():
    values = np.arange(12, dtype=float).reshape(6, 2)
    np.testing.assert_array_equal(segment_sum(values, [0, 2, 0, 3, 1, 0]),
                                  [[0, 0], [2, 4], [0, 0], [18, 21], [10, 11], [0, 0]])
    np.testing.assert_array_equal(segment_sum(np.zeros((0, 2)), [0, 0]), np.zeros((2, 2)))
    padded = np.arange(12, dtype=float).reshape(2, 3, 2)
    flat, counts = flatten_padded(padded, [[1, 0, 1], [0, 0, 0]])
    np.testing.assert_array_equal(flat, [[0, 1], [4, 5]])
    np.testing.assert_array_equal(counts, [2, 0])


def test_evaluator_maxout_and_highway_handcheck():
    inputs = [{"name": "x", "offset": 0.0, "scale": 1.0}, {"name": "y", "offset": 0.0, "scale": 1.0}]
    maxout = {"architecture": "maxout", "sublayers": [
        {"weights": [1, 0, 0, 1], "bias": [0, 0]},
        {"weights": [0, 1, 1, 0], "bias": [0.5, -3]}]}
    highway = {"architecture": "highway", "activation": "linear", "components": {
        "t": {"weights": [2, 0, 0, 2], "bias": [0, 1]},
        "carry": {"weights": [0, 0, 0, 0], "bias": [0, 40]}}}
    net = LwtnnSequential({"inputs": inputs, "layers": [maxout, highway], "outputs": ["a", "b"]})
    # maxout of (x, y) = (1, 2): max([1, 2], [2.5, -2]) = [2.5, 2]
    # highway: carry c = sigmoid([0, 40]) = [0.5, 1]; t = [5, 5]; y = c t + (1 - c) x = [3.75, 5]
    assert net.compute({"x": 1.0, "y": 2.0}) == {"a": 3.75, "b": 5.0}


# ----------------------------------------------------------------------------------------------
# conversion (Keras)

import keras  # noqa: E402

from taggerflow.lwtnn import (  # noqa: E402
    LwtnnConversionError, keras_to_lwtnn, keras_to_lwtnn_sequential, write_lwtnn)
from taggerflow.models import MaskedSum, build_model  # noqa: E402


def randomize(model, seed):
    rng = np.random.default_rng(seed)
    for w in model.weights:
        shape = tuple(w.shape)
        if "moving_variance" in w.path:
            w.assign(rng.uniform(0.5, 2.0, shape))
        elif "gamma" in w.path:
            w.assign(rng.uniform(0.5, 1.5, shape))
        else:
            w.assign(rng.normal(0.0, 0.6, shape))


def make_variables(rng, prefix, n):
    return [{"name": f"{prefix}{i}", "offset": float(rng.normal(0, 3)), "scale": float(rng.uniform(0.2, 3.0)),
             "default": float(i)} for i in range(n)]


def keras_inputs(variables):
    return np.array([v["offset"] for v in variables]), np.array([v["scale"] for v in variables])


def compare(model, doc, cand_vars, seq_vars, seqs, names, n=64, seed=0):
    """Random raw inputs; Keras gets (x + offset) * scale padded with the mask (garbage in the pads),
    lwtnn gets the raw real constituents. Returns (max |keras - lwtnn|, graph, raw inputs)."""
    rng = np.random.default_rng(seed)
    graph = LwtnnGraph(json.loads(json.dumps(doc)))
    cand_raw = rng.normal(size=(n, len(cand_vars))) * 2 - 1
    off, sc = keras_inputs(cand_vars)
    k_in = [((cand_raw + off) * sc).astype(np.float32)]
    batch = {}
    for coll, (n_max, n_vars) in seqs.items():
        counts = rng.integers(0, n_max + 1, n)
        counts[:3] = [0, n_max, 1]
        raw = rng.normal(size=(n, n_max, n_vars)) * 2
        valid = (np.arange(n_max)[None, :] < counts[:, None]).astype(np.float32)
        off, sc = keras_inputs(seq_vars[coll])
        scaled = (raw + off) * sc
        scaled[valid == 0] = rng.normal(0, 1e3, size=scaled[valid == 0].shape)
        k_in += [scaled.astype(np.float32), valid]
        batch[names.get(coll, coll)] = flatten_padded(raw, valid)
    if not seqs:
        k_in = k_in[0]
    k_out = model.predict(k_in, verbose=0, batch_size=n).astype(np.float64)
    l_out = graph.compute_batch({"candidate": cand_raw}, batch)
    return np.abs(k_out - l_out).max(), graph, cand_raw, batch


DEEPSETS_VARIANTS = {
    "relu": {"type": "deepsets", "phi_layers": [8, 8], "f_layers": [8, 6]},
    "bn_leaky_relu": {"type": "deepsets", "phi_layers": [8, 8], "f_layers": [8], "batch_norm": True,
                      "activation": "leaky_relu", "alpha": 0.1, "dropout": 0.1},
    "swish": {"type": "deepsets", "phi_layers": [8], "f_layers": [8], "activation": "swish"},
    "bn_elu_tanh": {"type": "deepsets", "phi_layers": [6], "f_layers": [6], "activation": "elu", "alpha": 0.7,
                    "batch_norm": True},
}


@pytest.mark.parametrize("name", list(DEEPSETS_VARIANTS))
def test_deepsets_matches_keras(name):
    cfg = DEEPSETS_VARIANTS[name]
    seqs = {"pfcand": (8, 4), "sv": (3, 2)}
    model = build_model(cfg, 3, seqs, 4, seed=1)
    randomize(model, seed=2)
    rng = np.random.default_rng(3)
    cand_vars = make_variables(rng, "c", 3)
    seq_vars = {"pfcand": make_variables(rng, "p", 4), "sv": make_variables(rng, "s", 2),
                "unused_collection": make_variables(rng, "u", 1)}
    names = {"pfcand": "pf_node"}
    doc = keras_to_lwtnn(model, cand_vars, seq_vars, LABELS, sequence_names=names)
    assert [s["name"] for s in doc["input_sequences"]] == ["pf_node", "sv"]
    assert "dropout" not in json.dumps(doc)
    diff, graph, cand_raw, batch = compare(model, doc, cand_vars, seq_vars, seqs, names)
    print(f"[{name}] max |keras - lwtnn| = {diff:.3g}")
    assert diff <= TOL
    # compute() (name-keyed, one candidate, lwtnn's own way) agrees with compute_batch()
    full = graph.compute_batch({"candidate": cand_raw}, batch)
    starts = {k: np.concatenate([[0], np.cumsum(c)]) for k, (_, c) in batch.items()}
    for i in (0, 1, 2, 7):
        inputs = {"candidate": {v["name"]: cand_raw[i, j] for j, v in enumerate(cand_vars)}}
        sequences = {}
        for coll, node in (("pfcand", "pf_node"), ("sv", "sv")):
            flat, _ = batch[node]
            rows = flat[starts[node][i]:starts[node][i + 1]]
            sequences[node] = {v["name"]: rows[:, j] for j, v in enumerate(seq_vars[coll])}
        one = graph.compute(inputs, sequences)
        assert list(one) == LABELS
        np.testing.assert_allclose(list(one.values()), full[i], rtol=0, atol=1e-12)


def test_dense_model_sequential_and_graph_match_keras():
    model = build_model({"type": "dense", "f_layers": [8, 8], "batch_norm": True, "activation": "tanh"}, 5, {}, 4,
                        seed=0)
    randomize(model, seed=4)
    rng = np.random.default_rng(5)
    variables = make_variables(rng, "v", 5)
    seq = keras_to_lwtnn_sequential(model, variables, LABELS, miscellaneous={"version": "1"})
    assert set(seq) == {"inputs", "layers", "outputs", "defaults", "miscellaneous"}
    assert seq["outputs"] == LABELS and seq["defaults"] == {f"v{i}": float(i) for i in range(5)}
    assert [layer["architecture"] for layer in seq["layers"]] == ["dense", "normalization", "dense"] * 2 + ["dense"]
    net = LwtnnSequential(json.loads(json.dumps(seq)))
    raw = rng.normal(size=(50, 5)) * 3
    off, sc = keras_inputs(variables)
    k_out = model.predict(((raw + off) * sc).astype(np.float32), verbose=0).astype(np.float64)
    diff_seq = np.abs(net.compute_batch(raw) - k_out).max()
    graph_doc_ = keras_to_lwtnn(model, variables, {"pfcand": []}, LABELS)
    assert graph_doc_["input_sequences"] == []
    diff_graph, *_ = compare(model, graph_doc_, variables, {}, {}, {}, seed=6)
    print(f"[dense] max |keras - lwtnn| sequential = {diff_seq:.3g}, graph = {diff_graph:.3g}")
    assert diff_seq <= TOL and diff_graph <= TOL
    one = net.compute({v["name"]: raw[3, j] for j, v in enumerate(variables)})
    np.testing.assert_allclose(list(one.values()), net.compute_batch(raw)[3], rtol=0, atol=1e-12)


def test_other_keras_layers_match_keras():
    """ReLU/LeakyReLU/ELU/Softmax/Activation layers, BatchNormalization without center/scale, Add."""
    L = keras.layers
    cand = keras.Input((3,), name="candidate")
    seq = keras.Input((5, 2), name="pfcand")
    valid = keras.Input((5,), name="pfcand_valid")
    s = L.Dense(4, name="td")(seq)
    s = L.BatchNormalization(center=False, scale=False, name="bn_seq")(s, mask=valid)
    s = L.Activation("tanh")(L.ReLU()(s))
    p = MaskedSum()([s, valid])
    c = L.LeakyReLU(negative_slope=0.3)(L.BatchNormalization(scale=False)(L.Dense(4)(cand)))
    a = L.ELU(alpha=0.5)(L.Add()([p, c]))
    x = L.Dense(3, activation="sigmoid")(L.Concatenate()([a, cand]))
    model = keras.Model([cand, seq, valid], L.Softmax()(L.Dense(4)(x)))
    randomize(model, seed=11)
    rng = np.random.default_rng(12)
    cand_vars = make_variables(rng, "c", 3)
    seq_vars = {"pfcand": make_variables(rng, "p", 2)}
    doc = keras_to_lwtnn(model, cand_vars, seq_vars, LABELS)
    archs = [layer["architecture"] for layer in doc["layers"]]
    assert archs.count("normalization") == 2 and len(doc["layers"]) == 11
    activations = [json.dumps(layer.get("activation")) for layer in doc["layers"]]
    for expected in ('"rectified"', '"tanh"', '{"function": "leakyrelu", "alpha": 0.3',
                     '{"function": "elu", "alpha": 0.5}', '"sigmoid"', '"softmax"'):
        assert any(a.startswith(expected) for a in activations), expected
    assert [n["type"] for n in doc["nodes"]].count("add") == 1
    diff, *_ = compare(model, doc, cand_vars, seq_vars, {"pfcand": (5, 2)}, {}, seed=13)
    print(f"[other layers] max |keras - lwtnn| = {diff:.3g}")
    assert diff <= TOL


def golden_model():
    model = build_model({"type": "deepsets", "phi_layers": [3], "f_layers": [2]}, 2, {"pfcand": (4, 2)}, 2)
    f32 = lambda v: np.array(v, dtype=np.float32)  # noqa: E731  (dyadic values: exact in float32)
    model.get_layer("pfcand_phi0").set_weights([f32([[0.5, -0.25, 1.0], [0.125, 0.75, -0.5]]),
                                                f32([0.0625, -0.125, 0.25])])
    model.get_layer("f0").set_weights([f32([[0.5, -0.5], [0.25, 0.25], [-0.75, 1.0], [1.0, 0.0], [0.0, -1.0]]),
                                       f32([0.5, -0.25])])
    model.get_layer("output").set_weights([f32([[1.0, -1.0], [0.5, 0.25]]), f32([0.0, 0.125])])
    return model


CAND_VARS = [{"name": "pt", "offset": -10.0, "scale": 0.5, "default": 0.0},
             {"name": "eta", "offset": 0.0, "scale": 2.0, "default": -1.0}]
SEQ_VARS = {"pfcand": [{"name": "dr", "offset": 0.0, "scale": 4.0, "default": 0.0},
                       {"name": "ptrel", "offset": -0.5, "scale": 1.0, "default": 0.0}]}


def test_golden_tiny_model_json():
    doc = keras_to_lwtnn(golden_model(), CAND_VARS, SEQ_VARS, ["jet", "tau"], sequence_names={"pfcand": "pf"},
                         output_name="tau_vs_jet", miscellaneous={"taggerflow": "test"})
    assert list(doc) == ["inputs", "input_sequences", "nodes", "layers", "outputs", "miscellaneous"]
    assert doc["inputs"] == [{"name": "candidate", "variables": CAND_VARS}]
    assert doc["input_sequences"] == [{"name": "pf", "variables": SEQ_VARS["pfcand"]}]
    assert doc["nodes"] == [
        {"type": "input", "sources": [0], "size": 2},
        {"type": "input_sequence", "sources": [0], "size": 2},
        {"type": "time_distributed", "sources": [1], "layer_index": 0},
        {"type": "sum", "sources": [2]},
        {"type": "concatenate", "sources": [3, 0]},
        {"type": "feed_forward", "sources": [4], "layer_index": 1},
        {"type": "feed_forward", "sources": [5], "layer_index": 2},
    ]
    assert doc["layers"] == [
        {"architecture": "dense", "weights": [0.5, 0.125, -0.25, 0.75, 1.0, -0.5], "bias": [0.0625, -0.125, 0.25],
         "activation": "rectified"},
        {"architecture": "dense", "weights": [0.5, 0.25, -0.75, 1.0, 0.0, -0.5, 0.25, 1.0, 0.0, -1.0],
         "bias": [0.5, -0.25], "activation": "rectified"},
        {"architecture": "dense", "weights": [1.0, 0.5, -1.0, 0.25], "bias": [0.0, 0.125], "activation": "softmax"},
    ]
    assert doc["outputs"] == {"tau_vs_jet": {"labels": ["jet", "tau"], "node_index": 6}}
    assert doc["miscellaneous"] == {"taggerflow": "test"}
    assert all(isinstance(w, float) for layer in doc["layers"] for w in layer["weights"] + layer["bias"])
    # hand evaluation of one candidate: pt=12, eta=0.25, constituents (dr, ptrel) = (0.25, 1.5), (0.125, 0.5)
    x = np.array([(12 - 10) * 0.5, 0.25 * 2.0])                        # [1, 0.5]
    trk = np.array([[0.25 * 4, 1.5 - 0.5], [0.125 * 4, 0.5 - 0.5]])   # [[1, 1], [0.5, 0]]
    W1 = np.array([[0.5, 0.125], [-0.25, 0.75], [1.0, -0.5]])
    phi = np.maximum(trk @ W1.T + [0.0625, -0.125, 0.25], 0)
    h = np.concatenate([phi.sum(axis=0), x])
    W2 = np.array([[0.5, 0.25, -0.75, 1.0, 0.0], [-0.5, 0.25, 1.0, 0.0, -1.0]])
    f = np.maximum(W2 @ h + [0.5, -0.25], 0)
    z = np.array([[1.0, 0.5], [-1.0, 0.25]]) @ f + [0.0, 0.125]
    expected = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    out = LwtnnGraph(doc).compute({"candidate": {"pt": 12.0, "eta": 0.25}},
                                  {"pf": {"dr": [0.25, 0.125], "ptrel": [1.5, 0.5]}})
    np.testing.assert_allclose([out["jet"], out["tau"]], expected, rtol=0, atol=1e-15)
    keras_out = golden_model().predict([x[None].astype(np.float32),
                                        np.concatenate([trk, np.full((2, 2), 99.0)])[None].astype(np.float32),
                                        np.array([[1, 1, 0, 0]], np.float32)], verbose=0)
    np.testing.assert_allclose(keras_out[0], expected, rtol=0, atol=1e-6)


def test_write_lwtnn_atomic_and_exact(tmp_path):
    model = build_model({"type": "deepsets", "phi_layers": [4], "f_layers": [3], "batch_norm": True}, 2,
                        {"pfcand": (4, 2)}, 2, seed=3)
    randomize(model, seed=7)
    doc = keras_to_lwtnn(model, CAND_VARS, SEQ_VARS, ["jet", "tau"])
    # a model reloaded from .keras (as the export task sees it) converts to the same document
    model.save(tmp_path / "model.keras")
    assert keras_to_lwtnn(keras.models.load_model(tmp_path / "model.keras"), CAND_VARS, SEQ_VARS,
                          ["jet", "tau"]) == doc
    path = tmp_path / "out" / "tagger.json"
    assert write_lwtnn(doc, path) == str(path)
    text = path.read_text()
    assert text.startswith('{\n "inputs"')                     # indent 1
    assert json.loads(text) == doc                              # floats round-trip exactly
    assert os.listdir(path.parent) == ["tagger.json"]           # no temporary file left behind
    bad = copy.deepcopy(doc)
    bad["layers"][0]["bias"][0] = float("nan")
    with pytest.raises(ValueError):
        write_lwtnn(bad, path)
    assert json.loads(path.read_text()) == doc and os.listdir(path.parent) == ["tagger.json"]
    # deterministic: the same model converts to the same text
    assert json.dumps(keras_to_lwtnn(model, CAND_VARS, SEQ_VARS, ["jet", "tau"])) == json.dumps(doc)


# -- what lwtnn cannot evaluate ----------------------------------------------------------------


def seq_model(body, n_max=5, n_vars=3):
    """candidate(2) + seq(n_max, n_vars) + valid -> body(seq, valid) -> vector -> concat -> Dense softmax."""
    cand = keras.Input((2,), name="candidate")
    seq = keras.Input((n_max, n_vars), name="pfcand")
    valid = keras.Input((n_max,), name="pfcand_valid")
    pooled = body(seq, valid)
    x = keras.layers.Concatenate()([pooled, cand])
    out = keras.layers.Dense(2, activation="softmax", name="output")(x)
    return keras.Model([cand, seq, valid], out)


SEQ3 = {"pfcand": [{"name": f"p{i}", "offset": 0.0, "scale": 1.0} for i in range(3)]}
CAND2 = [{"name": "a", "offset": 0.0, "scale": 1.0}, {"name": "b", "offset": 0.0, "scale": 1.0}]

UNSUPPORTED = {
    "gelu": ("bad_gelu", lambda s, v: MaskedSum()([keras.layers.Dense(4, activation="gelu", name="bad_gelu")(s), v])),
    "selu_activation_layer": ("bad_selu", lambda s, v: keras.layers.Activation("selu", name="bad_selu")(
        MaskedSum()([s, v]))),
    "hard_sigmoid": ("bad_hs", lambda s, v: keras.layers.Dense(3, activation="hard_sigmoid", name="bad_hs")(
        MaskedSum()([s, v]))),
    "lstm": ("bad_lstm", lambda s, v: keras.layers.LSTM(4, name="bad_lstm")(s)),
    "conv1d": ("bad_conv", lambda s, v: MaskedSum()([
        keras.layers.Conv1D(4, 2, padding="same", name="bad_conv")(s), v])),
    "masking": ("bad_masking", lambda s, v: MaskedSum()([keras.layers.Masking(name="bad_masking")(s), v])),
    "global_pooling": ("bad_pool", lambda s, v: keras.layers.GlobalAveragePooling1D(name="bad_pool")(s)),
    "lambda": ("bad_lambda", lambda s, v: keras.layers.Lambda(lambda t: t * 2.0, name="bad_lambda")(
        MaskedSum()([s, v]))),
    "softmax_over_constituents": ("bad_softmax", lambda s, v: MaskedSum()([keras.layers.Softmax(
        axis=1, name="bad_softmax")(s), v])),
    "mask_as_data": ("bad_use", lambda s, v: keras.layers.Concatenate(name="bad_use")([MaskedSum()([s, v]), v])),
}


@pytest.mark.parametrize("case", list(UNSUPPORTED))
def test_unsupported_raises_naming_the_layer(case):
    layer_name, body = UNSUPPORTED[case]
    model = seq_model(body)
    with pytest.raises(LwtnnConversionError, match=layer_name if case != "mask_as_data" else "pfcand_valid"):
        keras_to_lwtnn(model, CAND2, SEQ3, ["a", "b"])


def test_dense_on_unsupported_shape_and_bad_arguments():
    img = keras.Input((4, 3, 2), name="img")
    model = keras.Model(img, keras.layers.Dense(2, activation="softmax", name="dense_4d")(img))
    with pytest.raises(LwtnnConversionError, match="'dense_4d'.*shape"):
        keras_to_lwtnn(model, CAND2, {}, ["a", "b"])
    cand = keras.Input((2,), name="candidate")
    model = keras.Model(cand, keras.layers.Dense(2, name="dense_vec")(
        keras.layers.Reshape((2, 1))(cand)))
    with pytest.raises(LwtnnConversionError, match="Reshape"):
        keras_to_lwtnn(model, CAND2, {}, ["a", "b"])
    good = build_model({"type": "deepsets", "phi_layers": [3], "f_layers": [2]}, 2, {"pfcand": (4, 3)}, 2)
    with pytest.raises(LwtnnConversionError, match="class_labels"):
        keras_to_lwtnn(good, CAND2, SEQ3, ["a", "b", "c"])
    with pytest.raises(LwtnnConversionError, match="3 variables given"):
        keras_to_lwtnn(good, CAND2 + [{"name": "c", "offset": 0.0, "scale": 1.0}], SEQ3, ["a", "b"])
    with pytest.raises(LwtnnConversionError, match="pfcand"):
        keras_to_lwtnn(good, CAND2, {}, ["a", "b"])
    with pytest.raises(LwtnnConversionError, match="twice"):
        keras_to_lwtnn(good, [CAND2[0], CAND2[0]], SEQ3, ["a", "b"])
    with pytest.raises(LwtnnConversionError, match="one vector input"):
        keras_to_lwtnn_sequential(good, CAND2, ["a", "b"])
    branches = keras.layers.Add()([keras.layers.Dense(3)(cand), keras.layers.Dense(3)(cand)])
    forked = keras.Model(cand, keras.layers.Dense(2, activation="softmax")(branches))
    with pytest.raises(LwtnnConversionError, match="single chain"):
        keras_to_lwtnn_sequential(forked, CAND2, ["a", "b"])
    assert LwtnnGraph(keras_to_lwtnn(forked, CAND2, {}, ["a", "b"])).compute({"candidate": {"a": 1.0, "b": 2.0}})
