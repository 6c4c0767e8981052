"""ConvertLwtnn glue: lwtnn variables from the scaling and the lwtnn-vs-Keras check on real shards."""

from __future__ import annotations

import numpy as np
import pytest

from taggerflow.export import check, check_inputs, convert, format_table, lwtnn_variables, raw_clamp


def test_lwtnn_variables_from_scaling():
    scaling = {"candidate": {"x": {"global": {"mean": 50.0, "std": 0.5, "lim_min": -2.0, "lim_max": None,
                                              "default": 1.0}}}}
    variables, clamp = lwtnn_variables(scaling, "candidate", ["x"])
    assert variables == [{"name": "x", "offset": -50.0, "scale": 2.0, "default": 50.5}]
    assert clamp == {"x": [49.0, None]}
    np.testing.assert_array_equal(raw_clamp(np.array([[10.0], [49.5], [1e9]]), [clamp["x"]])[:, 0], [49.0, 49.5, 1e9])


@pytest.mark.parametrize("model_type", ["deepsets", "dense"])
def test_check_on_shard_candidates(files_config, shard_and_scaling, model_type):
    from taggerflow.models import build_model

    cfg = files_config
    shard, scaling, _ = shard_and_scaling
    seqs = {n: (c.n_max, len(c.variables)) for n, c, _ in cfg.sequences()}
    model = build_model({"type": model_type, "phi_layers": [16, 16], "f_layers": [16], "activation": "relu"},
                        len(cfg.candidate_variables), seqs, len(cfg.class_names), seed=3)
    config, clamps = convert(model, cfg, scaling)
    if model_type == "dense":
        assert "nodes" not in config and [v["name"] for v in config["inputs"]] == [v.name for v in cfg.candidate_variables]
    else:
        assert [s["name"] for s in config["input_sequences"]] == ["pfcand"]
    inputs = check_inputs(cfg, [shard], scaling, 250)
    assert inputs["n"] == 250
    counts = inputs["raw"]["pfcand"][1]
    assert counts.max() == cfg.collections[0].n_max  # candidates with more constituents were truncated
    result = check(model, config, clamps, inputs, ["pfcand"], tolerance=1e-5)
    assert result["passed"] and result["max_abs_diff"] < 1e-5
    assert result["fraction_above"]["1e-05"] == 0.0
    assert "fraction above" in format_table(result)


def test_check_detects_a_wrong_offset(files_config, shard_and_scaling):
    from taggerflow.models import build_model

    cfg = files_config
    shard, scaling, _ = shard_and_scaling
    seqs = {n: (c.n_max, len(c.variables)) for n, c, _ in cfg.sequences()}
    model = build_model({"type": "deepsets", "phi_layers": [8], "f_layers": [8]}, len(cfg.candidate_variables),
                        seqs, len(cfg.class_names), seed=4)
    config, clamps = convert(model, cfg, scaling)
    config["inputs"][0]["variables"][0]["offset"] += 1.0  # a scaling mismatch between C++ and training
    inputs = check_inputs(cfg, [shard], scaling, 200)
    result = check(model, config, clamps, inputs, ["pfcand"], tolerance=1e-5)
    assert not result["passed"] and result["max_abs_diff"] > 1e-4
