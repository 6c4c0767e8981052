"""ToRecords: TFRecord content equals the HDF5 file; the loader yields model-ready batches."""

from __future__ import annotations

import os

import numpy as np
import pytest

from taggerflow.records import read_h5, record_dataset, write_metadata, write_records
from taggerflow.trainsample import write_train_sample


@pytest.fixture(scope="module")
def train_h5(files_config, shard_and_scaling):
    shard, scaling, d = shard_and_scaling
    outputs = {s: str(d / f"rec_{s}.h5") for s in ("train", "validation", "test")}
    write_train_sample(files_config, [shard], scaling, outputs)
    return outputs["train"]


def test_records_equal_hdf5(files_config, train_h5, tmp_path):
    rec = str(tmp_path / "train.tfrecord")
    meta = write_records(train_h5, rec, chunk_size=97, add_vars=["pt", "abs_eta"])
    write_metadata(str(tmp_path / "train.json"), {rec: meta})
    h5 = read_h5([train_h5])
    n = len(h5["jets/labels"])
    assert meta["n_candidates"] == n
    assert meta["arrays"]["pfcand/inputs"]["shape"] == [16, 9]
    ds = record_dataset([rec], meta, batch_size=64, collections=["pfcand"], with_weights=True, with_add_vars=True)
    xs, ys, ws = [], [], []
    for x, y, w in ds.as_numpy_iterator():
        xs.append(x)
        ys.append(y)
        ws.append(w)
    got = {k: np.concatenate([x[k] for x in xs]) for k in xs[0]}
    np.testing.assert_array_equal(np.concatenate(ys), h5["jets/labels"])
    np.testing.assert_array_equal(got["candidate"], h5["jets/inputs"])
    np.testing.assert_array_equal(got["pfcand"], h5["pfcand/inputs"])
    np.testing.assert_array_equal(got["pfcand_valid"], h5["pfcand/valid"].astype(np.float32))
    names = meta["variables"]["jets/inputs"]
    np.testing.assert_array_equal(got["add_vars"], h5["jets/inputs"][:, [names.index("pt"), names.index("abs_eta")]])
    np.testing.assert_array_equal(np.concatenate(ws), h5["jets/weights"])


def test_shuffled_loader_is_deterministic_and_complete(train_h5, tmp_path):
    rec = str(tmp_path / "t.tfrecord")
    meta = write_records(train_h5, rec, chunk_size=50)
    def labels(seed):
        ds = record_dataset([rec], meta, batch_size=128, shuffle_buffer=500, seed=seed, collections=["pfcand"])
        return np.concatenate([y for _, y in ds.as_numpy_iterator()])
    a, b, c = labels(1), labels(1), labels(2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    h5 = read_h5([train_h5])["jets/labels"]
    assert not np.array_equal(a, h5)  # shuffled
    np.testing.assert_array_equal(np.sort(a), np.sort(h5))  # every candidate exactly once
    with pytest.raises(KeyError, match="not candidate variables"):
        write_records(train_h5, str(tmp_path / "x.tfrecord"), 10, add_vars=["nope"])


# ---------------------------------------------------------------------------------------------
# every array in the records; the HDF5 loader
import json  # noqa: E402

import h5py  # noqa: E402

from taggerflow.config import config_from_dict  # noqa: E402
from taggerflow.records import h5_dataset, load_metadata, record_arrays  # noqa: E402


@pytest.fixture(scope="module")
def full_h5(files_config, shard_and_scaling, tmp_path_factory):
    """Training files with every option on (float16, extra labels, weights, concatenated variables)."""
    shard, scaling, _ = shard_and_scaling
    raw = json.loads(json.dumps(files_config.raw))
    raw["train_sample"].update(precision="float16", chunk_rows=128, concat_jet_tracks=["pt"],
                               additional_labels=["pt", "eta"], constituent_labels={"pfcand": ["ptype"]},
                               weights=True)
    cfg = config_from_dict(raw, files_config.path)
    d = tmp_path_factory.mktemp("full_h5")
    outputs = {s: str(d / f"{s}.h5") for s in ("train", "validation", "test")}
    write_train_sample(cfg, [shard], scaling, outputs)
    return outputs


def test_records_hold_every_array(full_h5, tmp_path):
    rec = str(tmp_path / "v.tfrecord")
    meta = write_records(full_h5["validation"], rec, chunk_size=33, add_vars=["pt", "mass"])
    write_metadata(str(tmp_path / "v.json"), {rec: meta})
    meta = load_metadata(str(tmp_path / "v.json"))
    h5 = read_h5([full_h5["validation"]])
    got = record_arrays([rec], meta)
    assert set(got) == set(h5) | {"add_vars"}
    for k, v in h5.items():
        assert got[k].dtype == v.dtype, k
        np.testing.assert_array_equal(got[k], v, err_msg=k)
    names = meta["variables"]["jets/inputs"]
    np.testing.assert_array_equal(got["add_vars"], h5["jets/inputs"][:, [names.index("pt"), names.index("mass")]])
    assert meta["variables"]["jets/additional_labels"] == ["pt", "eta"]
    assert meta["variables"]["pfcand/labels"] == ["ptype"]
    assert meta["variables"]["add_vars"] == ["pt", "mass"]
    assert meta["arrays"]["pfcand/inputs"] == {"shape": [16, 10], "dtype": "float16"}
    assert meta["config_hash"] == h5py.File(full_h5["validation"], "r").attrs["config_hash"]
    assert sum(meta["files"].values()) == len(h5["jets/labels"])


def _rows(batches) -> np.ndarray:
    """One float64 row per sample (every input, label, weight), sorted: a set of samples."""
    rows = []
    for x, y, w in batches:
        n = len(y)
        parts = [x["candidate"], x["pfcand"].reshape(n, -1), x["pfcand_valid"], x["add_vars"], y[:, None], w[:, None]]
        rows.append(np.concatenate([np.asarray(p, dtype=np.float64) for p in parts], axis=1))
    a = np.concatenate(rows)
    return a[np.lexsort(a.T[::-1])]


def test_h5_loader_matches_records_and_is_deterministic(full_h5, tmp_path):
    files = sorted([full_h5["train"], full_h5["validation"], full_h5["test"]])
    recs = []
    metas = {}
    for i, f in enumerate(files):
        recs.append(str(tmp_path / f"{i}.tfrecord"))
        metas[recs[-1]] = write_records(f, recs[-1], chunk_size=50, add_vars=["pt"])
    write_metadata(str(tmp_path / "m.json"), metas)
    meta = load_metadata(str(tmp_path / "m.json"))
    sizes = [len(read_h5([f])["jets/labels"]) for f in files]
    n = sum(sizes)
    kw = dict(batch_size=64, collections=["pfcand"], with_weights=True, with_add_vars=True)

    def h5(seed, shuffle=300):
        return list(h5_dataset(files, shuffle_buffer=shuffle, seed=seed, add_vars=["pt"], block_rows=128,
                               **kw).as_numpy_iterator())

    def labels(batches):
        return np.concatenate([t[1] for t in batches])

    a, b, c = h5(1), h5(1), h5(2)
    x, y, w = a[0]
    assert set(x) == {"candidate", "pfcand", "pfcand_valid", "add_vars"}
    assert x["candidate"].dtype == np.float32 and x["pfcand_valid"].dtype == np.float32
    assert y.dtype == np.int32 and w.dtype == np.float32 and len(y) == 64
    np.testing.assert_array_equal(labels(a), labels(b))  # deterministic for a seed
    for k in x:
        np.testing.assert_array_equal(np.concatenate([t[0][k] for t in a]), np.concatenate([t[0][k] for t in b]))
    assert not np.array_equal(labels(a), labels(c))
    plain = h5(0, shuffle=0)  # no shuffling: the files in order
    np.testing.assert_array_equal(labels(plain), np.concatenate([read_h5([f])["jets/labels"] for f in files]))
    rows = _rows(a)
    assert len(rows) == n and len(np.unique(rows, axis=0)) == n
    np.testing.assert_array_equal(rows, _rows(plain))  # every candidate exactly once per epoch
    np.testing.assert_array_equal(_rows(c), rows)
    # shuffled across files: reading file after file would switch files twice
    file_of = {r.tobytes(): i for i, r in zip(np.repeat(np.arange(3), sizes),
                                              np.concatenate([t[0]["candidate"] for t in plain]))}
    order = np.array([file_of[r.tobytes()] for r in np.concatenate([t[0]["candidate"] for t in a])])
    assert np.count_nonzero(np.diff(order)) > 50
    assert set(order[: n // 2]) == {0, 1, 2}
    # a second epoch over the same dataset: another order, the same samples
    ds = h5_dataset(files, shuffle_buffer=300, seed=1, add_vars=["pt"], block_rows=128, **kw)
    e1, e2 = list(ds.as_numpy_iterator()), list(ds.as_numpy_iterator())
    assert not np.array_equal(labels(e1), labels(e2))
    np.testing.assert_array_equal(_rows(e2), rows)
    # the record loader yields the same samples
    r = list(record_dataset(recs, meta, shuffle_buffer=200, seed=3, **kw).as_numpy_iterator())
    np.testing.assert_array_equal(_rows(r), rows)


def test_h5_loader_errors(full_h5):
    with pytest.raises(ValueError, match="add_vars names"):
        h5_dataset([full_h5["train"]], 8, with_add_vars=True)
    with pytest.raises(KeyError, match="not candidate variables"):
        h5_dataset([full_h5["train"]], 8, with_add_vars=True, add_vars=["nope"])
    with pytest.raises(KeyError, match="no sequence 'tracks'"):
        h5_dataset([full_h5["train"]], 8, collections=["tracks"])


def test_records_are_written_with_the_same_bytes(train_h5, tmp_path):
    """The same training file gives the same TFRecord bytes in two processes: every Example is
    serialised deterministically (a protobuf map's default order changes with the process, and with
    it the file)."""
    import subprocess
    import sys

    script = "import sys; from taggerflow.records import write_records; write_records(sys.argv[1], sys.argv[2], 50)"
    paths = [str(tmp_path / f"{i}.tfrecord") for i in range(2)]
    for i, path in enumerate(paths):
        subprocess.run([sys.executable, "-c", script, train_h5, path], check=True, capture_output=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       env=dict(os.environ, PYTHONHASHSEED=str(i)))
    with open(paths[0], "rb") as a, open(paths[1], "rb") as b:
        first, second = a.read(), b.read()
    assert len(first) > 10000 and first == second
    # (without deterministic serialisation, four processes wrote four different files); and each
    # record is the deterministic serialisation of its Example
    import tensorflow as tf

    records = list(tf.data.TFRecordDataset(paths[0]).as_numpy_iterator())
    assert len(records) > 3
    for record in records:
        example = tf.train.Example.FromString(record)
        assert len(example.features.feature) > 5 and example.SerializeToString(deterministic=True) == record
