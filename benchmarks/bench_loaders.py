"""Loader throughput (TFRecord and HDF5 tf.data pipelines) against the training throughput of the
demo deep-sets model on CPU (configs/default.yaml training.model, model.fit on in-memory tensors).

    .venv/bin/python benchmarks/bench_loaders.py [--candidates 1200000] [--workdir /tmp/tf_bench_wts]

Input: the training files of bench_write_train_sample.py's input (made here when missing: demo ntuples,
ShuffleMergeSpectral core taking all, scaling, WriteTrainSample), and their TFRecords.
Target: each loader >= 3 x the training throughput (samples/s), with the training shuffle buffer.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import demo_shards, dump, peak_rss_mb, print_table  # noqa: E402


def train_files(workdir: str, n: int) -> tuple[object, list[str]]:
    from taggerflow.trainsample import write_train_sample

    cfg, shards, scaling = demo_shards(workdir, n)
    out_dir = os.path.join(workdir, "loader_h5")
    files = sorted(glob.glob(os.path.join(out_dir, "train_*.h5")))
    if len(files) != len(shards):
        for j, shard in enumerate(shards):
            o = {s: os.path.join(out_dir, f"{s}_{j}.h5") for s in ("train", "validation", "test")}
            if not os.path.exists(o["train"]):
                write_train_sample(cfg, [shard], scaling, o)
        files = sorted(glob.glob(os.path.join(out_dir, "train_*.h5")))
    return cfg, files


def records(files: list[str], chunk_size: int) -> tuple[list[str], dict]:
    from taggerflow.records import load_metadata, write_metadata, write_records

    recs = [f.replace(".h5", ".tfrecord") for f in files]
    meta_path = os.path.join(os.path.dirname(files[0]), "records.json")
    if not all(os.path.exists(r) for r in recs) or not os.path.exists(meta_path):
        metas = {r: write_records(f, r, chunk_size) for f, r in zip(files, recs)}
        write_metadata(meta_path, metas)
    return recs, load_metadata(meta_path)


def loader_rate(ds, max_batches: int, warmup: int = 20) -> tuple[float, int]:
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    n, t0 = 0, time.perf_counter()
    for i, batch in enumerate(it):
        n += len(batch[1])
        if i + 1 >= max_batches:
            break
    return n / (time.perf_counter() - t0), n


def training_rate(cfg, files: list[str], batch: int, steps: int) -> float:
    import keras
    import numpy as np

    from taggerflow.models import build_model
    from taggerflow.records import h5_model_inputs, read_h5

    variant = cfg.training_variants()[0]
    seqs = {n: (c.n_max, len(c.variables)) for n, c, _ in cfg.sequences()}
    model = build_model(variant["model"], len(cfg.candidate_variables), seqs, len(cfg.class_names), seed=1)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    arrays = read_h5(files[:1], max_candidates=batch * steps)
    x = h5_model_inputs(arrays, list(seqs))
    y = arrays["jets/labels"]
    import tensorflow as tf

    x = {k: tf.constant(v) for k, v in x.items()}
    y = tf.constant(y)
    small = {k: v[: batch * 10] for k, v in x.items()}
    model.fit(small, y[: batch * 10], batch_size=batch, epochs=1, verbose=0, shuffle=False)  # build, trace
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)
    return int(y.shape[0]) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", type=int, default=1_200_000)
    ap.add_argument("--workdir", default="/tmp/tf_bench_wts")
    ap.add_argument("--batches", type=int, default=1500, help="batches timed per loader")
    ap.add_argument("--train-steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    cfg, files = train_files(args.workdir, args.candidates)
    import h5py
    import numpy as np
    import tensorflow as tf

    from taggerflow.records import h5_dataset, record_dataset

    n_train = sum(h5py.File(f, "r")["jets/labels"].shape[0] for f in files)
    recs, meta = records(files, int(cfg.raw["records"]["chunk_size"]))
    batch = int(cfg.raw["training"]["batch_size"])
    shuffle = int(cfg.raw["training"].get("shuffle_buffer", 20000))
    colls = [n for n, _, _ in cfg.sequences()]
    print(f"{len(files)} train files, {n_train} candidates; batch {batch}, shuffle buffer {shuffle}; "
          f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs visible")

    loaders = {
        "TFRecord loader": lambda: record_dataset(recs, meta, batch, shuffle_buffer=shuffle, seed=1,
                                                  collections=colls, with_weights=True),
        "HDF5 loader": lambda: h5_dataset(files, batch, shuffle_buffer=shuffle, seed=1, collections=colls,
                                          with_weights=True),
        "HDF5 loader, no shuffle": lambda: h5_dataset(files, batch, collections=colls, with_weights=True),
    }
    # the machine is shared: interleave the measurements over rounds, report the median and the best
    rates: dict[str, list[float]] = {k: [] for k in loaders}
    train: list[float] = []
    for _ in range(args.rounds):
        for k, make in loaders.items():
            rates[k].append(loader_rate(make(), args.batches)[0])
        train.append(training_rate(cfg, files, batch, args.train_steps))
    t_med = float(np.median(train))
    rows = [(k, f"{np.median(r):,.0f}", f"{max(r):,.0f}", f"{np.median(r) / t_med:.1f}") for k, r in rates.items()]
    rows.append(("training (model.fit, in-memory)", f"{t_med:,.0f}", f"{max(train):,.0f}", "1.0"))
    print_table(f"samples/s ({args.rounds} rounds, {args.batches} batches per loader per round; "
                f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)", rows,
                ("", "median", "best", "median / training"))
    print(f"\npeak RSS: {peak_rss_mb():.0f} MB; target: loaders >= 3 x training")
    dump(args.json, {"loaders": rates, "training": train, "batch": batch})


if __name__ == "__main__":
    main()
