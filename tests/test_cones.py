"""Cones: the signal radius, inner/outer/none boundaries, phi wrapping, and per-cone moments."""

from __future__ import annotations

import math

import awkward as ak
import numpy as np
import pytest

from conftest import tiny_raw
from taggerflow.config import Cone, config_from_dict
from taggerflow.cones import cone_masks, signal_radius, wrap_phi
from taggerflow.formats.candidate_tree import TreeSource
from taggerflow.io import collection_features
from taggerflow.scaling import ScalingError, accumulate, feature_scaling_job, scaling_parameters

CONE = Cone(coef=3.0, min_pt=30.0, min_radius=0.05, outer_dR=0.5)


def cone_raw(**overrides) -> dict:
    raw = tiny_raw()
    raw["features"]["collections"]["pfcand"]["cone"] = {"coef": 3.0, "min_pt": 30.0, "min_radius": 0.05,
                                                        "outer_dR": 0.5, **overrides}
    raw["export"]["sequence_names"] = {"pfcand_inner": "pfcand_inner", "pfcand_outer": "pfcand_outer"}
    return raw


def _masks(pt, deta, dphi, cone=CONE):
    """Masks of single-constituent candidates."""
    n = len(pt)
    return cone_masks(np.asarray(pt, float), np.asarray(deta, float), np.asarray(dphi, float),
                      np.ones(n, dtype=np.int64), cone)


def test_signal_radius_formula():
    pt = np.array([5.0, 30.0, 40.0, 60.0, 300.0])
    # r = max(coef / max(pt, min_pt), min_radius): capped at coef/min_pt = 0.1 below min_pt, floored at 0.05
    np.testing.assert_allclose(signal_radius(pt, CONE), [0.1, 0.1, 0.075, 0.05, 0.05])
    no_floor = Cone(coef=3.0, min_pt=10.0, min_radius=0.0, outer_dR=0.5)
    np.testing.assert_allclose(signal_radius(pt, no_floor), [0.3, 0.1, 0.075, 0.05, 0.01])


def test_inner_outer_none_boundaries():
    r = 3.0 / 40.0  # pt 40: r = 0.075
    deta = np.array([0.0, r, np.nextafter(r, 1.0), 0.3, np.nextafter(0.5, 0.0), 0.5, 0.7])
    m = _masks(np.full(len(deta), 40.0), deta, np.zeros(len(deta)))
    assert m["inner"].tolist() == [True, True, False, False, False, False, False]   # dR <= r
    assert m["outer"].tolist() == [False, False, True, True, True, False, False]    # r < dR < outer_dR
    none = ~(m["inner"] | m["outer"])
    assert none.tolist() == [False] * 5 + [True, True]                               # dR >= outer_dR: neither
    assert not (m["inner"] & m["outer"]).any()
    # dR combines deta and dphi
    m = _masks([40.0, 40.0], [0.06, 0.3], [0.06, 0.45])  # dR = 0.0849 (outer), 0.54 (none)
    assert m["inner"].tolist() == [False, False] and m["outer"].tolist() == [True, False]


def test_phi_wrapping():
    two_pi = 2 * math.pi
    dphi = np.array([two_pi - 0.01, -two_pi + 0.01, math.pi, -math.pi, 0.3 + two_pi, 3 * math.pi - 0.02])
    np.testing.assert_allclose(wrap_phi(dphi), [-0.01, 0.01, -math.pi, -math.pi, 0.3, math.pi - 0.02], atol=1e-12)
    # 2 pi - 0.01 is 0.01 away: inside a 0.05 cone (pt 300 -> r = min_radius = 0.05)
    m = _masks(np.full(len(dphi), 300.0), np.zeros(len(dphi)), dphi)
    assert m["inner"].tolist() == [True, True, False, False, False, False]
    assert m["outer"].tolist() == [False, False, False, False, True, False]


def test_per_cone_moments_equal_numpy_on_masked_values(demo_files):
    cfg = config_from_dict(cone_raw())
    path = demo_files["TT"]
    job = feature_scaling_job(cfg, [path])
    coll = cfg.collections[0]
    # reference: the io reader's features and cone_masks over the whole file at once
    chunk = ak.concatenate(list(TreeSource(path, cfg.tree).chunks(
        ["pt", "pfcand_pt", "pfcand_deta", "pfcand_dphi", "pfcand_d0", "pfcand_d0_sig", "pfcand_dz",
         "pfcand_dz_sig", "pfcand_charge", "pfcand_ptype"], 10_000, 0, 1500)))
    flat, counts = collection_features(chunk, coll)
    masks = cone_masks(ak.to_numpy(chunk["pt"]), ak.to_numpy(ak.flatten(chunk["pfcand_deta"])),
                       ak.to_numpy(ak.flatten(chunk["pfcand_dphi"])), counts, coll.cone)
    n_in, n_out = int(masks["inner"].sum()), int(masks["outer"].sum())
    assert n_in > 100 and n_out > 100
    assert job["outside_cones"]["pfcand"] == len(flat) - n_in - n_out > 0
    for i, var in enumerate(coll.variable_names):
        for cone in ("inner", "outer"):
            x = flat[masks[cone], i]
            m = job["moments"]["pfcand"][var][cone]
            assert m["num"] == len(x)
            assert m["mean"] == pytest.approx(x.mean(), rel=1e-12, abs=1e-15)
            assert math.sqrt(m["m2"] / m["num"]) == pytest.approx(x.std(), rel=1e-12)
            assert (m["min"], m["max"]) == (x.min(), x.max())
        assert "global" not in job["moments"]["pfcand"][var]
    # accumulate (no quantiles) gives the same moments
    acc = accumulate(cfg, [path])
    assert acc["pfcand"]["d0"]["inner"].to_dict() == job["moments"]["pfcand"]["d0"]["inner"]
    assert set(acc["candidate"]["pt"]) == {"global"}


def test_limits_per_cone_and_named_errors():
    raw = cone_raw()
    raw["features"]["collections"]["pfcand"]["variables"]["d0"]["limits"] = {"inner": [-3, 3], "outer": [-6, 4]}
    cfg = config_from_dict(raw)
    from taggerflow.scaling import Moments, variable_types

    vals = Moments.of(np.array([1.0, 2.0, 4.0]))
    stats = {t: {v.name: {c: vals for c in (("inner", "outer") if t == "pfcand" else ("global",))} for v in vs}
             for t, vs in variable_types(cfg).items()}
    p = scaling_parameters(cfg, stats)
    assert (p["pfcand"]["d0"]["inner"]["lim_min"], p["pfcand"]["d0"]["inner"]["lim_max"]) == (-3.0, 3.0)
    assert (p["pfcand"]["d0"]["outer"]["lim_min"], p["pfcand"]["d0"]["outer"]["lim_max"]) == (-6.0, 4.0)
    assert p["pfcand"]["dz"]["outer"]["lim_min"] == -5.0  # a plain [lo, hi] applies to both cones
    stats["pfcand"]["dz"]["outer"] = Moments.of(np.array([7.0]))
    with pytest.raises(ScalingError, match=r"pfcand\.dz\.outer: 'normal' scaling needs at least 2"):
        scaling_parameters(cfg, stats)
