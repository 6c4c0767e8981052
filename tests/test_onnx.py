"""ONNX export (tf2onnx) of the taggerflow models, checked against Keras with onnxruntime."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import onnx  # noqa: E402,F401
import onnxruntime  # noqa: E402,F401
import tf2onnx  # noqa: E402,F401

from taggerflow import onnx_export  # noqa: E402
from taggerflow.onnx_export import OnnxExportError, export_onnx, onnx_check, onnx_scores  # noqa: E402

DEEPSETS = {"type": "deepsets", "phi_layers": [8, 8], "f_layers": [8], "activation": "relu"}
DENSE = {"type": "dense", "f_layers": [8, 8], "activation": "tanh", "batch_norm": True, "dropout": 0.2}
N_MAX, N_VARS, N_CAND, N_CLASSES = 6, 3, 4, 3


def _inputs(n: int = 300, seed: int = 7) -> dict[str, np.ndarray]:
    """Scaled-like inputs: every constituent count 0..n_max, garbage (NaN, ±inf, 1e30, large
    finite values) in the padded slots."""
    rng = np.random.default_rng(seed)
    counts = np.arange(n) % (N_MAX + 1)
    valid = (np.arange(N_MAX)[None, :] < counts[:, None]).astype(np.float32)
    seq = rng.normal(size=(n, N_MAX, N_VARS)).astype(np.float32)
    garbage = np.array([np.nan, np.inf, -np.inf, 1e30, 1e4, -7.0], dtype=np.float32)
    pad = valid < 0.5
    seq[pad] = garbage[rng.integers(0, len(garbage), seq[pad].shape)]
    return {"candidate": rng.normal(size=(n, N_CAND)).astype(np.float32), "pfcand": seq, "pfcand_valid": valid}


@pytest.fixture(scope="module")
def deepsets(tmp_path_factory):
    from taggerflow.models import build_model

    model = build_model(DEEPSETS, N_CAND, {"pfcand": (N_MAX, N_VARS)}, N_CLASSES, seed=1)
    path = str(tmp_path_factory.mktemp("onnx") / "model.onnx")
    return model, path, export_onnx(model, path)


def _max_diff(model, path, x) -> float:
    keras_scores = model.predict({t.name: x[t.name] for t in model.inputs}, verbose=0)
    scores = onnx_scores(path, x)
    assert scores.shape == keras_scores.shape
    assert np.all(np.isfinite(keras_scores)) and np.all(np.isfinite(scores))
    return float(np.max(np.abs(scores - keras_scores)))


def test_deepsets_scores_equal_keras(deepsets):
    model, path, info = deepsets
    x = _inputs()
    assert (x["pfcand_valid"].sum(axis=1) == 0).sum() > 0  # candidates without constituents
    diff = _max_diff(model, path, x)
    print(f"deepsets: max |ONNX - Keras| = {diff:.3g}")
    assert diff <= 1e-5
    assert info["self_check_max_abs_diff"] <= 1e-5
    check = onnx_check(model, path, x)
    assert check["passed"] and check["n_candidates"] == 300 and check["max_abs_diff"] == pytest.approx(diff)


def test_deepsets_info_names_and_shapes(deepsets):
    import onnx

    _, path, info = deepsets
    assert info["inputs"] == [{"name": "candidate", "shape": [None, N_CAND], "dtype": "float32"},
                              {"name": "pfcand", "shape": [None, N_MAX, N_VARS], "dtype": "float32"},
                              {"name": "pfcand_valid", "shape": [None, N_MAX], "dtype": "float32"}]
    assert info["outputs"] == [{"name": "output", "shape": [None, N_CLASSES], "dtype": "float32"}]
    assert isinstance(info["opset"], int) and info["opset"] >= 13
    assert info == {**onnx_export.onnx_info(path), "converter": info["converter"],
                    "self_check_max_abs_diff": info["self_check_max_abs_diff"]}
    proto = onnx.load(path)
    batch = {v.type.tensor_type.shape.dim[0].dim_param for v in list(proto.graph.input) + list(proto.graph.output)}
    assert batch == {"N"}  # one dynamic batch dimension shared by all inputs and the output
    assert os.listdir(os.path.dirname(path)) == ["model.onnx"]  # no temporary left over


def test_padded_slots_and_batch_size_do_not_matter(deepsets):
    _, path, _ = deepsets
    x = _inputs(50)
    ref = onnx_scores(path, x)
    y = dict(x, pfcand=np.where(x["pfcand_valid"][..., None] > 0.5, x["pfcand"], 0.0).astype(np.float32))
    np.testing.assert_array_equal(onnx_scores(path, y), ref)
    np.testing.assert_array_equal(onnx_scores(path, {k: v[:1] for k, v in x.items()}), ref[:1])
    np.testing.assert_allclose(onnx_scores(path, x, batch_size=7), ref, rtol=0, atol=1e-7)


def test_dense_scores_equal_keras_and_extra_inputs_ignored(tmp_path):
    from taggerflow.models import build_model

    model = build_model(DENSE, N_CAND, {}, N_CLASSES, seed=2)
    path = str(tmp_path / "dense.onnx")
    info = export_onnx(model, path, opset=17)
    assert info["opset"] == 17
    assert info["inputs"] == [{"name": "candidate", "shape": [None, N_CAND], "dtype": "float32"}]
    assert info["outputs"] == [{"name": "output", "shape": [None, N_CLASSES], "dtype": "float32"}]
    diff = _max_diff(model, path, _inputs())  # pfcand arrays given but not read by the model
    print(f"dense: max |ONNX - Keras| = {diff:.3g}")
    assert diff <= 1e-5


def test_saved_keras_model_exports(deepsets, tmp_path):
    import keras

    model, _, _ = deepsets
    model.save(str(tmp_path / "model.keras"))
    loaded = keras.models.load_model(str(tmp_path / "model.keras"))
    path = str(tmp_path / "loaded.onnx")
    export_onnx(loaded, path)
    assert _max_diff(model, path, _inputs(100)) <= 1e-5


def test_failure_leaves_no_file(deepsets, tmp_path, monkeypatch):
    model, _, _ = deepsets
    # without the Where rewriter tf2onnx's select is c*x + !c*y: NaN garbage in padded slots
    # leaks into the scores; the self-check must refuse the file
    monkeypatch.setattr(onnx_export, "_select_as_where", lambda g, ops: ops)
    path = tmp_path / "model.onnx"
    with pytest.raises(OnnxExportError, match="differ from Keras"):
        export_onnx(model, str(path))
    assert os.listdir(tmp_path) == []
    path.write_bytes(b"previous")
    with pytest.raises(OnnxExportError):
        export_onnx(model, str(path))
    assert path.read_bytes() == b"previous" and os.listdir(tmp_path) == ["model.onnx"]


def test_onnx_scores_errors(deepsets):
    _, path, _ = deepsets
    x = _inputs(10)
    with pytest.raises(KeyError, match="pfcand_valid"):
        onnx_scores(path, {k: v for k, v in x.items() if k != "pfcand_valid"})
    with pytest.raises(ValueError, match="shape"):
        onnx_scores(path, dict(x, pfcand=x["pfcand"][:, :3]))
    with pytest.raises(ValueError, match="rows"):
        onnx_scores(path, dict(x, candidate=x["candidate"][:5]))


_EXPORT_SCRIPT = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import keras
import taggerflow.models  # registers the custom layers
from taggerflow.onnx_export import export_onnx
model = keras.models.load_model(sys.argv[1])
export_onnx(model, sys.argv[2])
export_onnx(model, sys.argv[3])  # a second conversion in the same process: other trace counters
"""


def test_export_bytes_equal_in_two_processes(deepsets, tmp_path):
    """Two processes with different string hashing (tf2onnx keeps one of two equal constants and
    numbers its constants after set orders) convert one saved model to the same bytes, twice each;
    no generated tf2onnx name remains and onnxruntime gives Keras' scores."""
    import subprocess
    import sys

    import onnx

    model, _, _ = deepsets
    saved = str(tmp_path / "model.keras")
    model.save(saved)
    outs = []
    for seed in ("1", "2"):
        a, b = str(tmp_path / f"a{seed}.onnx"), str(tmp_path / f"b{seed}.onnx")
        env = dict(os.environ, PYTHONHASHSEED=seed, TF_CPP_MIN_LOG_LEVEL="2")
        proc = subprocess.run([sys.executable, "-c", _EXPORT_SCRIPT, saved, a, b], env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs += [a, b]
    blobs = [open(p, "rb").read() for p in outs]
    assert all(blob == blobs[0] for blob in blobs[1:])
    graph = onnx.load(outs[0]).graph
    names = [n.name for n in graph.node] + [t.name for t in graph.initializer] + \
        [o for n in graph.node for o in n.output]
    assert not [n for n in names if "__" in n or "const_fold" in n]
    assert [t.name for t in graph.initializer] == [f"const_{j}" for j in range(len(graph.initializer))]
    assert "inference" not in graph.doc_string
    assert _max_diff(model, outs[0], _inputs(100)) <= 1e-5
