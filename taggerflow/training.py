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


def class_weights(spec, classes: list[str], counts: Sequence[int] | None) -> dict[int, float] | None:
    """Keras class_weight from the config: None, 'balanced' (n / (n_classes * n_c)) or {class: w}."""
    if spec is None:
        return None
    if spec == "balanced":
        counts = np.asarray(counts if counts is not None else [], dtype=np.float64)
        if len(counts) != len(classes) or np.any(counts <= 0):
            raise ValueError(f"class_weights 'balanced' needs every class in the training sample, got counts {counts}")
        return {i: float(counts.sum() / (len(classes) * c)) for i, c in enumerate(counts)}
    return {classes.index(c): float(w) for c, w in spec.items()} | \
        {i: 1.0 for i, c in enumerate(classes) if c not in spec}


def learning_rate(variant: dict):
    import keras

    lr = float(variant["learning_rate"])
    sched = variant.get("lr_schedule") or {"type": "constant"}
    if sched["type"] == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(lr, decay_steps=int(sched.get("decay_steps", 1000)),
                                                           decay_rate=float(sched.get("decay_rate", 0.9)))
    if sched["type"] == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=int(sched.get("decay_steps", 10000)),
                                                      alpha=float(sched.get("alpha", 0.0)))
    return lr


def train_model(variant: dict, classes: list[str], collections: dict[str, tuple[int, int]], n_candidate_vars: int,
                train_records: Sequence[str], val_records: Sequence[str], metadata: dict,
                test_h5: Sequence[str], out: dict[str, str], seed: int, log=print,
                class_counts: Sequence[int] | None = None) -> dict:
    """Train one variant; write out['model'] (.keras), out['history'] (.csv), out['summary'] (.json),
    out['config'] (the resolved configuration and seed). out['checkpoint_dir'] holds the resumable
    state; out['tensorboard'] the TensorBoard logs (when enabled)."""
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
        n_add = len(metadata.get("add_vars") or [])
        if variant["model"].get("conditional") and not n_add:
            raise ValueError(f"training variant '{variant['name']}': model.conditional needs records.add_vars "
                             f"(the candidate variables each constituent is conditioned on)")
        model = build_model(variant["model"], n_candidate_vars, collections, len(classes), seed=seed,
                            n_add_vars=n_add)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate(variant)),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    write_json(out["config"], {"variant": variant, "seed": seed, "classes": classes,
                               "add_vars": list(metadata.get("add_vars") or []),
                               "candidate_variables": list(metadata["variables"]["jets/inputs"]),
                               "inputs": {"candidate": n_candidate_vars, **{k: list(v) for k, v in collections.items()}}})

    batch = int(variant["batch_size"])
    # only the sequences the model reads (a dense tagger reads none)
    model_inputs = {i.name for i in model.inputs}
    coll_names = [c for c in collections if c in model_inputs]
    with_add = "add_vars" in model_inputs
    train_ds = record_dataset(train_records, metadata, batch, shuffle_buffer=int(variant.get("shuffle_buffer", 20000)),
                              seed=seed, collections=coll_names, with_add_vars=with_add)
    val_ds = record_dataset(val_records, metadata, batch, collections=coll_names,
                            with_add_vars=with_add) if val_records else None

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
    if variant.get("tensorboard", False) and out.get("tensorboard"):
        callbacks.append(keras.callbacks.TensorBoard(log_dir=out["tensorboard"], write_graph=False))
    weights = class_weights(variant.get("class_weights"), classes, class_counts)
    if weights:
        log(f"class weights: { {classes[i]: round(w, 4) for i, w in weights.items()} }")
    start = time.time()
    epochs = int(variant["epochs"])
    if initial_epoch < epochs:
        model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=initial_epoch,
                  callbacks=callbacks, verbose=2, shuffle=False, class_weight=weights)
    duration = time.time() - start

    # evaluation on the test split
    arrays = read_h5(test_h5)
    probs = predict(model, arrays, metadata.get("add_vars"), metadata["variables"]["jets/inputs"])
    labels = arrays["jets/labels"]
    history = read_history(history_tmp)
    summary = {"name": variant["name"], "seed": seed, "device": info, "train_seconds": duration,
               "epochs_run": len(history), "resumed_from_epoch": initial_epoch, "class_weights": weights,
               "test": {"n": int(len(labels)), "accuracy": accuracy(probs, labels),
                        "auc": pairwise_aucs(probs, labels, classes)},
               "config": variant}
    with atomic_path(out["model"], suffix=".keras") as tmp:
        model.save(tmp)
    with atomic_path(out["history"], suffix=".csv") as tmp:
        with open(history_tmp) as src, open(tmp, "w") as dst:
            dst.write(src.read())
    write_json(out["summary"], summary)
    if variant.get("mlflow", True) and out.get("mlruns"):
        log_mlflow(out["mlruns"], variant, summary, history, [out["model"], out["history"], out["summary"]])
    return summary


def log_mlflow(tracking_dir: str, variant: dict, summary: dict, history: list[dict], artifacts: list[str]) -> bool:
    """Log parameters, per-epoch metrics and artifacts to a local mlruns directory, when mlflow is
    installed (optional dependency). Returns whether anything was logged."""
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        return False
    # mlflow 3 keeps the plain-directory store in maintenance mode behind this switch; a local
    # mlruns directory is what a physicist on a login node can browse without a database
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    import mlflow

    mlflow.set_tracking_uri("file://" + os.path.abspath(tracking_dir))
    mlflow.set_experiment("taggerflow")
    with mlflow.start_run(run_name=variant["name"]):
        flat = {}
        for k, v in variant.items():
            if isinstance(v, dict):
                flat.update({f"{k}.{kk}": vv for kk, vv in v.items()})
            else:
                flat[k] = v
        mlflow.log_params({k: str(v)[:250] for k, v in flat.items()})
        for row in history:
            step = int(row["epoch"])
            mlflow.log_metrics({k: float(v) for k, v in row.items() if k != "epoch" and _is_number(v)}, step=step)
        mlflow.log_metric("test_accuracy", summary["test"]["accuracy"])
        for k, v in summary["test"]["auc"].items():
            mlflow.log_metric(f"test_auc_{k}", v)
        for a in artifacts:
            mlflow.log_artifact(a)
    return True


def _is_number(v) -> bool:
    try:
        return np.isfinite(float(v))
    except (TypeError, ValueError):  # CSVLogger writes 'NA' for metrics an epoch did not have
        return False


def read_history(path: str) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def predict(model, arrays: dict[str, np.ndarray], add_vars: Sequence[str] | None = None,
            candidate_variables: Sequence[str] | None = None, batch_size: int = 4096) -> np.ndarray:
    """Scores of a model on read_h5 arrays (only the inputs the model reads). A conditional model
    also gets the ``add_vars`` columns of the candidate inputs (named by ``candidate_variables``)."""
    names = {i.name for i in model.inputs}
    colls = [k.split("/")[0] for k in arrays if k.endswith("/valid") and k.split("/")[0] in names]
    x = h5_model_inputs(arrays, colls)
    if "add_vars" in names:
        cand = list(candidate_variables or [])
        if not add_vars or any(v not in cand for v in add_vars):
            raise ValueError(f"conditional model: add_vars {add_vars} not among the candidate variables {cand}")
        x["add_vars"] = x["candidate"][:, [cand.index(v) for v in add_vars]]
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))


def evaluation_plots(classes: list[str], signals: list[str]) -> dict[str, str]:
    """The plot files of one evaluation: key -> file name."""
    names = {"history": "history.png"}
    for s in signals:
        names[f"scores_{s}"] = f"scores_{s}.png"
        for b in classes:
            if b != s:
                for kind in ("roc", "eff_pt", "eff_abs_eta", "rej_pt"):
                    names[f"{kind}_{s}_vs_{b}"] = f"{kind}_{s}_vs_{b}.png"
    return names


def evaluate_training(model_path: str, test_files: Sequence[str], history_path: str, classes: list[str],
                      ev_cfg: dict, out: dict[str, str], name: str = "", training_config: dict | None = None) -> dict:
    """Predict the test split, write predictions beside their inputs, metrics, working-point
    thresholds and plots. ``out`` has 'predictions', 'metrics', 'working_points' and one path per
    key of evaluation_plots()."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    import taggerflow.models  # noqa: F401  (custom layers)
    from taggerflow.evaluation import evaluate, thresholds, write_predictions
    from taggerflow import plotting

    model = keras.models.load_model(model_path)
    arrays = read_h5(test_files)
    tc = training_config or {}
    probs = predict(model, arrays, tc.get("add_vars"), tc.get("candidate_variables"))
    labels = arrays["jets/labels"]
    write_predictions(out["predictions"], probs, arrays, classes)
    pt_bins = ev_cfg.get("pt_bins") or [20, 1000]
    eta_bins = ev_cfg.get("eta_bins") or [0.0, 2.5]
    metrics = evaluate(probs, labels, classes, ev_cfg["signals"], ev_cfg["working_points"],
                       arrays["jets/pt"], arrays["jets/eta"], pt_bins, eta_bins)
    metrics["name"] = name
    write_json(out["metrics"], metrics)
    write_json(out["working_points"], thresholds(metrics))

    plotting.plot_history(read_history(history_path), out["history"], title=name)
    for s in ev_cfg["signals"]:
        plotting.plot_scores(probs, labels, classes, s, out[f"scores_{s}"])
    for pair, m in metrics["pairs"].items():
        plotting.plot_rocs({name or "model": {**m["roc"], "auc": m["auc"]}}, pair, out[f"roc_{pair}"])
        plotting.plot_efficiency_binned(m["binned"], "pt", out[f"eff_pt_{pair}"],
                                        label=f"{pair.split('_vs_')[0]} efficiency")
        plotting.plot_efficiency_binned(m["binned"], "abs_eta", out[f"eff_abs_eta_{pair}"],
                                        label=f"{pair.split('_vs_')[0]} efficiency")
        plotting.plot_efficiency_binned(m["binned"], "pt", out[f"rej_pt_{pair}"], what="background_efficiency",
                                        label=f"{pair.split('_vs_')[1]} mis-id rate")
    return metrics
