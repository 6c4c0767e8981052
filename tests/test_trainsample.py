"""WriteTrainSample core: splits, ordering/padding, layout, attributes and scaling applied."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import uproot

from taggerflow.trainsample import order_and_pad, split_index, write_train_sample


def test_split_index_deterministic_and_fractions():
    rng = np.random.default_rng(1)
    events = rng.integers(0, 2**63, 200_000, dtype=np.uint64)
    ds = np.full(len(events), 12345, dtype=np.int64)
    fr = {"train": 0.7, "validation": 0.2, "test": 0.1}
    s = split_index(events, ds, fr)
    np.testing.assert_array_equal(s, split_index(events.copy(), ds, fr))
    np.testing.assert_allclose(np.bincount(s) / len(s), [0.7, 0.2, 0.1], atol=0.005)
    # the dataset id changes the assignment (events of different datasets are unrelated)
    assert np.mean(s != split_index(events, ds + 1, fr)) > 0.3
    # consecutive event numbers are not correlated with the split
    seq = split_index(np.arange(100_000, dtype=np.uint64), np.zeros(100_000, dtype=np.int64), fr)
    np.testing.assert_allclose(np.bincount(seq) / len(seq), [0.7, 0.2, 0.1], atol=0.01)


def test_order_and_pad():
    counts = np.array([3, 0, 5, 1])
    key = np.array([1.0, 3.0, 2.0, 5.0, 4.0, 3.0, 2.0, 1.0, 9.0])
    flat = np.stack([key, key * 10], axis=1)
    padded, valid = order_and_pad(flat, counts, key, n_max=4)
    assert padded.shape == (4, 4, 2)
    np.testing.assert_array_equal(valid.sum(axis=1), [3, 0, 4, 1])
    np.testing.assert_array_equal(padded[0, :, 0], [3, 2, 1, 0])
    np.testing.assert_array_equal(padded[2, :, 0], [5, 4, 3, 2])  # truncated: the smallest (1) dropped
    np.testing.assert_array_equal(padded[2, :, 1], [50, 40, 30, 20])
    np.testing.assert_array_equal(padded[1], 0)
    np.testing.assert_array_equal(padded[3, :, 0], [9, 0, 0, 0])


def test_write_train_sample_layout_and_scaling(files_config, shard_and_scaling):
    cfg = files_config
    shard, scaling, d = shard_and_scaling
    outputs = {s: str(d / f"{s}.h5") for s in ("train", "validation", "test")}
    counts = write_train_sample(cfg, [shard], scaling, outputs)
    n_shard = uproot.open(shard)["candidates"].num_entries
    assert sum(counts.values()) == n_shard
    assert counts["train"] > counts["validation"] > 0 and counts["test"] > 0
    coll = cfg.collections[0]
    cand_names = [v.name for v in cfg.candidate_variables]
    with h5py.File(outputs["train"], "r") as f:
        n = counts["train"]
        assert f["jets/inputs"].shape == (n, len(cand_names))
        assert list(f["jets/inputs"].attrs["variables"]) == cand_names
        assert list(f["jets/labels"].attrs["classes"]) == cfg.class_names
        assert f["jets/labels_one_hot"].shape == (n, 4)
        np.testing.assert_array_equal(f["jets/labels_one_hot"][:].argmax(1), f["jets/labels"][:])
        assert f["pfcand/inputs"].shape == (n, coll.n_max, len(coll.variables))
        assert list(f["pfcand/inputs"].attrs["variables"]) == coll.variable_names
        assert f["pfcand/valid"].dtype == bool
        assert json.loads(f.attrs["scaling"]) == json.loads(json.dumps(scaling))
        x = f["jets/inputs"][:]
        # raw kinematics beside the scaled inputs: pt undoes the scaling of the 'pt' input
        pt_col = cand_names.index("pt")
        p = scaling["candidate"]["pt"]["global"]
        unclamped = np.abs(x[:, pt_col]) < 4.9
        np.testing.assert_allclose(f["jets/pt"][:][unclamped], x[unclamped, pt_col] * p["std"] + p["mean"], rtol=1e-4)
        assert f["jets/pt"][:].min() >= 20 and f["jets/event"].dtype == np.uint64
        tracks, valid = f["pfcand/inputs"][:], f["pfcand/valid"][:]
    # normal-scaled candidate variables: mean ~0, std ~1 on the (train part of the) sample
    for i, v in enumerate(cfg.candidate_variables):
        if v.scaling == "normal":
            assert abs(x[:, i].mean()) < 0.15, v.name
            assert 0.8 < x[:, i].std() < 1.2, v.name
        if v.scaling == "linear":
            assert x[:, i].min() >= -1 and x[:, i].max() <= 1
    # padded slots are zero; real constituents sorted by pt (pt_frac, scaled linearly, is monotonic)
    assert np.all(tracks[~valid] == 0)
    ptf = tracks[..., coll.variable_names.index("pt_frac")]
    for row, ok in zip(ptf[:200], valid[:200]):
        r = row[ok]
        assert np.all(np.diff(r) <= 1e-6)
    assert valid.sum(1).max() == coll.n_max  # some candidates were truncated


def test_splits_disjoint_by_event(files_config, shard_and_scaling):
    cfg = files_config
    shard, scaling, d = shard_and_scaling
    t = uproot.open(shard)["candidates"]
    ev = t["event"].array(library="np")
    ds = t["dataset_id"].array(library="np")
    s = split_index(ev, ds, cfg.raw["train_sample"]["split"])
    keys = {}
    for e, dd, si in zip(ev, ds, s):
        keys.setdefault((int(e), int(dd)), set()).add(int(si))
    assert all(len(v) == 1 for v in keys.values())
    assert any(list(ev).count(e) > 1 for e in ev[:300])  # events with several candidates exist


def test_missing_scaling_variable_is_an_error(files_config, shard_and_scaling, tmp_path):
    shard, scaling, _ = shard_and_scaling
    broken = json.loads(json.dumps(scaling))
    del broken["pfcand"]["dz"]
    outputs = {s: str(tmp_path / f"{s}.h5") for s in ("train", "validation", "test")}
    with pytest.raises(Exception, match=r"pfcand.dz"):
        write_train_sample(files_config, [shard], broken, outputs)
    assert not any((tmp_path / f"{s}.h5").exists() for s in outputs)  # nothing half-written
    assert not list(tmp_path.iterdir())
