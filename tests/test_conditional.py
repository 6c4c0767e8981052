"""Conditional inputs (umami's N_add_vars): candidate variables appended to every constituent."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _model():
    from taggerflow.models import build_model

    return build_model({"type": "deepsets", "phi_layers": [8], "f_layers": [8], "conditional": True},
                       4, {"pf": (5, 3)}, 3, seed=2, n_add_vars=2)


def _inputs(n=50, seed=0):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 6, n)
    valid = (np.arange(5)[None] < counts[:, None]).astype("float32")
    pf = rng.normal(size=(n, 5, 3)).astype("float32") * valid[..., None]
    return {"candidate": rng.normal(size=(n, 4)).astype("float32"), "add_vars": rng.normal(size=(n, 2)).astype("float32"),
            "pf": pf, "pf_valid": valid}


def test_conditional_model_uses_add_vars_and_masks_padding():
    from taggerflow.models import build_model

    model = _model()
    assert [i.name for i in model.inputs] == ["candidate", "add_vars", "pf", "pf_valid"]
    x = _inputs()
    base = model.predict(x, verbose=0)
    changed = dict(x, add_vars=x["add_vars"] + 1.0)
    assert np.abs(model.predict(changed, verbose=0) - base).max() > 1e-4  # the add_vars matter
    garbage = dict(x, pf=np.where(x["pf_valid"][..., None] > 0, x["pf"], 1e3).astype("float32"))
    np.testing.assert_allclose(model.predict(garbage, verbose=0), base, atol=1e-6)  # padding adds nothing
    with pytest.raises(ValueError, match="n_add_vars"):
        build_model({"type": "deepsets", "f_layers": [4], "conditional": True}, 4, {"pf": (5, 3)}, 3)
    with pytest.raises(ValueError, match="only the deepsets"):
        build_model({"type": "dense", "f_layers": [4], "conditional": True}, 4, {}, 3)


def test_lwtnn_refuses_and_onnx_exports_a_conditional_model(tmp_path):
    from taggerflow.lwtnn import LwtnnConversionError, keras_to_lwtnn
    from taggerflow.onnx_export import export_onnx, onnx_scores

    model = _model()
    cand = [{"name": f"c{i}", "offset": 0.0, "scale": 1.0} for i in range(4)]
    seq = {"pf": [{"name": f"s{i}", "offset": 0.0, "scale": 1.0} for i in range(3)]}
    with pytest.raises(LwtnnConversionError, match="pf_add_vars.*concat_jet_tracks"):
        keras_to_lwtnn(model, cand, seq, ["a", "b", "c"])
    path = str(tmp_path / "m.onnx")
    export_onnx(model, path)
    x = _inputs(seed=3)
    np.testing.assert_allclose(onnx_scores(path, x), model.predict(x, verbose=0), atol=1e-5)


def test_predict_feeds_add_vars_by_name():
    from taggerflow.training import predict

    model = _model()
    x = _inputs()
    arrays = {"jets/inputs": np.concatenate([x["candidate"]], axis=1), "pf/inputs": x["pf"], "pf/valid": x["pf_valid"] > 0}
    names = ["a", "b", "c", "d"]
    # add_vars are candidate columns 'c' and 'a', in that order
    expected = model.predict(dict(x, add_vars=x["candidate"][:, [2, 0]]), verbose=0)
    np.testing.assert_allclose(predict(model, arrays, ["c", "a"], names), expected, atol=1e-6)
    with pytest.raises(ValueError, match="not among the candidate variables"):
        predict(model, arrays, ["zz"], names)
