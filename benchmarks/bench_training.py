#!/usr/bin/env python
"""Training throughput (samples/s) of the configured taggers on this machine's device.

Builds each training variant of the configuration (default: configs/default.yaml: the deep-sets
and the dense tagger) with the demo's input shapes, trains it on in-memory random inputs (so the
input pipeline is not what is measured; see bench_loaders.py for that) and prints samples/s of the
epochs after the first (which includes tracing), with the device it ran on.

    python benchmarks/bench_training.py [--config configs/default.yaml] [--n 60000] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "..", "configs", "default.yaml"))
    ap.add_argument("--n", type=int, default=60000, help="training samples per epoch")
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()

    import keras
    import numpy as np

    from taggerflow.config import load_config
    from taggerflow.models import build_model
    from taggerflow.training import device_info

    cfg = load_config(args.config)
    info = device_info()
    print(f"device: {info['device']} {info['gpus'] or ''} on {info['host']}, TensorFlow {info['tensorflow']}")
    rng = np.random.default_rng(0)
    seqs = {n: (c.n_max, len(c.variables)) for n, c, _ in cfg.sequences()}
    n_cand = len(cfg.candidate_variables)
    data = {"candidate": rng.normal(size=(args.n, n_cand)).astype("float32")}
    for name, (n_max, n_vars) in seqs.items():
        data[name] = rng.normal(size=(args.n, n_max, n_vars)).astype("float32")
        counts = rng.integers(0, n_max + 1, args.n)
        data[f"{name}_valid"] = (np.arange(n_max)[None, :] < counts[:, None]).astype("float32")
    labels = rng.integers(0, len(cfg.class_names), args.n)

    class Timer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.t0)

    print(f"{'variant':<12} {'model':<9} {'batch':>6} {'params':>9} {'samples/s':>11}")
    for variant in cfg.training_variants():
        model = build_model(variant["model"], n_cand, seqs, len(cfg.class_names), seed=1)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        x = {i.name: data[i.name] for i in model.inputs}
        timer = Timer()
        model.fit(x, labels, batch_size=int(variant["batch_size"]), epochs=args.epochs, verbose=0, callbacks=[timer])
        steady = timer.times[1:] or timer.times
        rate = args.n / (sum(steady) / len(steady))
        print(f"{variant['name']:<12} {variant['model']['type']:<9} {variant['batch_size']:>6} "
              f"{model.count_params():>9} {rate:>11.0f}")


if __name__ == "__main__":
    main()
