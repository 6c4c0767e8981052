"""Tests of taggerflow.models: input contract, mask invariance, dense model, save/load, config errors."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import keras  # noqa: E402

from taggerflow.models import MaskedSum, build_model, parse_model_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Keras' own .keras saving trips a numpy 2 DeprecationWarning inside TensorFlow; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")
DEEPSETS = {"type": "deepsets", "phi_layers": [8, 6], "f_layers": [8], "activation": "relu"}


def randomize(model: keras.Model, seed: int = 0) -> None:
    """Non-trivial weights everywhere, including BatchNormalization statistics."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        shape = tuple(w.shape)
        if "moving_variance" in w.path:
            w.assign(rng.uniform(0.5, 2.0, shape))
        elif "gamma" in w.path:
            w.assign(rng.uniform(0.5, 1.5, shape))
        else:
            w.assign(rng.normal(0.0, 0.5, shape))


def padded(rng, real: list[np.ndarray], n_max: int, n_vars: int, garbage: float, shuffle: bool = False):
    """Pad lists of real constituents to n_max with garbage; optionally put them in random slots."""
    x = rng.normal(0.0, garbage, size=(len(real), n_max, n_vars))
    valid = np.zeros((len(real), n_max), dtype=np.float32)
    for i, r in enumerate(real):
        slots = rng.permutation(n_max)[: len(r)] if shuffle else np.arange(len(r))
        x[i, slots] = r
        valid[i, slots] = 1.0
    return x.astype(np.float32), valid


def test_deepsets_inputs_outputs_and_shapes():
    seqs = {"pfcand": (8, 4), "sv": (3, 2)}
    model = build_model(DEEPSETS, 5, seqs, 4, seed=1)
    assert [t.name for t in model.inputs] == ["candidate", "pfcand", "pfcand_valid", "sv", "sv_valid"]
    assert [tuple(t.shape) for t in model.inputs] == [(None, 5), (None, 8, 4), (None, 8), (None, 3, 2), (None, 3)]
    assert tuple(model.output.shape) == (None, 4)
    assert sum(isinstance(layer, MaskedSum) for layer in model.layers) == 2
    assert model.get_layer("output").activation.__name__ == "softmax"
    # phi widths 8, 6 per collection, then F: (6 + 6 + 5) -> 8 -> 4
    assert model.get_layer("pfcand_phi0").kernel.shape == (4, 8)
    assert model.get_layer("sv_phi1").kernel.shape == (8, 6)
    assert model.get_layer("f0").kernel.shape == (17, 8)
    rng = np.random.default_rng(0)
    n = 7
    x = [rng.normal(size=(n, 5)), rng.normal(size=(n, 8, 4)), (rng.random((n, 8)) < 0.5).astype("float32"),
         rng.normal(size=(n, 3, 2)), np.ones((n, 3), "float32")]
    pred = model.predict(x, verbose=0)
    assert pred.shape == (n, 4)
    np.testing.assert_allclose(pred.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("cfg", [
    DEEPSETS,
    {"type": "deepsets", "phi_layers": [8, 8], "f_layers": [8], "activation": "leaky_relu", "alpha": 0.1,
     "batch_norm": True, "dropout": 0.2},
], ids=["relu", "leaky_bn_dropout"])
def test_padding_and_order_do_not_matter(cfg):
    """Same real constituents padded to n_max=8 vs n_max=20 with garbage (even inf/NaN) in the padded
    slots, and in random slots: identical scores. Without the mask the garbage would show."""
    m8 = build_model(cfg, 3, {"pf": (8, 4)}, 3, seed=2)
    randomize(m8, seed=5)
    m20 = build_model(cfg, 3, {"pf": (20, 4)}, 3, seed=9)
    m20.set_weights(m8.get_weights())
    rng = np.random.default_rng(3)
    counts = [0, 8, 1, 3, 5, 8, 2, 0, 7, 4]
    real = [rng.normal(size=(c, 4)).astype(np.float32) for c in counts]
    cand = rng.normal(size=(len(counts), 3)).astype(np.float32)
    x8, v8 = padded(rng, real, 8, 4, garbage=1e3)
    x20, v20 = padded(rng, real, 20, 4, garbage=1e4, shuffle=True)
    pad1 = np.flatnonzero(v20[1] == 0)
    x20[0, 5:9] = np.inf                 # candidate 0 has no real constituent
    x20[1, pad1[:3]] = np.nan            # padded slots of a candidate with 8 real ones
    x20[1, pad1[3:6]] = -np.inf
    p8 = m8.predict([cand, x8, v8], verbose=0)
    p20 = m20.predict([cand, x20, v20], verbose=0)
    assert np.all(np.isfinite(p20))
    np.testing.assert_allclose(p20, p8, rtol=0, atol=1e-6)
    # the test can fail: declaring the garbage slots valid changes the scores
    p_bad = m8.predict([cand, x8, np.ones_like(v8)], verbose=0)
    assert np.abs(p_bad - p8).max() > 1e-3


def test_dense_model():
    model = build_model({"type": "dense", "f_layers": [8, 4]}, 5, {"pf": (8, 4)}, 3, seed=0)
    assert [t.name for t in model.inputs] == ["candidate"]
    assert not any(isinstance(layer, MaskedSum) for layer in model.layers)
    assert model.count_params() == (5 * 8 + 8) + (8 * 4 + 4) + (4 * 3 + 3)
    pred = model.predict(np.random.default_rng(0).normal(size=(6, 5)), verbose=0)
    assert pred.shape == (6, 3)
    np.testing.assert_allclose(pred.sum(axis=1), 1.0, rtol=1e-5)


def test_batch_norm_dropout_layout_and_seeds():
    cfg = {"type": "dense", "f_layers": [8], "batch_norm": True, "dropout": 0.1, "activation": "swish"}
    model = build_model(cfg, 4, {}, 2, seed=7)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["InputLayer", "Dense", "BatchNormalization", "Activation", "Dropout", "Dense"]
    assert model.get_layer("f0").use_bias is False
    assert model.get_layer("f0_act").activation.__name__ == "silu"
    same = build_model(cfg, 4, {}, 2, seed=7)
    other = build_model(cfg, 4, {}, 2, seed=8)
    np.testing.assert_array_equal(model.get_layer("f0").kernel.numpy(), same.get_layer("f0").kernel.numpy())
    assert not np.allclose(model.get_layer("f0").kernel.numpy(), other.get_layer("f0").kernel.numpy())
    # two layers of one model do not share their initial values
    deep = build_model({"type": "dense", "f_layers": [4, 4]}, 4, {}, 2, seed=7)
    assert not np.allclose(deep.get_layer("f0").kernel.numpy(), deep.get_layer("f1").kernel.numpy())


def test_batch_norm_statistics_ignore_padding():
    """Training with huge garbage in the padded slots leaves the phi BatchNorm statistics sane."""
    cfg = {"type": "deepsets", "phi_layers": [4], "f_layers": [4], "batch_norm": True}
    model = build_model(cfg, 2, {"pf": (6, 3)}, 2, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    real = [rng.normal(size=(c, 3)).astype(np.float32) for c in rng.integers(0, 7, 32)]
    x, v = padded(rng, real, 6, 3, garbage=1e5)
    cand = rng.normal(size=(32, 2)).astype(np.float32)
    model.fit([cand, x, v], rng.integers(0, 2, 32), batch_size=32, epochs=1, verbose=0)
    bn = model.get_layer("pf_phi0_bn")
    # momentum 0.99: one step moves the moving mean 1% towards the batch mean (O(1) without the garbage)
    assert np.all(np.isfinite(bn.moving_mean.numpy()))
    assert np.abs(bn.moving_mean.numpy()).max() < 0.1
    assert np.abs(bn.moving_variance.numpy() - 1.0).max() < 0.5


def test_save_load_roundtrip(tmp_path):
    cfg = {"type": "deepsets", "phi_layers": [6], "f_layers": [5], "activation": "elu", "alpha": 0.5,
           "batch_norm": True, "dropout": 0.1}
    model = build_model(cfg, 3, {"pf": (5, 2)}, 3, seed=4)
    randomize(model, seed=1)
    rng = np.random.default_rng(2)
    x = [rng.normal(size=(4, 3)), rng.normal(size=(4, 5, 2)), (rng.random((4, 5)) < 0.6).astype("float32")]
    ref = model.predict(x, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), ref)
    np.savez(tmp_path / "x.npz", *x)
    # a fresh process that only imports taggerflow.models before loading
    script = (
        "import os, json, sys; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '2'\n"
        "import numpy as np, keras, taggerflow.models\n"
        f"m = keras.models.load_model({str(path)!r})\n"
        f"d = np.load({str(tmp_path / 'x.npz')!r}); x = [d[f'arr_{{i}}'] for i in range(3)]\n"
        "print('RESULT', json.dumps(m.predict(x, verbose=0).astype(float).tolist()))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    np.testing.assert_allclose(np.array(json.loads(line[7:])), ref, rtol=0, atol=1e-7)


@pytest.mark.parametrize("cfg, key", [
    ({"type": "cnn"}, "type"),
    ({"f_layers": [4]}, "type"),
    ({"type": "dense", "activation": "gelu"}, "activation"),
    ({"type": "dense", "activation": "hard_sigmoid"}, "activation"),
    ({"type": "dense", "activation": "relu", "alpha": 0.1}, "alpha"),
    ({"type": "dense", "dropout": 1.0}, "dropout"),
    ({"type": "dense", "batch_norm": "yes"}, "batch_norm"),
    ({"type": "deepsets", "phi_layers": [0]}, "phi_layers"),
    ({"type": "dense", "f_layers": 8}, "f_layers"),
    ({"type": "dense", "batchnorm": True}, "batchnorm"),
])
def test_bad_config_raises_naming_the_key(cfg, key):
    with pytest.raises(ValueError, match=key):
        build_model(cfg, 3, {"pf": (4, 2)}, 2)


def test_parse_model_config_defaults():
    cfg = parse_model_config({"type": "deepsets", "activation": "swish"})
    assert cfg == {"type": "deepsets", "phi_layers": [64, 64], "f_layers": [64, 32], "activation": "silu",
                   "alpha": None, "batch_norm": False, "dropout": 0.0, "conditional": False}
    assert parse_model_config({"type": "dense", "activation": "leaky_relu"})["alpha"] == 0.2
    with pytest.raises(ValueError, match="sequences"):
        build_model({"type": "deepsets"}, 3, {}, 2)
