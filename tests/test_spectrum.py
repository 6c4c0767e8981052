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
        total += res["hists"][c].values(flow=True).sum()
    assert total + res["unlabelled"] == res["entries"]

    npz, root = str(tmp_path / "s.npz"), str(tmp_path / "s.root")
    write_spectrum(res, npz, root, tiny_config.class_names)
    loaded = load_spectrum(npz)
    assert loaded["counts_flow"].sum() + loaded["unlabelled"] == loaded["entries"] == t.num_entries
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
