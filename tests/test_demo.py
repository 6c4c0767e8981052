"""Tests for taggerflow.demo: the synthetic tau-ID ntuple generator."""

from __future__ import annotations

import os

import awkward as ak
import numpy as np
import pytest
import uproot

from taggerflow import demo
from taggerflow.demo import TRUTH_CODES, generate_demo_file

FRACTIONS = {"tau": 0.3, "e": 0.2, "mu": 0.2, "jet": 0.3}
N_ENTRIES = 4000
CHUNK = 1500  # several chunks, last one partial

EXPECTED_DTYPES = {
    "event": np.uint64, "run": np.int32, "pt": np.float32, "eta": np.float32, "phi": np.float32,
    "mass": np.float32, "charge": np.int32, "decay_mode": np.int32, "iso_charged": np.float32,
    "iso_neutral": np.float32, "lead_pt_frac": np.float32, "em_fraction": np.float32,
    "n_muon_stations": np.int32, "ip_sig": np.float32, "gen_match": np.int32, "npfcand": np.int32,
}
EXPECTED_PFCAND = {
    "pfcand_pt": np.float32, "pfcand_deta": np.float32, "pfcand_dphi": np.float32, "pfcand_d0": np.float32,
    "pfcand_d0_sig": np.float32, "pfcand_dz": np.float32, "pfcand_dz_sig": np.float32,
    "pfcand_charge": np.int32, "pfcand_ptype": np.int32,
}


def _write(path, **overrides):
    kwargs = dict(dataset="TT", n_entries=N_ENTRIES, class_fractions=FRACTIONS, pt_scale=40.0,
                  eta_width=1.2, seed=7, file_index=3, chunk_size=CHUNK)
    kwargs.update(overrides)
    return generate_demo_file(str(path), **kwargs)


def _read(path) -> ak.Array:
    with uproot.open(path) as f:
        return f["candidates"].arrays(library="ak")


def _auc(score: np.ndarray, label: np.ndarray) -> float:
    """Mann-Whitney AUC (ties are negligible for continuous scores)."""
    ranks = np.empty(len(score))
    ranks[np.argsort(score, kind="stable")] = np.arange(1, len(score) + 1)
    n_pos = label.sum()
    n_neg = len(label) - n_pos
    return float((ranks[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo") / "nested" / "TT_3.root"  # parent dir created by the generator
    counts = _write(path)
    return path, counts, _read(path)


def test_branches_dtypes_and_entries(sample):
    path, _, arrays = sample
    with uproot.open(path) as f:
        tree = f["candidates"]
        assert tree.num_entries == N_ENTRIES
        assert set(tree.keys()) == set(EXPECTED_DTYPES) | set(EXPECTED_PFCAND)
        for name, dtype in EXPECTED_DTYPES.items():
            assert tree[name].interpretation.numpy_dtype.newbyteorder("=") == np.dtype(dtype), name
        for name, dtype in EXPECTED_PFCAND.items():
            assert tree[name].interpretation.content.numpy_dtype.newbyteorder("=") == np.dtype(dtype), name
    assert len(arrays) == N_ENTRIES
    assert ak.all(arrays["npfcand"] == ak.num(arrays["pfcand_pt"]))
    for name in EXPECTED_PFCAND:
        assert ak.all(ak.num(arrays[name]) == arrays["npfcand"]), name
    # no temporary file left next to the output
    assert sorted(os.listdir(path.parent)) == [path.name]


def test_class_counts_match_file_and_fractions(sample):
    _, counts, arrays = sample
    gm = ak.to_numpy(arrays["gen_match"])
    assert set(counts) == set(TRUTH_CODES)
    assert sum(counts.values()) == N_ENTRIES
    for name, codes in TRUTH_CODES.items():
        codes = codes if isinstance(codes, tuple) else (codes,)
        assert counts[name] == np.isin(gm, codes).sum(), name
        p = FRACTIONS[name]
        sigma = np.sqrt(N_ENTRIES * p * (1 - p))
        assert abs(counts[name] - N_ENTRIES * p) < 4 * sigma, name
    assert set(np.unique(gm)) <= {0, 1, 2, 3, 4, 5}
    # electrons and muons mostly prompt (1, 2), some from taus (3, 4)
    assert (gm == 1).sum() > 3 * (gm == 3).sum() > 0
    assert (gm == 2).sum() > 3 * (gm == 4).sum() > 0


def test_missing_class_gets_zero(tmp_path):
    counts = _write(tmp_path / "q.root", n_entries=300, class_fractions={"jet": 1.0})
    assert counts == {"tau": 0, "e": 0, "mu": 0, "jet": 300}
    assert np.all(ak.to_numpy(_read(tmp_path / "q.root")["gen_match"]) == 0)


def test_events_and_run(sample):
    _, _, arrays = sample
    event = ak.to_numpy(arrays["event"]).astype(np.int64)
    assert np.all(ak.to_numpy(arrays["run"]) == 1)
    assert np.all(event // 10**9 == 3)  # file_index 3
    steps = np.diff(event)
    assert set(np.unique(steps)) == {0, 1}  # consecutive entries share an event, no gaps
    _, mult = np.unique(event, return_counts=True)
    assert mult.min() >= 1 and mult.max() == 3
    assert 1.5 < N_ENTRIES / len(mult) < 2.0  # mean multiplicity ~1.7


def test_deterministic_and_seed_dependent(tmp_path):
    kw = dict(n_entries=1200, chunk_size=500)
    c1 = _write(tmp_path / "a.root", **kw)
    c2 = _write(tmp_path / "b.root", **kw)
    c3 = _write(tmp_path / "c.root", seed=8, **kw)
    a, b, c = _read(tmp_path / "a.root"), _read(tmp_path / "b.root"), _read(tmp_path / "c.root")
    assert c1 == c2
    for field in a.fields:
        assert ak.to_list(a[field]) == ak.to_list(b[field]), field
    assert not np.array_equal(ak.to_numpy(a["pt"]), ak.to_numpy(c["pt"]))
    assert not np.array_equal(ak.to_numpy(a["gen_match"]), ak.to_numpy(c["gen_match"]))
    # another file of the same dataset: different content and its own event-number range
    _write(tmp_path / "d.root", file_index=4, **kw)
    d = _read(tmp_path / "d.root")
    assert not np.array_equal(ak.to_numpy(a["pt"]), ak.to_numpy(d["pt"]))
    assert np.all(ak.to_numpy(d["event"]) // 10**9 == 4)


def test_kinematics(sample):
    _, _, arrays = sample
    pt = ak.to_numpy(arrays["pt"])
    eta = ak.to_numpy(arrays["eta"])
    phi = ak.to_numpy(arrays["phi"])
    assert pt.min() >= 20.0 and pt.max() < 1000.0
    assert ((pt >= 20) & (pt < 40)).sum() > 3 * ((pt >= 80) & (pt < 100)).sum() > 0  # falling
    assert np.abs(eta).max() < 2.3 and eta.std() > 0.8
    assert phi.min() >= -np.pi and phi.max() < np.pi and phi.std() > 1.5
    assert set(np.unique(ak.to_numpy(arrays["charge"]))) == {-1, 1}
    gm = ak.to_numpy(arrays["gen_match"])
    # class-dependent spectra: jets softer than taus, so resampling has something to do
    assert pt[gm == 0].mean() < pt[gm == 5].mean() - 5.0


def test_class_dependent_features(sample):
    _, _, arrays = sample
    gm = ak.to_numpy(arrays["gen_match"])
    tau, jet, ele, mu = gm == 5, gm == 0, np.isin(gm, (1, 3)), np.isin(gm, (2, 4))
    iso = ak.to_numpy(arrays["iso_charged"])
    assert iso.min() >= 0 and ak.min(arrays["iso_neutral"]) >= 0
    assert iso[tau].mean() < 0.5 * iso[jet].mean()
    nms = ak.to_numpy(arrays["n_muon_stations"])
    assert (nms[mu] > 0).mean() > 0.9 and nms[mu].max() <= 4
    assert (nms[~mu] == 0).mean() > 0.95
    emf = ak.to_numpy(arrays["em_fraction"])
    lpf = ak.to_numpy(arrays["lead_pt_frac"])
    assert emf.min() >= 0 and emf.max() <= 1 and lpf.min() >= 0 and lpf.max() <= 1
    assert emf[ele].mean() > 0.7 > emf[~ele].mean()
    assert ak.to_numpy(arrays["ip_sig"])[tau].mean() > ak.to_numpy(arrays["ip_sig"])[jet].mean() + 0.5
    dm = ak.to_numpy(arrays["decay_mode"])
    assert set(np.unique(dm)) == {0, 1, 10, 11}
    tau_dm = np.array([(dm[tau] == m).mean() for m in (0, 1, 10, 11)])
    assert np.allclose(tau_dm, [0.25, 0.45, 0.2, 0.1], atol=0.05)


def test_constituents(sample):
    _, _, arrays = sample
    gm = ak.to_numpy(arrays["gen_match"])
    n = ak.to_numpy(arrays["npfcand"])
    assert 0 < (n == 0).sum() < 0.02 * N_ENTRIES  # empty lists exist, but rarely
    big = n > 16  # more than the network's n_max: only jets and jet-like taus
    assert big.sum() > 0 and np.all(np.isin(gm[big], (0, 5))) and (gm[big] == 0).mean() > 0.8
    assert np.mean(n[gm == 0]) > 2 * np.mean(n[gm == 5])
    cpt = arrays["pfcand_pt"]
    pt = ak.to_numpy(arrays["pt"])
    assert ak.all(cpt > 0)
    assert np.all(ak.to_numpy(ak.sum(cpt, axis=1)) <= pt * (1 + 1e-5))
    lead = ak.to_numpy(ak.fill_none(ak.max(cpt, axis=1), 0.0)) / pt
    lpf = ak.to_numpy(arrays["lead_pt_frac"])
    assert np.median(np.abs(lead - lpf)) < 0.02 and np.all(lpf[n == 0] == 0)
    ptype = ak.flatten(arrays["pfcand_ptype"])
    charge = ak.flatten(arrays["pfcand_charge"])
    assert set(np.unique(ak.to_numpy(ptype))) == {0, 1, 2, 3, 4}
    neutral = (ptype == 1) | (ptype == 2)
    assert ak.all(charge[neutral] == 0) and ak.all(abs(charge[~neutral]) == 1)
    assert ak.all(ak.flatten(arrays["pfcand_d0"])[neutral] == 0)
    # leptons: muons carry a PF muon, electrons a PF electron (most of them)
    has_mu = ak.to_numpy(ak.any(arrays["pfcand_ptype"] == 4, axis=1))
    has_e = ak.to_numpy(ak.any(arrays["pfcand_ptype"] == 3, axis=1))
    assert has_mu[np.isin(gm, (2, 4))].mean() > 0.9 and has_mu[~np.isin(gm, (2, 4))].sum() == 0
    assert has_e[np.isin(gm, (1, 3))].mean() > 0.9 and has_e[~np.isin(gm, (1, 3))].sum() == 0
    # tau constituents narrow, jets broad; tau tracks displaced
    dr = np.sqrt(arrays["pfcand_deta"] ** 2 + arrays["pfcand_dphi"] ** 2)
    assert ak.mean(dr[gm == 5]) < 0.5 * ak.mean(dr[gm == 0])
    d0s = abs(arrays["pfcand_d0_sig"][arrays["pfcand_ptype"] == 0])
    assert ak.mean(d0s[gm == 5]) > 1.5 * ak.mean(d0s[gm == 0])
    # three-prong tau-like candidates have tracks whose charges sum to the candidate charge
    ch = ak.sum(arrays["pfcand_charge"], axis=1)
    sel = (gm == 5) & (ak.to_numpy(arrays["decay_mode"]) >= 10) & (n > 0)
    assert np.mean(ak.to_numpy(ch)[sel] == ak.to_numpy(arrays["charge"])[sel]) > 0.8


def test_tau_vs_jet_separable_but_not_perfectly(sample):
    _, _, arrays = sample
    gm = ak.to_numpy(arrays["gen_match"])
    sel = (gm == 5) | (gm == 0)
    y = gm[sel] == 5
    X = np.stack([
        np.log1p(ak.to_numpy(arrays["iso_charged"])[sel]),
        np.log1p(ak.to_numpy(arrays["iso_neutral"])[sel]),
        ak.to_numpy(arrays["npfcand"])[sel],
        ak.to_numpy(arrays["lead_pt_frac"])[sel],
        ak.to_numpy(arrays["ip_sig"])[sel],
        ak.to_numpy(arrays["mass"])[sel],
    ], axis=1).astype(np.float64)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    X = np.c_[X, np.ones(len(X))]
    half = len(y) // 2
    w = np.zeros(X.shape[1])
    for _ in range(300):  # plain gradient descent logistic regression on the first half
        p = 1.0 / (1.0 + np.exp(-X[:half] @ w))
        w -= 0.5 * X[:half].T @ (p - y[:half]) / half
    auc = _auc(X[half:] @ w, y[half:])
    assert 0.7 < auc < 0.995, auc
    # simple cut-based variable alone: isolation separates, but not perfectly either
    iso_auc = _auc(-(ak.to_numpy(arrays["iso_charged"]) + ak.to_numpy(arrays["iso_neutral"]))[sel], y)
    assert 0.7 < iso_auc < 0.99, iso_auc
    # the overlap comes from look-alikes: ~15 % of jets isolated like taus, a few % of taus jet-like
    iso_sum = ak.to_numpy(arrays["iso_charged"] + arrays["iso_neutral"])
    assert 0.07 < np.mean(iso_sum[gm == 0] < 5.0) < 0.3
    assert 0.025 < np.mean(ak.to_numpy(arrays["npfcand"])[gm == 5] > 6) < 0.1


@pytest.mark.parametrize("fractions, word", [
    ({"tau": 0.5, "e": 0.2, "mu": 0.2, "jet": 0.2}, "sum"),
    ({"tau": 0.5, "gluon": 0.5}, "gluon"),
    ({"tau": 1.2, "jet": -0.2}, "jet"),
])
def test_bad_fractions_raise_and_leave_nothing(tmp_path, fractions, word):
    out = tmp_path / "sub" / "bad.root"
    with pytest.raises(ValueError, match=word):
        _write(out, class_fractions=fractions)
    assert not out.exists() and not out.parent.exists()


@pytest.mark.parametrize("override", [
    {"n_entries": -1}, {"pt_scale": 0.0}, {"eta_width": float("nan")}, {"seed": -3}, {"chunk_size": 0},
])
def test_bad_arguments_raise(tmp_path, override):
    with pytest.raises(ValueError, match=next(iter(override))):
        _write(tmp_path / "bad.root", **override)
    assert os.listdir(tmp_path) == []


def test_error_while_writing_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    out = tmp_path / "x.root"
    _write(out, n_entries=500, chunk_size=200)
    before = out.read_bytes()
    calls = []
    original = demo._generate_chunk

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return original(*args, **kwargs)

    monkeypatch.setattr(demo, "_generate_chunk", failing)
    with pytest.raises(RuntimeError, match="boom"):
        _write(out, n_entries=500, chunk_size=200, seed=99)
    assert len(calls) == 2
    assert out.read_bytes() == before  # old complete file untouched
    assert os.listdir(tmp_path) == ["x.root"]  # no temporary left behind


def test_empty_file(tmp_path):
    out = tmp_path / "empty.root"
    assert _write(out, n_entries=0) == {"tau": 0, "e": 0, "mu": 0, "jet": 0}
    with uproot.open(out) as f:
        assert f["candidates"].num_entries == 0
        assert "pfcand_pt" in f["candidates"].keys()
