"""Spectrum: histograms equal a direct numpy count; coarse rebinning is exact; ROOT output readable."""

from __future__ import annotations

import numpy as np
import uproot

from taggerflow.io import labels_from_truth
from taggerflow.spectrum import coarse_counts, file_spectrum, fine_edges, load_spectrum, write_spectrum


def test_file_spectrum_matches_numpy(tiny_config, demo_files, tmp_path):
    path = demo_files["WJets"]
    res = file_spectrum(tiny_config, path)
    t = uproot.open(path)["candidates"]
    pt = t["pt"].array(library="np")
    aeta = np.abs(t["eta"].array(library="np"))
    labels = labels_from_truth(t["gen_match"].array(library="np"), tiny_config.truth_codes)
    assert res["entries"] == t.num_entries
    pt_e, eta_e = fine_edges(tiny_config)
    total = 0
    for i, c in enumerate(tiny_config.class_names):
        sel = labels == i
        expected, _, _ = np.histogram2d(pt[sel], aeta[sel], bins=[pt_e, eta_e])
        np.testing.assert_array_equal(res["hists"][c].values(), expected)
        np.testing.assert_array_equal(res["counts_flow"][i], res["hists"][c].values(flow=True))
        total += res["hists"][c].values(flow=True).sum()
    assert total + res["unlabelled"] == res["entries"]
    assert list(res["hists"]) == tiny_config.class_names
    np.testing.assert_array_equal(res["pt_edges"], pt_e)
    np.testing.assert_array_equal(res["abs_eta_edges"], eta_e)

    npz, root = str(tmp_path / "s.npz"), str(tmp_path / "s.root")
    write_spectrum(res, npz, root, tiny_config.class_names)
    loaded = load_spectrum(npz)
    assert loaded["counts_flow"].sum() + loaded["unlabelled"] == loaded["entries"] == t.num_entries
    np.testing.assert_array_equal(loaded["counts_flow"], res["counts_flow"])
    h = uproot.open(root)["spectrum_tau"]
    assert h.classname.startswith("TH2")
    np.testing.assert_array_equal(h.values(), res["hists"]["tau"].values())

    # coarse rebinning equals histogramming directly into the coarse bins
    pt_bins, eta_bins = [20, 40, 70, 1000], [0.0, 1.0, 2.3]
    coarse = coarse_counts(loaded["counts_flow"], pt_e, eta_e, pt_bins, eta_bins)
    for i in range(len(tiny_config.class_names)):
        sel = labels == i
        direct, _, _ = np.histogram2d(pt[sel], aeta[sel], bins=[pt_bins, eta_bins])
        np.testing.assert_array_equal(coarse[i], direct)


def test_bin_guess_is_searchsorted_wherever_not_flagged():
    """_Binner's arithmetic bin guess equals np.searchsorted(edges, x, 'right') for float32 and float64
    values wherever it does not flag the value for exact binning: on and next to every edge, far
    outside the range, +-inf; NaN is flagged. Few random values are flagged."""
    from taggerflow.spectrum import _Binner

    rng = np.random.default_rng(7)
    for edges in (np.linspace(20, 1000, 197), np.linspace(0, 2.3, 24), np.linspace(-5, 5, 11),
                  np.linspace(0.1, 0.3, 7), np.linspace(1e4, 1e4 + 1, 1001)):
        lo, hi = edges[0], edges[-1]
        uniform = rng.uniform(lo - (hi - lo), hi + (hi - lo), 20_000)
        special = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf),
                                  [1e30, -1e30, 0.0, -0.0, np.inf, -np.inf]])
        for dtype in (np.float32, np.float64):
            b = _Binner(edges, np.linspace(0, 1, 2), {"a": [0]}, 1)
            f = edges.astype(dtype)
            x = np.concatenate([uniform, special]).astype(dtype)
            x = np.concatenate([x, np.nextafter(f, dtype(np.inf)), np.nextafter(f, dtype(-np.inf)), [np.nan]])
            ref = np.searchsorted(edges, x.astype(np.float64), side="right")
            guess, near = b._guess(x, edges)
            np.testing.assert_array_equal(guess[~near], ref[~near])
            assert near[-1]   # NaN: binned exactly
            assert near[:len(uniform)].mean() < 0.01, (edges[0], dtype, near[:len(uniform)].mean())
            # |x|: the same for absolute values
            guess, near = b._guess(-x, edges, absolute=True)
            ref = np.searchsorted(edges, np.abs(x.astype(np.float64)), side="right")
            np.testing.assert_array_equal(guess[~near], ref[~near])
            assert near[-1]


def test_binner_matches_reference():
    """_Binner (truth slabs or class indices, int32 work arrays) equals searchsorted + labels_from_truth
    for every truth dtype, float32/float64 values with NaN/inf, and codes too spread for slabs."""
    from taggerflow.io import labels_from_truth
    from taggerflow.spectrum import _Binner

    rng = np.random.default_rng(3)
    pt_e, eta_e = np.linspace(20, 1000, 197), np.linspace(0, 2.3, 24)
    for codes in ({"tau": [5], "e": [1, 3], "mu": [2, 4], "jet": [0]}, {"a": [7, -2], "b": [7, 9]},
                  {"a": [0], "b": [100_000]}, {"a": [3_000_000_000, 4], "b": [3_000_000_001]}):
        for tdtype in (np.int32, np.int64, np.uint8, np.int16, np.float64, np.bool_):
            for fdtype in (np.float32, np.float64, np.float16):
                b = _Binner(pt_e, eta_e, codes, len(codes))
                ref = np.zeros((len(codes), len(pt_e) + 1, len(eta_e) + 1), dtype=np.int64)
                unl = 0
                for n in (5000, 0, 1234):
                    pt = rng.uniform(0, 1100, n).astype(fdtype)
                    eta = rng.uniform(-3, 3, n).astype(fdtype)
                    if n:
                        pt[:3] = [np.nan, np.inf, pt_e[5]]
                        eta[3:6] = [-np.inf, np.nan, -eta_e[4]]
                        for x, e in ((pt, pt_e), (eta, eta_e)):   # on and next to every edge
                            on = np.concatenate([e, np.nextafter(e, -np.inf), np.nextafter(e, np.inf)]).astype(fdtype)
                            on = np.concatenate([on, np.nextafter(e.astype(fdtype), fdtype(np.inf)),
                                                 np.nextafter(e.astype(fdtype), fdtype(-np.inf)), [1e30, -1e30]])
                            with np.errstate(over="ignore"):   # float16: +-1e30 become +-inf
                                x[10:10 + len(on)] = on
                    tr = rng.integers(-3, 12, n)
                    tr = (tr > 4) if tdtype is np.bool_ else tr.astype(tdtype)
                    b.add(pt, eta, tr)
                    lab = labels_from_truth(tr, codes)
                    ok = lab >= 0
                    unl += int((~ok).sum())
                    ip = np.searchsorted(pt_e, pt.astype(np.float64), side="right")
                    ie = np.searchsorted(eta_e, np.abs(eta.astype(np.float64)), side="right")
                    np.add.at(ref, (lab[ok], ip[ok], ie[ok]), 1)
                counts, unlabelled = b.result()
                np.testing.assert_array_equal(counts, ref)
                assert unlabelled == unl


def test_collector_paused_only_where_reads_make_no_cycles(demo_files, tmp_path):
    """Spectrum pauses Python's garbage collector while it opens a file and while it reads flat
    branches as numpy arrays (reads that make no reference cycles, so memory stays that of one chunk),
    not while it reads awkward arrays (a selection), and gc_paused restores the collector's state."""
    import gc

    from conftest import tiny_raw
    from taggerflow.config import config_from_dict
    from taggerflow.readers import input_spec, open_source
    from taggerflow.spectrum import _Binner, _count
    from taggerflow.utils import gc_paused

    assert gc.isenabled()
    try:
        with gc_paused():
            assert not gc.isenabled()
            raise KeyError("x")
    except KeyError:
        pass
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()   # left as it was found
    finally:
        gc.enable()

    path = demo_files["WJets"]
    seen: list[bool] = []
    real_add = _Binner.add

    def add(self, *args):
        seen.append(gc.isenabled())
        return real_add(self, *args)

    _Binner.add = add
    try:
        for selection, collector_on in ((None, False), ("pt > 30", True)):
            raw = tiny_raw()
            raw["inputs"]["chunk_size"] = 100
            if selection:
                raw["inputs"]["selection"] = selection
            cfg = config_from_dict(raw, str(tmp_path / "c.yaml"))
            seen.clear()
            res = file_spectrum(cfg, path)
            assert len(seen) == -(-res["entries"] // 100) and set(seen) == {collector_on}
            assert gc.isenabled()
        # the numpy reads leave nothing for the collector: no memory held back while it is paused
        cfg = config_from_dict(tiny_raw() | {"inputs": {**tiny_raw()["inputs"], "chunk_size": 100}},
                               str(tmp_path / "c2.yaml"))
        spec = input_spec(cfg, None)
        src = open_source(spec, path)
        try:
            gc.collect()
            gc.disable()
            counts = _count(cfg, spec, src, 0, src.num_entries)
            assert gc.collect() == 0
        finally:
            gc.enable()
            src.close()
        assert counts["candidates"] == res["entries"]
    finally:
        _Binner.add = real_add
