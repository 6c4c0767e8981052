"""ToRecords and the tf.data loaders (from TFRecords and from the training HDF5 files).

A TFRecord entry holds ``chunk_size`` candidates at once (batch-level serialisation: one
tf.train.Example per chunk with each array as raw bytes), which is much faster to parse than one
Example per candidate. Every array of the HDF5 file is stored, plus ``add_vars`` (candidate
variables for conditional inputs) when asked. A metadata JSON beside the shards gives names,
shapes and dtypes.

Both loaders yield the same batches: ``(inputs, label)`` or ``(inputs, label, weight)`` with
``inputs = {"candidate": (b, n_vars), <seq>: (b, n_max, n_vars), <seq>_valid: (b, n_max)[,
"add_vars": (b, k)]}``, float32 inputs, int32 labels, float32 weights. Shuffling is across files and
within a buffer, deterministic for a seed (and different at every iteration of the dataset, unless
``reshuffle=False``). Examples are serialised deterministically: the same data, the same bytes.
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

_DTYPES = {"float16": np.float16, "float32": np.float32, "float64": np.float64, "int32": np.int32,
           "int8": np.int8, "bool": np.bool_, "int64": np.int64, "uint64": np.uint64}


def h5_layout(path: str) -> dict:
    """Arrays of a training file as {key: {"shape": per-candidate shape, "dtype": str}}, the column
    names of every dataset that has them, the classes and the file's config_hash."""
    with h5py.File(path, "r") as f:
        arrays, names = {}, {}
        for group in f:
            for name, ds in f[group].items():
                arrays[f"{group}/{name}"] = {"shape": list(ds.shape[1:]), "dtype": str(ds.dtype)}
                if "variables" in ds.attrs:
                    names[f"{group}/{name}"] = [str(v) for v in ds.attrs["variables"]]
        classes = [str(c) for c in f.attrs["classes"]]
        config_hash = f.attrs.get("config_hash")
    out = {"arrays": arrays, "variables": names, "classes": classes}
    if config_hash is not None:
        out["config_hash"] = config_hash.decode() if isinstance(config_hash, bytes) else str(config_hash)
    return out


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
    # read blocks of many records at once (whole HDF5 chunks), serialise record by record
    block = chunk_size * max(1, 16384 // chunk_size)
    with atomic_path(out_path, suffix=".tfrecord") as tmp, h5py.File(h5_path, "r") as f, \
            tf.io.TFRecordWriter(tmp) as writer:
        n = f[f"{CANDIDATE_GROUP}/labels"].shape[0]
        for b0 in range(0, n, block):
            b1 = min(b0 + block, n)
            data = {key: f[key][b0:b1] for key in keys}
            if add_idx:
                data["add_vars"] = data[f"{CANDIDATE_GROUP}/inputs"][:, add_idx]
            for start in range(0, b1 - b0, chunk_size):
                stop = min(start + chunk_size, b1 - b0)
                feats = {k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[np.ascontiguousarray(v[start:stop]).tobytes()]))
                         for k, v in data.items()}
                feats["n"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[stop - start]))
                # the feature map is a protobuf map: without deterministic serialisation its order
                # (and so the file's bytes) changes from process to process
                example = tf.train.Example(features=tf.train.Features(feature=feats))
                writer.write(example.SerializeToString(deterministic=True))
                n_total += stop - start
    meta = dict(layout)
    meta["n_candidates"] = n_total
    meta["chunk_size"] = chunk_size
    meta["add_vars"] = list(add_vars)
    if add_idx:
        dtype = layout["arrays"][f"{CANDIDATE_GROUP}/inputs"]["dtype"]
        meta["arrays"]["add_vars"] = {"shape": [len(add_idx)], "dtype": dtype}
        meta["variables"]["add_vars"] = list(add_vars)
    return meta


def write_metadata(path: str, per_file: dict[str, dict]) -> None:
    metas = list(per_file.values())
    first = metas[0]
    for name, m in per_file.items():
        if m["arrays"] != first["arrays"] or m["variables"] != first["variables"]:
            raise ValueError(f"{name}: layout differs from the other record files")
    out = {"arrays": first["arrays"], "variables": first["variables"], "classes": first["classes"],
           "chunk_size": first["chunk_size"], "add_vars": first["add_vars"],
           "files": {os.path.basename(k): v["n_candidates"] for k, v in per_file.items()}}
    if "config_hash" in first:
        out["config_hash"] = first["config_hash"]
    write_json(path, out)


def _model_inputs(sample: dict, collections: Sequence[str], with_add_vars: bool):
    inputs = {"candidate": sample[f"{CANDIDATE_GROUP}/inputs"]}
    for coll in collections:
        inputs[coll] = sample[f"{coll}/inputs"]
        inputs[f"{coll}_valid"] = sample[f"{coll}/valid"]
    if with_add_vars and "add_vars" in sample:
        inputs["add_vars"] = sample["add_vars"]
    return inputs


def _record_parser(arrays: dict, cast: bool):
    """A function parsing one serialised record into {key: (n, *shape) tensor}; with ``cast``,
    float16/bool/int8 arrays (except labels) become float32."""
    import tensorflow as tf

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
            if cast and t.dtype in (tf.float16, tf.bool, tf.int8) and not k.endswith("labels"):
                t = tf.cast(t, tf.float32)
            out[k] = t
        return out

    return parse


def weight_keys(with_weights) -> tuple[str, ...]:
    """The datasets whose product is the batch weight: ``with_weights`` True -> the flattening
    weights (jets/weights); a sequence of keys (e.g. with jets/event_weight) -> those; False -> none."""
    if with_weights is True:
        return (f"{CANDIDATE_GROUP}/weights",)
    return tuple(with_weights or ())


def _to_model(collections: Sequence[str], with_weights, with_add_vars: bool):
    keys = weight_keys(with_weights)

    def to_model(sample):
        x = _model_inputs(sample, collections, with_add_vars)
        y = sample[f"{CANDIDATE_GROUP}/labels"]
        if keys:
            w = sample[keys[0]]
            for k in keys[1:]:
                w = w * sample[k]
            return x, y, w
        return x, y
    return to_model


def _default_collections(arrays) -> list[str]:
    return [k.split("/")[0] for k in arrays if k.endswith("/valid")]


def _window_shuffle(ds, window: int, seed: int, reshuffle: bool = True):
    """Permute the rows of a dataset of row blocks within windows of ``window`` rows: blocks are
    regrouped (rebatch, no per-row work) and each window gathered in a random order, drawn from
    ``seed`` and, with ``reshuffle``, different every iteration (epoch)."""
    import tensorflow as tf

    ds = ds.rebatch(window)
    rnd = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=reshuffle)

    def permute(rows, r):
        n = tf.shape(next(iter(rows.values())))[0]
        key = tf.stack([r, tf.constant(int(seed), tf.int64)])
        order = tf.argsort(tf.random.stateless_uniform([n], seed=key))
        return {k: tf.gather(v, order) for k, v in rows.items()}

    return tf.data.Dataset.zip(ds, rnd).map(permute, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def record_dataset(files: Sequence[str], metadata: dict, batch_size: int, shuffle_buffer: int = 0,
                   seed: int = 0, collections: Sequence[str] | None = None, with_weights: bool = False,
                   with_add_vars: bool = False, reshuffle: bool = True):
    """tf.data pipeline over TFRecord files: ((inputs dict), label[, weight]) batches, float32 inputs.

    With ``shuffle_buffer``: the file order is shuffled, files are interleaved, records (of
    ``chunk_size`` candidates) shuffled in a buffer of about ``shuffle_buffer`` candidates, and the
    candidates then permuted within windows of ``shuffle_buffer`` candidates; deterministic for
    ``seed``, a new order every iteration (epoch) of the dataset, or with ``reshuffle=False`` the
    same order every iteration (training builds one dataset per epoch, seeded from the epoch).
    Everything runs in TensorFlow, with no per-candidate step."""
    import tensorflow as tf

    arrays = metadata["arrays"]
    if with_add_vars and "add_vars" not in arrays:
        raise KeyError("with_add_vars: the records have no add_vars (records.add_vars was empty)")
    collections = list(collections) if collections is not None else _default_collections(arrays)
    # parse only what the model reads
    need = {f"{CANDIDATE_GROUP}/inputs", f"{CANDIDATE_GROUP}/labels"}
    need |= set(weight_keys(with_weights))
    missing = sorted(k for k in weight_keys(with_weights) if k not in arrays)
    if missing:
        raise KeyError(f"the records have no {missing[0]} (written without event weights?)")
    need |= {"add_vars"} if with_add_vars else set()
    need |= {f"{c}/{s}" for c in collections for s in ("inputs", "valid")}
    parse = _record_parser({k: a for k, a in arrays.items() if k in need}, cast=True)

    files = sorted(files)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_buffer:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=reshuffle)
    ds = ds.interleave(lambda f: tf.data.TFRecordDataset(f), cycle_length=min(4, len(files)),
                       num_parallel_calls=1, deterministic=True)
    if shuffle_buffer:
        records = max(1, int(shuffle_buffer) // max(1, int(metadata.get("chunk_size", 1))))
        ds = ds.shuffle(records, seed=seed, reshuffle_each_iteration=reshuffle)
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if shuffle_buffer:
        ds = _window_shuffle(ds, int(shuffle_buffer), seed, reshuffle)
    ds = ds.rebatch(batch_size).map(_to_model(collections, with_weights, with_add_vars),
                                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def record_arrays(files: Sequence[str], metadata: dict) -> dict[str, np.ndarray]:
    """Every array stored in TFRecord files (in file order, raw dtypes), concatenated: for checks
    and tests (small samples)."""
    import tensorflow as tf

    parse = _record_parser(metadata["arrays"], cast=False)
    parts: dict[str, list[np.ndarray]] = {}
    for rec in tf.data.TFRecordDataset(list(files)).map(parse).as_numpy_iterator():
        for k, v in rec.items():
            parts.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}


def h5_dataset(files: Sequence[str], batch_size: int, shuffle_buffer: int = 0, seed: int = 0,
               collections: Sequence[str] | None = None, with_weights: bool = False,
               with_add_vars: bool = False, add_vars: Sequence[str] = (), block_rows: int | None = None,
               reshuffle: bool = True):
    """tf.data pipeline over training HDF5 files, yielding what record_dataset yields.

    The files are cut into blocks of whole HDF5 chunks (``block_rows``, default about 4096
    candidates) read by h5py slices (one call per block). With ``shuffle_buffer`` the blocks of all
    files are read in a random order and the candidates permuted within windows of
    ``shuffle_buffer`` candidates; deterministic for ``seed``, a new order every epoch (every
    iteration of the dataset), or with ``reshuffle=False`` the same order every iteration. Without,
    the files are read in order. Memory: a window plus a few
    prefetched blocks and batches. ``add_vars``: the candidate variables given as ``add_vars``
    when ``with_add_vars``.
    """
    import tensorflow as tf

    files = sorted(str(f) for f in files)
    if not files:
        raise ValueError("h5_dataset: no files")
    lay = h5_layout(files[0])
    arrays = lay["arrays"]
    for path in files[1:]:
        other = h5_layout(path)
        if other["arrays"] != arrays or other["variables"] != lay["variables"]:
            raise ValueError(f"{path}: layout differs from {files[0]}")
    collections = list(collections) if collections is not None else _default_collections(arrays)
    for c in collections:
        if f"{c}/inputs" not in arrays:
            raise KeyError(f"{files[0]}: no sequence '{c}' (sequences: {_default_collections(arrays)})")
    add_idx: list[int] = []
    if with_add_vars:
        names = lay["variables"][f"{CANDIDATE_GROUP}/inputs"]
        if not add_vars:
            raise ValueError("with_add_vars needs the add_vars names for HDF5 files")
        missing = [v for v in add_vars if v not in names]
        if missing:
            raise KeyError(f"{files[0]}: add_vars {missing} are not candidate variables ({names})")
        add_idx = [names.index(v) for v in add_vars]

    # (HDF5 dataset, dtype handed to TensorFlow): float16/bool inputs become float32
    spec = [(f"{CANDIDATE_GROUP}/inputs", np.float32), (f"{CANDIDATE_GROUP}/labels", np.int32)]
    for k in weight_keys(with_weights):
        if k not in arrays:
            raise KeyError(f"{files[0]}: no dataset {k} (written without event weights?)")
        spec.append((k, np.float32))
    for c in collections:
        spec += [(f"{c}/inputs", np.float32), (f"{c}/valid", np.float32)]
    keys = [k for k, _ in spec] + (["add_vars"] if add_idx else [])
    dtypes = [d for _, d in spec] + ([np.float32] if add_idx else [])
    shapes = {k: arrays[k]["shape"] for k, _ in spec}
    shapes["add_vars"] = [len(add_idx)]

    blocks: list[tuple[int, int, int]] = []
    for i, path in enumerate(files):
        with h5py.File(path, "r") as f:
            ds = f[f"{CANDIDATE_GROUP}/inputs"]
            n = ds.shape[0]
            chunk = ds.chunks[0] if ds.chunks else 1024
        block = block_rows or chunk * max(1, -(-4096 // chunk))
        blocks += [(i, s, min(s + block, n)) for s in range(0, n, block)]
    handles: dict[int, h5py.File] = {}

    def read(i, start, stop):
        i, start, stop = int(i), int(start), int(stop)
        f = handles.get(i)
        if f is None:
            f = handles[i] = h5py.File(files[i], "r")
        out = [np.asarray(f[k][start:stop]).astype(d, copy=False) for k, d in spec]
        if add_idx:
            out.append(out[0][:, add_idx])
        return out

    def read_block(i, start, stop):
        tensors = tf.numpy_function(read, [i, start, stop], [tf.as_dtype(d) for d in dtypes], stateful=False)
        out = {}
        for k, t in zip(keys, tensors):
            t.set_shape([None, *shapes[k]])
            out[k] = t
        return out

    index = np.asarray(blocks, dtype=np.int64).reshape(-1, 3)
    ds = tf.data.Dataset.from_tensor_slices((index[:, 0], index[:, 1], index[:, 2]))
    if shuffle_buffer:
        ds = ds.shuffle(len(blocks), seed=seed, reshuffle_each_iteration=reshuffle)
    # h5py holds a global lock: one reader; prefetch a few blocks ahead
    ds = ds.map(read_block, num_parallel_calls=1, deterministic=True).prefetch(2)
    if shuffle_buffer:
        ds = _window_shuffle(ds, int(shuffle_buffer), seed, reshuffle)
    ds = ds.rebatch(batch_size).map(_to_model(collections, with_weights, bool(add_idx)),
                                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
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
