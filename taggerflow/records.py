"""ToRecords and the tf.data loaders.

A TFRecord entry holds ``chunk_size`` candidates at once (batch-level serialisation: one
tf.train.Example per chunk with each array as raw bytes), which is much faster to parse than one
Example per candidate. A metadata JSON beside the shards gives names, shapes and dtypes.
TensorFlow is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import h5py
import numpy as np

from taggerflow.trainsample import CANDIDATE_GROUP
from taggerflow.utils import atomic_path, write_json

_DTYPES = {"float16": np.float16, "float32": np.float32, "int32": np.int32, "int8": np.int8, "bool": np.bool_,
           "int64": np.int64, "uint64": np.uint64}


def h5_layout(path: str) -> dict:
    """Arrays of a training file as {key: {"shape": per-candidate shape, "dtype": str}} plus names."""
    with h5py.File(path, "r") as f:
        arrays = {}
        for group in f:
            for name, ds in f[group].items():
                arrays[f"{group}/{name}"] = {"shape": list(ds.shape[1:]), "dtype": str(ds.dtype)}
        names = {f"{g}/inputs": list(f[g]["inputs"].attrs["variables"]) for g in f if "inputs" in f[g]}
        classes = list(f.attrs["classes"])
    return {"arrays": arrays, "variables": names, "classes": classes}


def write_records(h5_path: str, out_path: str, chunk_size: int, add_vars: Sequence[str] = ()) -> dict:
    """Convert one training HDF5 file into one TFRecord file; returns the metadata of its content.

    add_vars: candidate variables (by name) also stored as ``add_vars`` (conditional inputs).
    """
    import tensorflow as tf

    layout = h5_layout(h5_path)
    keys = sorted(layout["arrays"])
    cand_vars = layout["variables"][f"{CANDIDATE_GROUP}/inputs"]
    missing = [v for v in add_vars if v not in cand_vars]
    if missing:
        raise KeyError(f"{h5_path}: add_vars {missing} are not candidate variables ({cand_vars})")
    add_idx = [cand_vars.index(v) for v in add_vars]
    n_total = 0
    with atomic_path(out_path, suffix=".tfrecord") as tmp, h5py.File(h5_path, "r") as f, \
            tf.io.TFRecordWriter(tmp) as writer:
        n = f[f"{CANDIDATE_GROUP}/labels"].shape[0]
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            feats = {}
            for key in keys:
                arr = f[key][start:stop]
                feats[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[arr.tobytes()]))
            if add_idx:
                arr = f[f"{CANDIDATE_GROUP}/inputs"][start:stop][:, add_idx]
                feats["add_vars"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[arr.tobytes()]))
            feats["n"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[stop - start]))
            writer.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())
            n_total += stop - start
    meta = dict(layout)
    meta["n_candidates"] = n_total
    meta["chunk_size"] = chunk_size
    meta["add_vars"] = list(add_vars)
    if add_idx:
        dtype = layout["arrays"][f"{CANDIDATE_GROUP}/inputs"]["dtype"]
        meta["arrays"]["add_vars"] = {"shape": [len(add_idx)], "dtype": dtype}
    return meta


def write_metadata(path: str, per_file: dict[str, dict]) -> None:
    metas = list(per_file.values())
    first = metas[0]
    for name, m in per_file.items():
        if m["arrays"] != first["arrays"] or m["variables"] != first["variables"]:
            raise ValueError(f"{name}: layout differs from the other record files")
    write_json(path, {"arrays": first["arrays"], "variables": first["variables"], "classes": first["classes"],
                      "chunk_size": first["chunk_size"], "add_vars": first["add_vars"],
                      "files": {os.path.basename(k): v["n_candidates"] for k, v in per_file.items()}})


def _model_inputs(sample: dict, collections: Sequence[str], with_add_vars: bool):
    inputs = {"candidate": sample[f"{CANDIDATE_GROUP}/inputs"]}
    for coll in collections:
        inputs[coll] = sample[f"{coll}/inputs"]
        inputs[f"{coll}_valid"] = sample[f"{coll}/valid"]
    if with_add_vars and "add_vars" in sample:
        inputs["add_vars"] = sample["add_vars"]
    return inputs


def record_dataset(files: Sequence[str], metadata: dict, batch_size: int, shuffle_buffer: int = 0,
                   seed: int = 0, collections: Sequence[str] | None = None, with_weights: bool = False,
                   with_add_vars: bool = False):
    """tf.data pipeline over TFRecord files: ((inputs dict), label[, weight]) batches, float32 inputs.
    Files are interleaved and candidates shuffled within a buffer, deterministically for a seed."""
    import tensorflow as tf

    arrays = metadata["arrays"]
    collections = list(collections) if collections is not None else \
        [k.split("/")[0] for k in arrays if k.endswith("/valid")]
    spec = {k: tf.io.FixedLenFeature([], tf.string) for k in arrays}
    spec["n"] = tf.io.FixedLenFeature([], tf.int64)

    def parse(record):
        ex = tf.io.parse_single_example(record, spec)
        out = {}
        for k, a in arrays.items():
            if a["dtype"] == "uint64":  # decode_raw has no uint64: same bytes as int64, then bitcast
                t = tf.bitcast(tf.io.decode_raw(ex[k], tf.int64), tf.uint64)
            else:
                t = tf.io.decode_raw(ex[k], tf.as_dtype(_DTYPES[a["dtype"]]))
            t = tf.reshape(t, [-1, *a["shape"]])
            if t.dtype in (tf.float16, tf.bool, tf.int8) and not k.endswith("labels"):
                t = tf.cast(t, tf.float32)
            out[k] = t
        return out

    def to_model(sample):
        x = _model_inputs(sample, collections, with_add_vars)
        y = sample[f"{CANDIDATE_GROUP}/labels"]
        if with_weights:
            return x, y, sample[f"{CANDIDATE_GROUP}/weights"]
        return x, y

    files = sorted(files)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_buffer:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(lambda f: tf.data.TFRecordDataset(f), cycle_length=min(4, len(files)),
                       num_parallel_calls=1, deterministic=True)
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(to_model, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def read_h5(files: Sequence[str], max_candidates: int | None = None) -> dict[str, np.ndarray]:
    """Concatenate the arrays of training HDF5 files (small samples: evaluation, checks, tests)."""
    parts: dict[str, list[np.ndarray]] = {}
    n = 0
    for path in sorted(files):
        with h5py.File(path, "r") as f:
            m = f[f"{CANDIDATE_GROUP}/labels"].shape[0]
            take = m if max_candidates is None else min(m, max_candidates - n)
            for group in f:
                for name, ds in f[group].items():
                    parts.setdefault(f"{group}/{name}", []).append(ds[:take])
            n += take
        if max_candidates is not None and n >= max_candidates:
            break
    return {k: np.concatenate(v) for k, v in parts.items()}


def h5_model_inputs(arrays: dict[str, np.ndarray], collections: Sequence[str]) -> dict[str, np.ndarray]:
    """Model input dict (float32) from read_h5 arrays."""
    x = {"candidate": arrays[f"{CANDIDATE_GROUP}/inputs"].astype(np.float32)}
    for c in collections:
        x[c] = arrays[f"{c}/inputs"].astype(np.float32)
        x[f"{c}_valid"] = arrays[f"{c}/valid"].astype(np.float32)
    return x


def load_metadata(path: str) -> dict:
    with open(path) as f:
        return json.load(f)
