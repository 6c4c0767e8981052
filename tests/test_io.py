"""Reader layer: clear errors naming the file/branch, exact entry ranges across files."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

from taggerflow.formats.candidate_tree import TreeSource
from taggerflow.io import InputError, candidate_features, collection_features, labels_from_truth, open_tree
from taggerflow.readers import input_spec, open_source
from taggerflow.resample import split_entries


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(InputError, match="nope.root: input file does not exist"):
        open_tree(str(tmp_path / "nope.root"), "candidates")
    bad = tmp_path / "bad.root"
    bad.write_bytes(b"this is not a ROOT file" * 10)
    with pytest.raises(InputError, match="bad.root: cannot be read as a ROOT file"):
        open_tree(str(bad), "candidates")


def test_truncated_file(demo_files, tmp_path):
    src = open(demo_files["DY"], "rb").read()
    cut = tmp_path / "cut.root"
    cut.write_bytes(src[: len(src) // 2])
    with pytest.raises(InputError, match="cut.root"):
        with TreeSource(str(cut), "candidates") as src:
            for _ in src.chunks(src.tree.keys(), 10_000):
                pass


def test_missing_tree_and_branch(demo_files):
    path = demo_files["DY"]
    with pytest.raises(InputError, match="no tree 'taus'"):
        open_tree(path, "taus")
    src = TreeSource(path, "candidates")
    with pytest.raises(InputError, match=r"branch 'pt_corr' \(needed by config key features.candidate.x\) not found "
                                         r"in tree 'candidates'"):
        src.check_fields({"pt": "spectrum", "pt_corr": "features.candidate.x"})
    n = src.num_entries
    assert n == int(uproot.open(path)["candidates"].num_entries) > 0
    with pytest.raises(InputError, match=rf"has {n} entries, expected at least {n + 1}"):
        next(src.chunks(["pt"], 100, 0, n + 1))


def test_job_segments_read_back_exact_ranges(tiny_config, demo_files):
    """The shuffle jobs' reading path: split_entries cuts the ordered file list into contiguous
    segments (files cut part-way), each read in blocks through the input source; every entry of
    every file is read exactly once, in order."""
    a, b = demo_files["DY"], demo_files["TT"]
    n_a, n_b = int(uproot.open(a)["candidates"].num_entries), int(uproot.open(b)["candidates"].num_entries)
    jobs = split_entries([(a, n_a), (b, n_b)], 3)
    assert [sum(s.stop - s.start for s in segs) for segs in jobs] == [len(x) for x in
                                                                      np.array_split(np.arange(n_a + n_b), 3)]
    assert any(len(segs) == 2 for segs in jobs)   # a job spans the file boundary
    spec = input_spec(tiny_config)
    got = {a: [], b: []}
    for segs in jobs:
        for seg in segs:
            src = open_source(spec, seg.path)
            for start in range(seg.start, seg.stop, 250):
                got[seg.path].append(src.read_numpy(start, min(seg.stop, start + 250), ["event"])["event"])
            src.close()
    ev_a = uproot.open(a)["candidates"]["event"].array(library="np")
    ev_b = uproot.open(b)["candidates"]["event"].array(library="np")
    np.testing.assert_array_equal(np.concatenate(got[a]), ev_a)
    np.testing.assert_array_equal(np.concatenate(got[b]), ev_b)


def test_features_and_labels(tiny_config, demo_files):
    path = demo_files["TT"]
    chunk = next(TreeSource(path, "candidates").chunks(sorted(tiny_config.required_branches()), 300, 0, 300))
    x = candidate_features(chunk, tiny_config.candidate_variables)
    names = [v.name for v in tiny_config.candidate_variables]
    np.testing.assert_allclose(x[:, names.index("abs_eta")], np.abs(ak.to_numpy(chunk["eta"])))
    coll = tiny_config.collections[0]
    flat, counts = collection_features(chunk, coll)
    np.testing.assert_array_equal(counts, ak.to_numpy(ak.num(chunk["pfcand_pt"])))
    frac = flat[:, coll.variable_names.index("pt_frac")]
    expected = ak.to_numpy(ak.flatten(chunk["pfcand_pt"] / chunk["pt"]))
    np.testing.assert_allclose(frac, expected, rtol=1e-6)
    labels = labels_from_truth(np.array([5, 1, 3, 2, 4, 0, 7]), tiny_config.truth_codes)
    assert labels.tolist() == [0, 1, 1, 2, 2, 3, -1]
