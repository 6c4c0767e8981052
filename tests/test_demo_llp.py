"""Tests for taggerflow.demo_llp: the LLP demo generator and its control region."""

from __future__ import annotations

import hashlib

import awkward as ak
import numpy as np
import pytest
import uproot

from taggerflow.demo_llp import generate_control_file, generate_llp_file, mean_decay_radius


def _read(path):
    with uproot.open(path) as f:
        return f["candidates"].arrays()


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_signal_deterministic_and_mass_dependent(tmp_path):
    a = tmp_path / "a" / "s.root"
    b = tmp_path / "b" / "s.root"
    for p in (a, b):
        generate_llp_file(p, "S125_15", 3000, "signal", seed=5, parameters={"m_H": 125, "m_S": 15}, chunk_size=1100)
    assert _sha(a) == _sha(b)
    generate_llp_file(tmp_path / "c.root", "S125_15", 3000, "signal", seed=6, parameters={"m_H": 125, "m_S": 15},
                      chunk_size=1100)
    assert _sha(tmp_path / "c.root") != _sha(a)

    light = _read(a)
    generate_llp_file(tmp_path / "h.root", "S600_150", 3000, "signal", seed=5, parameters={"m_H": 600, "m_S": 150})
    heavy = _read(tmp_path / "h.root")
    # mean radius follows the boost (exponential: sample mean within ~10 % for 3000 jets)
    assert np.mean(light["decay_radius"]) == pytest.approx(mean_decay_radius(125, 15), rel=0.1)
    assert np.mean(heavy["decay_radius"]) == pytest.approx(mean_decay_radius(600, 150), rel=0.1)
    assert np.mean(heavy["pt"]) > 2 * np.mean(light["pt"])
    assert set(np.unique(light["llp_class"]).tolist()) == {1}
    assert light["event"].tolist() == list(range(3000))


def test_three_collections_differ_per_process(tmp_path):
    means = {}
    for proc in ("signal", "qcd", "bib"):
        p = tmp_path / f"{proc}.root"
        out = generate_llp_file(p, proc, 2000, proc, seed=1, parameters={"m_H": 125, "m_S": 40})
        assert out == {proc: 2000}
        arr = _read(p)
        assert ak.all(arr["nclus"] == ak.num(arr["clus_pt"])) and ak.all(arr["nmseg"] == ak.num(arr["mseg_t0"]))
        means[proc] = {c: float(np.mean(arr[f"n{c}"])) for c in ("clus", "trk", "mseg")}
    assert means["qcd"]["trk"] > 3 * means["signal"]["trk"] > means["bib"]["trk"]
    assert means["bib"]["mseg"] > 5 * max(means["qcd"]["mseg"], means["signal"]["mseg"])
    assert means["qcd"]["clus"] > means["signal"]["clus"] > means["bib"]["clus"]


def test_control_data_differs_in_one_variable(tmp_path):
    generate_control_file(tmp_path / "mc.root", "CR", 2500, False, "log_ratio", 0.3, seed=9)
    generate_control_file(tmp_path / "data.root", "CR", 2500, True, "log_ratio", 0.3, seed=9)
    mc, data = _read(tmp_path / "mc.root"), _read(tmp_path / "data.root")
    shift = np.asarray(data["log_ratio"], dtype=np.float64) - np.asarray(mc["log_ratio"], dtype=np.float64)
    assert shift == pytest.approx(np.full(2500, 0.3), abs=1e-6)
    for field in mc.fields:
        if field != "log_ratio":
            assert ak.all(ak.ravel(mc[field] == data[field])), field
    generate_control_file(tmp_path / "d0.root", "CR", 2500, True, "log_ratio", 0.0, seed=9)
    assert _sha(tmp_path / "d0.root") != _sha(tmp_path / "mc.root")  # titles differ (data vs MC) ...
    assert ak.all(_read(tmp_path / "d0.root")["log_ratio"] == mc["log_ratio"])  # ... values do not


@pytest.mark.parametrize("kwargs, message", [
    (dict(process="higgs"), "unknown process 'higgs'"),
    (dict(process="signal", parameters={"m_H": 125}), "signal needs parameters"),
    (dict(process="signal", parameters={"m_H": 50, "m_S": 40}), "needs 0 < 2 m_S < m_H"),
])
def test_bad_arguments_write_nothing(tmp_path, kwargs, message):
    path = tmp_path / "x.root"
    with pytest.raises(ValueError, match=message):
        generate_llp_file(path, "X", 10, seed=1, **kwargs)
    assert not path.exists()
    with pytest.raises(ValueError, match="shift variable 'llp_class' is not one of"):
        generate_control_file(path, "X", 10, True, "llp_class", 0.1, seed=1)
    assert not path.exists()
