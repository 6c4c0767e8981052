"""ToRecords: TFRecord content equals the HDF5 file; the loader yields model-ready batches."""

from __future__ import annotations

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
