"""Training: one Keras model per training configuration, from TFRecords, resumable.

A checkpoint (model + epoch) is written after every epoch; a rerun after an interruption resumes
from it. The per-epoch history goes to CSV (appended on resume).
"""

from __future__ import annotations

import csv
import json
import os
import platform
import socket
import time
from collections.abc import Sequence

import numpy as np

from taggerflow.metrics import accuracy, pairwise_aucs
from taggerflow.records import h5_model_inputs, read_h5, record_dataset
from taggerflow.utils import atomic_path, write_json


def device_info() -> dict:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return {"host": socket.gethostname(), "platform": platform.platform(), "tensorflow": tf.__version__,
            "gpus": [g.name for g in gpus], "device": "GPU" if gpus else "CPU",
            "gpu_details": [tf.config.experimental.get_device_details(g) for g in gpus]}


def train_model(variant: dict, classes: list[str], collections: dict[str, tuple[int, int]], n_candidate_vars: int,
                train_records: Sequence[str], val_records: Sequence[str], metadata: dict,
                test_h5: Sequence[str], out: dict[str, str], seed: int, log=print) -> dict:
    """Train one variant; write out['model'] (.keras), out['history'] (.csv), out['summary'] (.json).
    out['checkpoint_dir'] holds the resumable state."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from taggerflow.models import build_model

    keras.utils.set_random_seed(seed)
    info = device_info()
    log(f"training '{variant['name']}' on {info['host']} ({info['device']}: {info['gpus'] or 'no GPU'})")

    ckpt_dir = out["checkpoint_dir"]
    os.makedirs(ckpt_dir, exist_ok=True)
    ckpt_model = os.path.join(ckpt_dir, "last.keras")
    ckpt_state = os.path.join(ckpt_dir, "state.json")
    history_tmp = os.path.join(ckpt_dir, "history.csv")

    initial_epoch = 0
    if os.path.exists(ckpt_state) and os.path.exists(ckpt_model):
        with open(ckpt_state) as f:
            initial_epoch = int(json.load(f)["epoch"])
        model = keras.models.load_model(ckpt_model)
        log(f"resuming from checkpoint after epoch {initial_epoch}")
    else:
        model = build_model(variant["model"], n_candidate_vars, collections, len(classes), seed=seed)
        model.compile(optimizer=keras.optimizers.Adam(
                          keras.optimizers.schedules.ExponentialDecay(float(variant["learning_rate"]),
                                                                     decay_steps=1000, decay_rate=0.9)),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    batch = int(variant["batch_size"])
    # only the sequences the model reads (a dense tagger reads none)
    model_inputs = {i.name for i in model.inputs}
    coll_names = [c for c in collections if c in model_inputs]
    train_ds = record_dataset(train_records, metadata, batch, shuffle_buffer=int(variant.get("shuffle_buffer", 20000)),
                              seed=seed, collections=coll_names)
    val_ds = record_dataset(val_records, metadata, batch, collections=coll_names) if val_records else None

    class EpochCheckpoint(keras.callbacks.Callback):
        """Model + epoch after every epoch, renamed into place so a kill never leaves half a checkpoint."""

        def on_epoch_end(self, epoch, logs=None):
            with atomic_path(ckpt_model, suffix=".keras") as tmp:
                self.model.save(tmp)
            write_json(ckpt_state, {"epoch": epoch + 1, "logs": {k: float(v) for k, v in (logs or {}).items()}})

    callbacks = [keras.callbacks.CSVLogger(history_tmp, append=initial_epoch > 0), EpochCheckpoint(),
                 keras.callbacks.EarlyStopping(monitor="val_loss" if val_ds is not None else "loss",
                                               patience=int(variant.get("early_stopping_patience", 5)),
                                               restore_best_weights=False)]
    start = time.time()
    epochs = int(variant["epochs"])
    if initial_epoch < epochs:
        model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=initial_epoch,
                  callbacks=callbacks, verbose=2, shuffle=False)
    duration = time.time() - start

    # evaluation on the test split
    arrays = read_h5(test_h5)
    probs = model.predict(h5_model_inputs(arrays, coll_names), batch_size=4096, verbose=0)
    labels = arrays["jets/labels"]
    summary = {"name": variant["name"], "seed": seed, "device": info, "train_seconds": duration,
               "epochs_run": epochs, "resumed_from_epoch": initial_epoch,
               "test": {"n": int(len(labels)), "accuracy": accuracy(probs, labels),
                        "auc": pairwise_aucs(probs, labels, classes)},
               "config": variant}
    with atomic_path(out["model"], suffix=".keras") as tmp:
        model.save(tmp)
    with atomic_path(out["history"], suffix=".csv") as tmp:
        with open(history_tmp) as src, open(tmp, "w") as dst:
            dst.write(src.read())
    write_json(out["summary"], summary)
    return summary


def read_history(path: str) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))
