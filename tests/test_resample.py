"""ShuffleMergeSpectral core: splitting, acceptance, manifests, balance, determinism."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

from taggerflow.resample import ResamplingError, acceptance, run_job, split_entries
from taggerflow.spectrum import coarse_counts, file_spectrum, fine_edges
from taggerflow.utils import read_json


def test_split_entries_covers_everything_once():
    files = [("a", 10), ("b", 0), ("c", 7), ("d", 2**33)]
    jobs = split_entries(files, 4)
    sizes = [sum(s.stop - s.start for s in j) for j in jobs]
    total = 10 + 7 + 2**33
    assert sum(sizes) == total
    assert max(sizes) - min(sizes) <= 1
    # contiguous, non-overlapping, in file order
    seen = {}
    for job in jobs:
        for s in job:
            seen.setdefault(s.path, []).append((s.start, s.stop))
    for path, n in files:
        ranges = sorted(seen.get(path, []))
        covered = 0
        for a, b in ranges:
            assert a == covered
            covered = b
        assert covered == n
    assert split_entries([("a", 3)], 5)[4] == []  # more jobs than entries: empty jobs, nothing lost


def test_acceptance_flattens_and_balances():
    counts = {"A": np.array([[[100, 50], [25, 10]], [[400, 200], [100, 40]]], dtype=np.int64),
              "B": np.array([[[10, 10], [10, 10]], [[0, 0], [0, 0]]], dtype=np.int64)}
    P, p = acceptance(counts, ["sig", "bkg"], {"sig": 1, "bkg": 1}, False, [0, 1, 2], [0, 1, 2])
    exp_A = counts["A"] * P["A"]
    # every bin of a (dataset, class) yields the count of its least populated bin
    np.testing.assert_allclose(exp_A[0], 10)
    np.testing.assert_allclose(exp_A[1], 40)
    assert P["B"][1].sum() == 0  # B provides no bkg
    expected = [(counts[d] * P[d])[t].sum() * p[t] for d in counts for t in range(2)]
    sig = expected[0] + expected[2]
    bkg = expected[1] + expected[3]
    assert sig == pytest.approx(bkg)
    assert max(p) == pytest.approx(1.0)

    # -1: take all of that class
    P2, p2 = acceptance(counts, ["sig", "bkg"], {"sig": -1, "bkg": 1}, False, [0, 1, 2], [0, 1, 2])
    assert np.all(P2["A"][0] == 1) and p2[0] == 1


def test_acceptance_errors():
    counts = {"A": np.array([[[5, 0], [1, 1]], [[1, 1], [1, 1]]])}
    with pytest.raises(ResamplingError, match=r"dataset 'A', class 'sig': empty bin pt \[0, 1\) x \|eta\| \[1, 2\)"):
        acceptance(counts, ["sig", "bkg"], {"sig": 1, "bkg": 1}, False, [0, 1, 2], [0, 1, 2])
    P, _ = acceptance(counts, ["sig", "bkg"], {"sig": 1, "bkg": 1}, True, [0, 1, 2], [0, 1, 2])
    assert P["A"][0, 0, 1] == 0
    none = {"A": np.array([[[5, 5]], [[0, 0]]])}
    with pytest.raises(ResamplingError, match="class 'bkg' has ratio 1 but no dataset provides"):
        acceptance(none, ["sig", "bkg"], {"sig": 1, "bkg": 1}, False, [0, 1], [0, 1, 2])


def _plan(cfg, files):
    rs = cfg.raw["resampling"]
    pt_e, eta_e = fine_edges(cfg)
    coarse, per_ds = {}, {}
    spectra_entries = {}
    for ds, path in files.items():
        res = file_spectrum(cfg, path)
        counts = np.stack([res["hists"][c].values(flow=True) for c in cfg.class_names]).astype(np.int64)
        coarse[ds] = coarse_counts(counts, pt_e, eta_e, rs["pt_bins"], rs["eta_bins"])
        per_ds[ds] = [(path, res["entries"])]
        spectra_entries[path] = res["entries"]
    P, p = acceptance(coarse, cfg.class_names, rs["class_ratio"], False, rs["pt_bins"], rs["eta_bins"])
    return P, p, per_ds, spectra_entries


def test_run_job_manifests_balance_and_determinism(files_config, demo_files, tmp_path):
    cfg = files_config
    P, p, per_ds, entries = _plan(cfg, demo_files)
    n_jobs = 2
    manifests = []
    for j in range(n_jobs):
        segs = {ds: split_entries(f, n_jobs)[j] for ds, f in per_ds.items()}
        manifests.append(run_job(cfg, j, segs, P, p, str(tmp_path / f"s{j}.root"), str(tmp_path / f"m{j}.json")))
    # nothing lost: read = accepted + rejected + unlabelled per file; reads sum to the spectrum's entries
    reads = {}
    for m in manifests:
        for path, e in m["files"].items():
            assert e["read"] == sum(e["accepted"].values()) + sum(e["rejected"].values()) + e["unlabelled"]
            reads[path] = reads.get(path, 0) + e["read"]
    assert reads == entries
    # written shard content agrees with the manifest, all branches kept plus the new ones
    labels = []
    for j, m in enumerate(manifests):
        t = uproot.open(str(tmp_path / f"s{j}.root"))["candidates"]
        assert t.num_entries == m["entries_written"]
        assert {"class_label", "dataset_id", "dataset_group_id", "pfcand_pt", "npfcand", "iso_charged"} <= set(t.keys())
        labels.append(t["class_label"].array(library="np"))
        assert read_json(str(tmp_path / f"m{j}.json"))["entries_written"] == m["entries_written"]
    labels = np.concatenate(labels)
    frac = np.bincount(labels, minlength=4) / len(labels)
    np.testing.assert_allclose(frac, 0.25, atol=0.05)
    # datasets are mixed: no long runs of one dataset in the output
    ids = uproot.open(str(tmp_path / "s0.root"))["candidates"]["dataset_id"].array(library="np")
    runs = np.diff(np.flatnonzero(np.diff(ids) != 0))
    assert len(np.unique(ids)) == len(demo_files) and runs.max() < 40

    # same inputs and seed: identical content; another job index: a different permutation
    segs = {ds: split_entries(f, n_jobs)[0] for ds, f in per_ds.items()}
    run_job(cfg, 0, segs, P, p, str(tmp_path / "again.root"), str(tmp_path / "again.json"))
    a = uproot.open(str(tmp_path / "s0.root"))["candidates"].arrays(library="ak")
    b = uproot.open(str(tmp_path / "again.root"))["candidates"].arrays(library="ak")
    assert ak.to_list(a) == ak.to_list(b)
