"""Scaling: the merge of job moments equals a single pass (synthetic and through real files); every
scaling type; bad cases; FeatureScaling jobs (quantiles, snapshots) and MergeScaling outputs, flags, plots."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import yaml

from conftest import tiny_raw
from taggerflow.config import config_from_dict
from taggerflow.formats.candidate_tree import TreeSource
from taggerflow.io import candidate_features
from taggerflow.scaling import (QUANTILES, Moments, ScalingError, apply_scaling, feature_scaling_job, job_signature,
                                merge_jobs, merge_statistics, scaling_arrays, scaling_parameters,
                                statistics_to_json, suspicious_variables, variable_types, write_scaling_outputs)
from taggerflow.utils import write_json


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


def test_scaling_type_registry_is_what_config_accepts_and_computes():
    """A scaling type is one module registered by one line: config accepts exactly the registered
    names, and scaling_parameters takes each type's offset/scale from its module."""
    from taggerflow.config import ConfigError
    from taggerflow.scaling import types

    assert types.NAMES == ("no_scaling", "categorical", "linear", "normal", "one_hot")
    assert all(types.module(n).SCALING == n for n in types.NAMES)
    with pytest.raises(ConfigError, match=r"features\.candidate\.x\.scaling: unknown scaling type 'norm' "
                                          r"\(allowed: no_scaling, categorical, linear, normal, one_hot\)"):
        _cfg_with({"scaling": "norm"})
    values = np.array([1.0, 2.0, 4.0])
    cfg = _cfg_with({"scaling": "linear", "limits": [2, 6]})
    p = scaling_parameters(cfg, _stats(cfg, values))["candidate"]["x"]["global"]
    assert (p["mean"], p["std"], p["lim_min"], p["lim_max"]) == \
        types.module("linear").parameters("candidate.x.global", cfg.candidate_variables[0], "global",
                                          Moments.of(values)) == (4.0, 2.0, -1.0, 1.0)


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


# ---------------------------------------------------------------------------------------------
# FeatureScaling jobs and MergeScaling


def _job_from_arrays(cfg, arrays: dict) -> dict:
    """A job result from synthetic arrays {type: {var: {cone: values}}}."""
    stats = {t: {v: {c: Moments.of(x) for c, x in cones.items()} for v, cones in vs.items()} for t, vs in arrays.items()}
    return {"signature": job_signature(cfg), "moments": statistics_to_json(stats)}


def test_merge_jobs_of_very_different_sizes_equals_single_pass():
    cfg = _cfg_with({"scaling": "normal", "limits": [-5, 5]})
    rng = np.random.default_rng(11)
    parts = [rng.normal(50.0, 0.5, n) for n in (3, 250_000, 17, 1, 40_000, 2)]
    jobs = [_job_from_arrays(cfg, {"candidate": {"x": {"global": p}}}) for p in parts]
    merged = merge_jobs(cfg, jobs, [f"moments_{i}.json" for i in range(len(jobs))])
    p = merged["scaling"]["candidate"]["x"]["global"]
    allx = np.concatenate(parts)
    assert p["num"] == len(allx)
    assert p["mean"] == pytest.approx(allx.mean(), rel=1e-12)
    assert p["std"] == pytest.approx(allx.std(), rel=1e-12)
    # the peers' merge of means and squared means rounded to 4 digits loses the std entirely
    naive = [(len(x), float(f"{x.mean():.4g}"), float(f"{(x * x).mean():.4g}")) for x in parts]
    num = sum(n for n, _, _ in naive)
    sq = sum(n * s for n, _, s in naive) / num - (sum(n * m for n, m, _ in naive) / num) ** 2
    assert not math.sqrt(max(sq, 0.0)) == pytest.approx(0.5, rel=0.1)
    assert merged["umami"]["jets"] == [{"name": "x", "shift": p["mean"], "scale": p["std"], "default": p["mean"]}]
    assert merged["norm_dict"] == {"jets": {"x": {"mean": p["mean"], "std": p["std"]}}}


def test_merge_jobs_checks_signatures_and_keys():
    cfg = _cfg_with({"scaling": "normal", "limits": [-5, 5]})
    job = _job_from_arrays(cfg, {"candidate": {"x": {"global": np.arange(5.0)}}})
    other = _cfg_with({"scaling": "normal", "limits": [-3, 3]})
    bad = _job_from_arrays(other, {"candidate": {"x": {"global": np.arange(5.0)}}})
    with pytest.raises(ScalingError, match=r"moments_1.json: .*candidate.x.limits: \{'global': \[-5.0, 5.0\]\} vs "
                                           r"\{'global': \[-3.0, 3.0\]\}"):
        merge_jobs(cfg, [job, bad], ["moments_0.json", "moments_1.json"])
    with pytest.raises(ScalingError, match=r"moments_0.json: .* than the configuration"):
        merge_jobs(cfg, [bad, bad], ["moments_0.json", "moments_1.json"])
    typ = _cfg_with({"scaling": "no_scaling"})
    with pytest.raises(ScalingError, match=r"moments_1.json: .*candidate.x.scaling: 'normal' vs 'no_scaling'"):
        merge_jobs(cfg, [job, _job_from_arrays(typ, {"candidate": {"x": {"global": np.arange(5.0)}}})],
                   ["moments_0.json", "moments_1.json"])
    missing = {"signature": job_signature(cfg), "moments": {"candidate": {}}}
    with pytest.raises(ScalingError, match=r"moments_1.json: variables differ.*candidate.x.global"):
        merge_jobs(cfg, [job, missing], ["moments_0.json", "moments_1.json"])
    with pytest.raises(ScalingError, match=r"old.json: no signature"):
        merge_jobs(cfg, [{"moments": job["moments"]}], ["old.json"])
    with pytest.raises(ScalingError, match="no job results"):
        merge_jobs(cfg, [], [])


def _files_cfg(demo_files, **candidate_extra):
    """The tiny configuration with a cone on pfcand and a candidate variable of mean 50, std ~0.35."""
    raw = tiny_raw()
    raw["features"]["collections"]["pfcand"]["cone"] = {"coef": 3.0, "min_pt": 30.0, "min_radius": 0.05,
                                                        "outer_dR": 0.5}
    raw["export"]["sequence_names"] = {"pfcand_inner": "pfcand_inner", "pfcand_outer": "pfcand_outer"}
    raw["features"]["candidate"]["fifty"] = {"expression": "50 + 0.5 * sin(7 * phi)", "scaling": "normal",
                                             "limits": [-5, 5]}
    raw["features"]["candidate"].update(candidate_extra)
    return config_from_dict(raw)


def test_jobs_over_real_files_merge_to_a_single_pass(demo_files):
    cfg = _files_cfg(demo_files)
    paths = list(demo_files.values())
    single = feature_scaling_job(cfg, paths)
    jobs = [feature_scaling_job(cfg, g) for g in (paths[:1], paths[1:3], paths[3:])]
    merged = merge_jobs(cfg, jobs, ["a.json", "b.json", "c.json"])
    one = merge_jobs(cfg, [single], ["all.json"])
    for t, vs in one["scaling"].items():
        for v, cones in vs.items():
            for c, e in cones.items():
                m = merged["scaling"][t][v][c]
                assert m["num"] == e["num"] and (m["min"], m["max"]) == (e["min"], e["max"]), (t, v, c)
                assert m["raw_mean"] == pytest.approx(e["raw_mean"], rel=1e-12, abs=1e-15), (t, v, c)
                assert m["raw_std"] == pytest.approx(e["raw_std"], rel=1e-12), (t, v, c)
    # and both equal numpy on all values at once (mean 50, std ~0.35)
    chunks = [c for p in paths for c in TreeSource(p, cfg.tree).chunks(["phi"], 10_000, 0, 1500)]
    x = np.concatenate([candidate_features(c, [v for v in cfg.candidate_variables if v.name == "fifty"])[:, 0]
                        for c in chunks])
    f = merged["scaling"]["candidate"]["fifty"]["global"]
    assert f["num"] == len(x) == 6000
    assert f["mean"] == pytest.approx(x.mean(), rel=1e-12) and f["std"] == pytest.approx(x.std(), rel=1e-12)
    assert 0.3 < f["std"] < 0.4 and abs(f["mean"] - 50) < 0.05
    # global convergence: one snapshot per file (log_step 1), the last one equal to the merged moments
    assert [s["n_files"] for s in merged["snapshots"]] == [1, 2, 3, 4]
    last = merged["snapshots"][-1]["moments"]["candidate"]["fifty"]["global"]
    assert last["num"] == f["num"] and last["mean"] == pytest.approx(f["mean"], rel=1e-12)
    assert len(merged["quantiles"]) == 4 and merged["report"]["n_files"] == 4
    json.dumps(single)  # JSON-able


def test_snapshots_every_log_step_files(demo_files):
    raw_cfg = _files_cfg(demo_files)
    raw = dict(raw_cfg.raw, scaling={"log_step": 2})
    cfg = config_from_dict(raw)
    paths = list(demo_files.values())[:3]
    job = feature_scaling_job(cfg, paths)
    assert job["log_step"] == 2
    assert [s["n_files"] for s in job["snapshots"]] == [2, 3]  # every 2 files, and the last one
    assert job["snapshots"][-1]["moments"] == job["moments"]
    assert [s["n_files"] for s in feature_scaling_job(cfg, paths, log_step=1)["snapshots"]] == [1, 2, 3]
    first = feature_scaling_job(cfg, paths[:2], log_step=5)
    assert job["snapshots"][0]["moments"] == first["moments"]


def _file_values(cfg, path, var):
    chunks = list(TreeSource(path, cfg.tree).chunks(sorted({n for v in cfg.candidate_variables for n in v.names_used}),
                                                    10_000, 0, 1500))
    x = np.concatenate([candidate_features(c, [v for v in cfg.candidate_variables if v.name == var])[:, 0]
                        for c in chunks])
    return x[np.isfinite(x)]


def test_quantiles_exact_below_the_cap_and_bounded_above(demo_files):
    cfg = _files_cfg(demo_files)
    path = demo_files["DY"]
    exact = feature_scaling_job(cfg, [path])["per_file"][0]
    assert exact["file"] == path and exact["entries"] == 1500
    probs = np.array(list(QUANTILES.values()))
    for var in ("pt", "iso_charged", "fifty"):
        x = _file_values(cfg, path, var)
        q = exact["quantiles"]["candidate"][var]["global"]
        assert q["exact"] and q["approximate"] == [] and q["n"] == len(x)
        np.testing.assert_array_equal([q[k] for k in QUANTILES], np.quantile(x, probs))
        assert (q["min"], q["max"]) == (x.min(), x.max())
    # cap 500 rows, 50-value tails: the tails give Phi(+-2, 3, 5) exactly, the sample the rest
    small = feature_scaling_job(cfg, [path], quantile_cap=500, tail_size=50)["per_file"][0]
    raw = dict(cfg.raw)
    raw["inputs"] = dict(raw["inputs"], chunk_size=333)
    rechunked = feature_scaling_job(config_from_dict(raw), [path], quantile_cap=500, tail_size=50)["per_file"][0]
    assert rechunked["quantiles"] == small["quantiles"]  # the sample does not depend on the chunking
    for var in ("pt", "iso_charged", "fifty"):
        x = _file_values(cfg, path, var)
        q = small["quantiles"]["candidate"][var]["global"]
        assert not q["exact"] and set(q["approximate"]) == {"q_m1", "median", "q_p1"}
        assert q["sample_size"] == 500
        for name in ("q_m5", "q_m3", "q_m2", "q_p2", "q_p3", "q_p5"):
            assert q[name] == np.quantile(x, QUANTILES[name]), (var, name)  # bit-identical
        for name in q["approximate"]:  # a uniform sample of 500: rank error ~ sqrt(p(1-p)/500) < 0.023
            p = QUANTILES[name]
            assert np.mean(x < q[name]) < p + 0.1 and np.mean(x <= q[name]) > p - 0.1, (var, name)
    # constituents per cone too (sampled: 1500 candidates have ~4400 constituents)
    q = small["quantiles"]["pfcand"]["d0"]["inner"]
    assert not q["exact"] and q["sample_size"] == 500 and q["n"] > 500


def test_nan_inf_counted_and_flagged_and_outputs_written(demo_files, tmp_path):
    cfg = _files_cfg(demo_files,
                     log_ip={"expression": "log(ip_sig)", "scaling": "normal", "limits": [-5, 5]},
                     inv_dm={"expression": "1 / (decay_mode - 1)", "scaling": "no_scaling"},
                     tight={"expression": "iso_charged", "scaling": "normal", "limits": [-0.5, 0.5]},
                     frozen={"expression": "1000 + 0.001 * eta", "scaling": "normal"})
    paths = list(demo_files.values())
    job_paths = []
    for i, group in enumerate((paths[:2], paths[2:])):
        job_paths.append(str(tmp_path / f"moments_{i}.json"))
        write_json(job_paths[-1], feature_scaling_job(cfg, group))
    out = write_scaling_outputs(cfg, job_paths, str(tmp_path / "merge"))
    s = out["scaling"]["candidate"]
    assert s["log_ip"]["global"]["nan"] > 100 and s["log_ip"]["global"]["inf"] == 0
    assert s["inv_dm"]["global"]["inf"] > 100 and s["inv_dm"]["global"]["nan"] == 0
    flags = {(f["input"], f["variable"], f["code"]) for f in out["report"]["flags"]}
    assert ("candidate", "log_ip", "nan_inf") in flags and ("candidate", "inv_dm", "nan_inf") in flags
    assert ("candidate", "tight", "clamp_low") in flags and ("candidate", "tight", "clamp_high") in flags
    assert ("candidate", "frozen", "tiny_std") in flags
    assert not {f for f in flags if f[1] in ("fifty", "abs_eta", "lead_pt_frac", "em_fraction")}
    # the files MergeScaling writes
    d = tmp_path / "merge"
    scaling = json.load(open(d / "scaling.json"))
    assert scaling == json.loads(json.dumps(out["scaling"]))
    for entry in (scaling["candidate"]["pt"]["global"], scaling["pfcand"]["d0"]["outer"]):
        assert {"mean", "std", "lim_min", "lim_max", "num", "nan", "inf"} <= set(entry)
    assert set(scaling["pfcand"]["d0"]) == {"inner", "outer"}
    umami = json.load(open(d / "scaling_umami.json"))
    assert list(umami) == ["jets", "pfcand_inner", "pfcand_outer"]
    assert [e["name"] for e in umami["pfcand_inner"]] == cfg.collections[0].variable_names
    d0 = scaling["pfcand"]["d0"]["inner"]
    assert next(e for e in umami["pfcand_inner"] if e["name"] == "d0") == \
        {"name": "d0", "shift": d0["mean"], "scale": d0["std"], "default": d0["mean"]}
    norm = yaml.safe_load(open(d / "norm_dict.yaml"))
    assert norm["pfcand_outer"]["dz"] == {"mean": scaling["pfcand"]["dz"]["outer"]["mean"],
                                          "std": scaling["pfcand"]["dz"]["outer"]["std"]}
    report = json.load(open(d / "scaling_report.json"))
    assert report["flags"] == json.loads(json.dumps(out["report"]["flags"]))
    assert report["n_files"] == 4 and report["outside_cones"]["pfcand"] > 0
    pngs = sorted(os.listdir(d / "plots"))
    assert pngs == sorted(f"{kind}_{name}.png" for kind in ("convergence", "ranges")
                          for name in ("candidate", "pfcand_inner", "pfcand_outer"))
    for p in pngs:
        assert open(d / "plots" / p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in os.listdir(d) if p.startswith(".")]  # no temporary files left
    for v in json.load(open(d / "scaling.json"))["candidate"].values():  # never NaN in the output
        assert all(not (isinstance(x, float) and math.isnan(x)) for x in v["global"].values())


def test_flags_without_quantiles_and_constant_variable():
    cfg = _cfg_with({"scaling": "categorical"})
    p = scaling_parameters(cfg, _stats(cfg, [3.0, 3.0, 3.0]))
    assert [f["code"] for f in suspicious_variables(cfg, p)] == ["constant"]
    p = scaling_parameters(cfg, _stats(cfg, [np.nan]))
    assert [f["code"] for f in suspicious_variables(cfg, p)] == ["nan_inf", "empty"]
    assert p["candidate"]["x"]["global"]["raw_std"] is None


def test_variable_selection_excludes_values_from_the_statistics(demo_files):
    """A variable's ``selection`` leaves the values failing it out of the moments (counted as cut),
    for candidate variables and per cone for constituents; the statistics equal numpy on the
    selected values, jobs merge exactly, and a job with another selection is refused."""
    import awkward as ak

    from taggerflow.cones import cone_masks

    sel = {"ip_sig_pos": {"expression": "ip_sig", "scaling": "normal", "limits": [-5, 5],
                          "selection": "(ip_sig > 0) & (pt > 25)"}}
    cfg = _files_cfg(demo_files, **sel)
    raw = dict(cfg.raw)
    raw["features"]["collections"]["pfcand"]["variables"]["d0"]["selection"] = "abs(dz) < 0.05"
    cfg = config_from_dict(raw)
    paths = list(demo_files.values())
    jobs = [feature_scaling_job(cfg, g) for g in (paths[:1], paths[1:])]
    merged = merge_jobs(cfg, jobs, ["a.json", "b.json"])["scaling"]

    branches = ["pt", "ip_sig", "pfcand_d0", "pfcand_dz", "pfcand_deta", "pfcand_dphi"]
    chunks = [c for p in paths for c in TreeSource(p, cfg.tree).chunks(branches, 10**6, 0, 1500)]
    arr = ak.concatenate(chunks)
    ip, pt = ak.to_numpy(arr["ip_sig"]).astype(np.float64), ak.to_numpy(arr["pt"])
    keep = (ip > 0) & (pt > 25)
    assert 0 < keep.sum() < len(ip)
    e = merged["candidate"]["ip_sig_pos"]["global"]
    assert (e["num"], e["cut"], e["nan"]) == (int(keep.sum()), int((~keep).sum()), 0)
    assert e["mean"] == pytest.approx(ip[keep].mean(), rel=1e-12)
    assert e["std"] == pytest.approx(ip[keep].std(), rel=1e-12)
    # the unselected variable of the same branch still sees every value
    assert merged["candidate"]["ip_sig"]["global"]["num"] == len(ip)
    assert merged["candidate"]["ip_sig"]["global"]["cut"] == 0

    counts = ak.to_numpy(ak.num(arr["pfcand_d0"]))
    d0 = ak.to_numpy(ak.flatten(arr["pfcand_d0"])).astype(np.float64)
    dz = ak.to_numpy(ak.flatten(arr["pfcand_dz"]))
    masks = cone_masks(cand_pt=pt, deta=ak.to_numpy(ak.flatten(arr["pfcand_deta"])),
                       dphi=ak.to_numpy(ak.flatten(arr["pfcand_dphi"])), counts=counts,
                       cone=cfg.collections[0].cone)
    for cone in ("inner", "outer"):
        ok = masks[cone] & (np.abs(dz) < 0.05)
        e = merged["pfcand"]["d0"][cone]
        assert (e["num"], e["cut"]) == (int(ok.sum()), int((masks[cone] & ~(np.abs(dz) < 0.05)).sum())), cone
        assert 0 < e["cut"] and e["num"] > 1
        assert e["mean"] == pytest.approx(d0[ok].mean(), rel=1e-12, abs=1e-12 * d0[ok].std()), cone
        assert e["std"] == pytest.approx(d0[ok].std(), rel=1e-12), cone
        assert merged["pfcand"]["dz"][cone]["cut"] == 0

    # a job computed with another selection is not merged
    raw2 = dict(cfg.raw)
    raw2["features"]["candidate"]["ip_sig_pos"] = dict(sel["ip_sig_pos"], selection="ip_sig > 1")
    other = feature_scaling_job(config_from_dict(raw2), paths[:1])
    with pytest.raises(ScalingError, match=r"b.json: .*candidate.ip_sig_pos.selection"):
        merge_jobs(cfg, [jobs[0], other], ["a.json", "b.json"])


def test_variable_selection_config_errors(demo_files):
    from taggerflow.config import ConfigError

    raw = _files_cfg(demo_files).raw
    bad = json.loads(json.dumps(raw))
    bad["features"]["candidate"]["pt"]["selection"] = "pt >"
    with pytest.raises(ConfigError, match=r"features.candidate.pt.selection: invalid expression"):
        config_from_dict(bad)
    bad = json.loads(json.dumps(raw))
    bad["features"]["candidate"]["pt"]["selection"] = 5
    with pytest.raises(ConfigError, match=r"features.candidate.pt.selection"):
        config_from_dict(bad)
    # a branch the selection reads is required from the inputs (named with the key that needs it)
    ok = json.loads(json.dumps(raw))
    ok["features"]["candidate"]["pt"]["selection"] = "no_such_branch > 0"
    assert config_from_dict(ok).required_branches()["no_such_branch"] == "features.candidate.pt"


def test_apply_scaling_in_place_is_bit_identical():
    """The one-work-array scaling gives the bits of the expression written out, NaN/inf -> default,
    and in place only when asked for (the input is otherwise left alone)."""
    rng = np.random.default_rng(11)
    x = rng.normal(50, 7, (1000, 3))
    x[::17, 0] = np.nan
    x[::29, 1] = np.inf
    x[::31, 2] = -np.inf
    mean, std = np.array([50.0, 49.0, 51.0]), np.array([7.0, 6.5, 0.3])
    lo, hi = np.array([-5.0, -np.inf, -3.0]), np.array([5.0, np.inf, 3.0])
    default = np.array([0.5, -1.0, 2.0])
    y = (x - mean) / std
    y = np.clip(y, lo, hi)
    ref = np.where(np.isfinite(y), y, default)
    keep = x.copy()
    out = apply_scaling(x, mean, std, lo, hi, default)
    assert out.tobytes() == ref.tobytes()
    assert np.array_equal(x, keep, equal_nan=True)   # not in place unless asked
    assert out[0, 0] == 0.5 and out[29, 1] == -1.0 and out[31, 2] == -3.0   # NaN, inf unbounded, -inf clamped
    inplace = apply_scaling(x, mean, std, lo, hi, default, inplace=True)
    assert inplace is x and x.tobytes() == ref.tobytes()
    f32 = keep.astype(np.float32)
    assert apply_scaling(f32, mean, std, lo, hi, default, inplace=True).dtype == np.float64  # never in float32
