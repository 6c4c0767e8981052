"""Scaling: the merge of job moments equals a single pass; every scaling type; bad cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import tiny_raw
from taggerflow.config import config_from_dict
from taggerflow.scaling import (Moments, ScalingError, apply_scaling, merge_statistics, scaling_arrays,
                                scaling_parameters, variable_types)


def _single_pass(x):
    x = np.asarray(x, dtype=np.float64)
    return x.size, x.mean(), x.std()


@pytest.mark.parametrize("mean, std", [(50.0, 0.5), (0.0, 1.0), (1e6, 1e-2), (-3.0, 1e3)])
def test_merge_equals_single_pass(mean, std):
    rng = np.random.default_rng(7)
    sizes = [1, 3, 10, 1000, 200_000, 2, 57_000]  # jobs of very different sizes
    parts = [rng.normal(mean, std, n) for n in sizes]
    m = Moments()
    for p in parts:
        m = m.merge(Moments.of(p))
    n, mu, sd = _single_pass(np.concatenate(parts))
    assert m.num == n
    assert m.mean == pytest.approx(mu, rel=1e-12, abs=1e-12 * std)
    assert m.std == pytest.approx(sd, rel=1e-12)
    # order independent
    m2 = Moments()
    for p in reversed(parts):
        m2 = m2.merge(Moments.of(p))
    assert m2.std == pytest.approx(m.std, rel=1e-12)
    assert m.min == min(p.min() for p in parts) and m.max == max(p.max() for p in parts)


def test_nan_inf_excluded_and_counted():
    m = Moments.of(np.array([1.0, np.nan, 3.0, np.inf, -np.inf]))
    assert (m.num, m.nan, m.inf) == (2, 1, 2)
    assert m.mean == 2.0 and m.std == 1.0
    assert Moments.from_dict(m.to_dict()) == m
    empty = Moments.of(np.array([np.nan]))
    assert empty.num == 0 and empty.nan == 1 and math.isnan(empty.std)


def _cfg_with(var_spec: dict):
    raw = tiny_raw()
    raw["features"]["candidate"] = {"x": var_spec}
    raw["features"]["collections"] = {}
    raw["training"]["model"]["type"] = "dense"
    raw["export"]["sequence_names"] = {}
    return config_from_dict(raw)


def _stats(cfg, values):
    return {"candidate": {"x": {"global": Moments.of(np.asarray(values, dtype=float))}}}


def test_scaling_types():
    values = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    cases = {
        "no_scaling": ({"scaling": "no_scaling"}, (0.0, 1.0, None, None)),
        "categorical": ({"scaling": "categorical"}, (0.0, 1.0, None, None)),
        "linear": ({"scaling": "linear", "limits": [0, 10]}, (5.0, 5.0, -1.0, 1.0)),
        "normal": ({"scaling": "normal", "limits": [-2, 3]}, (values.mean(), values.std(), -2.0, 3.0)),
        "normal_unbounded": ({"scaling": "normal"}, (values.mean(), values.std(), None, None)),
    }
    for name, (spec, (mean, std, lo, hi)) in cases.items():
        cfg = _cfg_with(spec)
        p = scaling_parameters(cfg, _stats(cfg, values))["candidate"]["x"]["global"]
        assert p["mean"] == pytest.approx(mean) and p["std"] == pytest.approx(std), name
        assert (p["lim_min"], p["lim_max"]) == (lo, hi), name
        assert p["num"] == 5
        scaled = apply_scaling(values[:, None], *scaling_arrays({"candidate": {"x": {"global": p}}}, "candidate", ["x"]))
        expected = np.clip((values - mean) / std, -np.inf if lo is None else lo, np.inf if hi is None else hi)
        np.testing.assert_allclose(scaled[:, 0], expected)
    # linear maps [a, b] onto [-1, 1] and clamps outside
    cfg = _cfg_with({"scaling": "linear", "limits": [0, 10]})
    p = scaling_parameters(cfg, _stats(cfg, values))
    out = apply_scaling(np.array([[0.0], [10.0], [5.0], [50.0]]), *scaling_arrays(p, "candidate", ["x"]))
    np.testing.assert_allclose(out[:, 0], [-1, 1, 0, 1])


def test_nan_input_gets_default():
    cfg = _cfg_with({"scaling": "normal", "limits": [-5, 5], "default": -3.0})
    p = scaling_parameters(cfg, _stats(cfg, [1.0, 2.0, 3.0]))
    out = apply_scaling(np.array([[np.nan], [2.0], [np.inf]]), *scaling_arrays(p, "candidate", ["x"]))
    assert out[0, 0] == -3.0 and out[1, 0] == 0.0 and out[2, 0] == 5.0


@pytest.mark.parametrize("values, words", [([], "at least 2 finite values, found 0"),
                                           ([4.0], "at least 2 finite values, found 1"),
                                           ([2.0, 2.0, 2.0], "constant variable"),
                                           ([np.nan, 1.0], "found 1 (nan: 1")])
def test_degenerate_normal_variables_fail_with_their_name(values, words):
    cfg = _cfg_with({"scaling": "normal", "limits": [-5, 5]})
    with pytest.raises(ScalingError) as e:
        scaling_parameters(cfg, _stats(cfg, values))
    assert "candidate.x.global" in str(e.value) and words in str(e.value)


def test_merge_checks_keys(tiny_config):
    a = {t: {v.name: {"global": Moments.of(np.arange(3.0))} for v in vs} for t, vs in variable_types(tiny_config).items()}
    b = {t: dict(vs) for t, vs in a.items()}
    del b["candidate"]["mass"]
    with pytest.raises(ScalingError, match=r"job_b.json: variables differ.*candidate.mass.global"):
        merge_statistics([a, b], ["job_a.json", "job_b.json"])
    merged = merge_statistics([a, a])
    assert merged["candidate"]["mass"]["global"].num == 6
