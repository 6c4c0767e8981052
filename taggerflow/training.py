"""Training: one Keras model per training configuration, resumable.

The batches come from the TFRecords (``training.source: records``, the default) or straight from
the WriteTrainSample HDF5 files (``source: h5``); both loaders yield the same model inputs. When the
train sample holds per-class pt-|eta| flattening weights (``train_sample.weights``), they reach the
loss as Keras sample weights (``use_sample_weights``: null = whenever the sample has them), multiplied
by the class weights. Sequence widths are those of the files (``concat_jet_tracks`` included).

A checkpoint is written after every epoch and a rerun after an interruption resumes from it (see
train_model). Its ``state.json`` is the single commit point: it names the model file of the epoch
(with its SHA-256), and holds the per-epoch history and the early-stopping state, so a kill at any
moment resumes after the last committed epoch with its weights, optimizer state, patience count and
exactly one history row per epoch.

A resumed training ends bit for bit as an uninterrupted one: every epoch is one ``fit`` over a
dataset built for that epoch, shuffled with a seed derived from (seed, epoch) (epoch_seed), and the
random layers (Dropout) are reseeded from (seed, epoch) as it begins, so nothing depends on how many
epochs this process ran; the kernels are deterministic (tf.config.experimental.enable_op_determinism).
The model files are written with stable bytes (taggerflow.models.save_model).
"""

from __future__ import annotations

import csv
import json
import os
import platform
import socket
import time
from collections.abc import Sequence

import h5py
import numpy as np

from taggerflow.metrics import split_metrics
from taggerflow.records import h5_dataset, h5_layout, h5_model_inputs, read_h5, record_dataset
from taggerflow.trainsample import CANDIDATE_GROUP
from taggerflow.utils import atomic_path, file_sha256, job_seed, read_json, write_json

from taggerflow.config import TRAINING_SOURCES as SOURCES, resolve_training  # noqa: E402

#: steps of the decaying schedules where training.lr_schedule.decay_steps is not given
DECAY_STEPS = {"exponential": 1000, "cosine": 10000}
CHECKPOINT_VERSION = 2  # state.json naming its model file; older checkpoints are not resumed

#: Test hook (tests/test_resume_kill.py kills a training there): with
#: TAGGERFLOW_TEST_PAUSE="<point>@<epoch>:<marker file>" the checkpoint writer of epoch <epoch>
#: (0-based) creates the marker file at <point> and sleeps until it is killed. Points: model-saved
#: (the model file written under its temporary name), model-renamed (renamed into place, state.json
#: not written), state-committed (state.json written, history.csv not rewritten).
PAUSE_ENV = "TAGGERFLOW_TEST_PAUSE"
PAUSE_POINTS = ("model-saved", "model-renamed", "state-committed")


def _pause_point(point: str, epoch: int) -> None:
    spec = os.environ.get(PAUSE_ENV)
    if not spec:
        return
    where, _, marker = spec.partition(":")
    if where == f"{point}@{epoch}":
        with open(marker, "w"):
            pass
        time.sleep(3600)


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffling seed of one epoch: a function of (seed, epoch) only."""
    return int(job_seed(seed, "epoch", int(epoch)).generate_state(1)[0] % (2**31))


def reseed_random_layers(model, seed: int, epoch: int) -> int:
    """Set the random state of every random layer (the SeedGenerator of each Dropout) to one
    derived from (seed, epoch, its rank), so that the dropout masks of an epoch do not depend on
    the steps this process ran before (a .keras file does not hold these states). Returns how many."""
    states = [v for v in model.variables if v.name == "seed_generator_state"]
    for i, state in enumerate(states):
        value = job_seed(seed, "dropout", int(epoch), i).generate_state(1)[0] % (2**31)
        state.assign(np.asarray([value, 0], dtype=state.dtype))
    return len(states)


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

    variant = resolve_training(variant)
    lr = float(variant["learning_rate"])
    sched = variant["lr_schedule"]
    if sched is None or sched["type"] not in DECAY_STEPS:
        return lr
    steps = int(sched["decay_steps"] or DECAY_STEPS[sched["type"]])
    if sched["type"] == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(lr, decay_steps=steps, decay_rate=float(sched["decay_rate"]))
    return keras.optimizers.schedules.CosineDecay(lr, decay_steps=steps, alpha=float(sched["alpha"]))


def sample_weighted(files: Sequence[str]) -> bool:
    """Whether training HDF5 files hold flattening weights in jets/weights (written with
    ``train_sample.weights: true``) rather than ones; all files must agree."""
    flags = set()
    for path in files:
        with h5py.File(path, "r") as f:
            opts = f.attrs.get("train_sample")
            if opts is not None:
                flags.add(bool(json.loads(opts).get("weights", False)))
            elif f"{CANDIDATE_GROUP}/weights" in f:  # no options attribute: the dataset says what it holds
                flags.add(str(f[f"{CANDIDATE_GROUP}/weights"].attrs.get("description", "ones")) != "ones")
            else:
                flags.add(False)
    if len(flags) > 1:
        raise ValueError(f"training files {list(files)}: some hold flattening weights, others not "
                         f"(written from different train_sample.weights)")
    return flags == {True}


def use_sample_weights(variant: dict, weighted_sample: bool) -> bool:
    """The variant's ``use_sample_weights`` resolved: null/absent -> whether the sample has weights."""
    opt = variant.get("use_sample_weights")
    if opt is None:
        return bool(weighted_sample)
    if opt and not weighted_sample:
        raise ValueError(f"training variant '{variant.get('name')}': use_sample_weights is true but the train "
                         f"sample has no flattening weights (write it with train_sample.weights: true)")
    return bool(opt)


def event_loss_weights(variant: dict, flattening: bool) -> tuple[str, ...]:
    """The training-file datasets whose product weights each candidate's loss: jets/weights (the
    flattening weights, ``use_sample_weights``) and jets/event_weight (``event_weights: true``);
    negative event weights enter the loss as they are (see the README)."""
    keys = (f"{CANDIDATE_GROUP}/weights",) if flattening else ()
    if variant.get("event_weights"):
        keys += (f"{CANDIDATE_GROUP}/event_weight",)
    return keys


def h5_metadata(path: str, add_vars: Sequence[str] = ()) -> dict:
    """What train_model reads from the records metadata, for ``source: h5``: the layout of a training
    HDF5 file, and the conditional inputs (``records.add_vars``) taken from its candidate inputs."""
    meta = h5_layout(path)
    meta["add_vars"] = list(add_vars)
    if add_vars:
        meta["variables"]["add_vars"] = list(add_vars)
    return meta


def check_sequence_widths(collections: dict[str, tuple[int, int]], metadata: dict) -> None:
    """The (n_max, n_vars) the model is built with must be those of the training files, whose
    constituents carry the concatenated candidate variables too (train_sample.concat_jet_tracks)."""
    for name, shape in collections.items():
        arr = metadata["arrays"].get(f"{name}/inputs")
        if arr is not None and [int(s) for s in shape] != [int(s) for s in arr["shape"]]:
            names = metadata.get("variables", {}).get(f"{name}/inputs")
            raise ValueError(f"sequence '{name}': the model would read (n_max, n_vars) = {tuple(shape)}, the "
                             f"training files hold {tuple(arr['shape'])} (variables {names}); take the widths "
                             f"from taggerflow.trainsample.sequence_variables (train_sample.concat_jet_tracks "
                             f"appends candidate variables to every constituent)")


def training_datasets(variant: dict, metadata: dict, train_files: Sequence[str], val_files: Sequence[str],
                      batch_size: int, seed: int, collections: Sequence[str], with_add_vars: bool = False,
                      with_weights: bool = False, class_weight: dict[int, float] | None = None,
                      shuffle: bool = True, epoch: int | None = None):
    """(train, validation or None) tf.data datasets of the variant's ``source``: TFRecord files and
    their metadata, or training HDF5 files (``metadata`` from h5_metadata). With ``epoch`` the
    training dataset is that epoch's: shuffled with epoch_seed(seed, epoch), in the same order
    every time it is iterated; without, shuffled from ``seed`` anew at every iteration. With ``with_weights`` the
    batches are (x, y, w) with the jets/weights of the files (or, for a sequence of keys, the product of
    those datasets: records.weight_keys); ``class_weight`` then multiplies the
    training weights (Keras refuses class_weight beside sample weights), not the validation ones,
    as Keras's own class_weight does."""
    variant = resolve_training(variant)
    source = variant["source"]
    if source not in SOURCES:
        raise ValueError(f"training variant '{variant.get('name')}': unknown source {source!r} (allowed: {SOURCES})")
    shuffle_buffer = int(variant["shuffle_buffer"]) if shuffle else 0
    add_vars = list(metadata.get("add_vars") or [])

    shuffle_seed = seed if epoch is None else epoch_seed(seed, epoch)
    reshuffle = epoch is None

    def make(files, buffer):
        if source == "records":
            return record_dataset(files, metadata, batch_size, shuffle_buffer=buffer, seed=shuffle_seed,
                                  collections=collections, with_weights=with_weights, with_add_vars=with_add_vars,
                                  reshuffle=reshuffle)
        return h5_dataset(files, batch_size, shuffle_buffer=buffer, seed=shuffle_seed, collections=collections,
                          with_weights=with_weights, with_add_vars=with_add_vars, add_vars=add_vars,
                          reshuffle=reshuffle)

    train = make(train_files, shuffle_buffer)
    if with_weights and class_weight:
        import tensorflow as tf

        n = max(class_weight) + 1
        table = tf.constant([float(class_weight.get(i, 1.0)) for i in range(n)], tf.float32)
        train = train.map(lambda x, y, w: (x, y, w * tf.gather(table, y)), num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=True)
    val = make(val_files, 0) if val_files else None
    return train, val


def load_checkpoint(ckpt_dir: str, log=print) -> dict | None:
    """The committed checkpoint state of ``ckpt_dir`` (its state.json), or None to start from
    scratch: no state, a state of an older format, or one whose model file is missing, differs from
    the recorded SHA-256 or whose history is not one row per epoch 0..epoch-1. The state's ``model``
    is then the path of the model file."""
    path = os.path.join(ckpt_dir, "state.json")
    if not os.path.exists(path):
        return None
    try:
        state = read_json(path)
        if state.get("version") != CHECKPOINT_VERSION:
            log(f"checkpoint {path}: older format (no model file named), training from scratch")
            return None
        model = os.path.join(ckpt_dir, os.path.basename(state["model"]))
        epoch = int(state["epoch"])
        history = state["history"]
        problem = None
        if not os.path.exists(model):
            problem = f"model file {model} missing"
        elif file_sha256(model) != state["model_sha256"]:
            problem = f"model file {model} differs from the one the state recorded"
        elif [int(r["epoch"]) for r in history] != list(range(epoch)):
            problem = f"history epochs {[r.get('epoch') for r in history]} are not 0..{epoch - 1}"
    except (OSError, ValueError, KeyError, TypeError) as err:
        problem = f"unreadable ({err})"
    if problem:
        log(f"checkpoint {path}: {problem}; training from scratch")
        return None
    return dict(state, model=model)


def write_history(path: str, rows: Sequence[dict]) -> None:
    """The per-epoch history as CSV (atomically): epoch, then the sorted metric names; 'NA' where an
    epoch lacks a metric (as keras.callbacks.CSVLogger writes)."""
    keys = sorted({k for r in rows for k in r if k != "epoch"})
    with atomic_path(path, suffix=".csv") as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["epoch", *keys], restval="NA")
            writer.writeheader()
            writer.writerows(rows)


def _clean_checkpoint_dir(ckpt_dir: str, keep: str | None) -> None:
    """Remove model files other than ``keep`` (a later epoch's file saved just before a kill, the
    legacy last.keras) and temporary files a kill left behind."""
    for name in os.listdir(ckpt_dir):
        stale_model = name.endswith(".keras") and name != keep and (name.startswith("epoch-") or name == "last.keras")
        stale_tmp = name.startswith((".epoch-", ".state.json.", ".history.csv.", ".last.keras."))
        if stale_model or stale_tmp:
            try:
                os.remove(os.path.join(ckpt_dir, name))
            except FileNotFoundError:
                pass


def train_model(variant: dict, classes: list[str], collections: dict[str, tuple[int, int]], n_candidate_vars: int,
                train_files: Sequence[str], val_files: Sequence[str], metadata: dict,
                test_h5: Sequence[str], out: dict[str, str], seed: int, log=print,
                class_counts: Sequence[int] | None = None, weighted_sample: bool | None = None,
                callbacks: Sequence = ()) -> dict:
    """Train one variant; write out['model'] (.keras), out['history'] (.csv), out['summary'] (.json),
    out['config'] (the resolved configuration and seed). out['checkpoint_dir'] holds the resumable
    state; out['tensorboard'] the TensorBoard logs (when enabled).

    ``train_files``/``val_files``: TFRecord files with their ``metadata`` (``source: records``) or
    training HDF5 files with ``metadata = h5_metadata(...)`` (``source: h5``). ``collections``: per
    sequence (n_max, n_vars) as written (checked against the metadata). ``weighted_sample``: whether
    the train sample holds flattening weights; None: read from the ``test_h5`` files (same writer).
    ``callbacks``: further Keras callbacks, called after the epoch checkpoint (each epoch is one
    ``fit``; the callbacks see them as one training: on_train_begin once before the first epoch run,
    on_train_end once after the last).

    Checkpoint, after every epoch: the model (with its optimizer state) goes to a new file
    ``epoch-NNNN.keras`` (renamed into place), then ``state.json`` (renamed into place: the commit)
    names it with its SHA-256, the epochs done, the history rows and the early-stopping state; then
    the checkpoint's history.csv is rewritten from the state and older model files removed. A rerun
    resumes from the committed state (validated by load_checkpoint), restores the early-stopping
    patience count and best value (and does not train at all if the run had stopped early); the
    epochs it runs see the data orders and dropout masks of the uninterrupted run (see the module
    docstring). Op determinism is enabled for the whole process (TensorFlow has no narrower switch)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from taggerflow.models import build_model, save_model

    keras.utils.set_random_seed(seed)
    # the same kernels in the same order: a resumed run adds up the same floating-point sums
    tf.config.experimental.enable_op_determinism()
    info = device_info()
    log(f"training '{variant['name']}' on {info['host']} ({info['device']}: {info['gpus'] or 'no GPU'})")

    ckpt_dir = out["checkpoint_dir"]
    os.makedirs(ckpt_dir, exist_ok=True)
    ckpt_state = os.path.join(ckpt_dir, "state.json")
    history_tmp = os.path.join(ckpt_dir, "history.csv")

    settings = resolve_training(variant)   # variant as given: written to config.json
    source = settings["source"]
    check_sequence_widths(collections, metadata)
    if weighted_sample is None:
        weighted_sample = sample_weighted(test_h5) if test_h5 else False
    with_weights = use_sample_weights(variant, weighted_sample)
    # the loss weights: the flattening weights and/or the event weights (training.event_weights)
    loss_weights = event_loss_weights(variant, with_weights)

    initial_epoch = 0
    state = load_checkpoint(ckpt_dir, log=log)
    _clean_checkpoint_dir(ckpt_dir, keep=os.path.basename(state["model"]) if state else None)
    if state:
        initial_epoch = int(state["epoch"])
        model = keras.models.load_model(state["model"])
        write_history(history_tmp, state["history"])  # a kill may have come before its rewrite
        log(f"resuming from checkpoint after epoch {initial_epoch}")
    else:
        n_add = len(metadata.get("add_vars") or [])
        if variant["model"].get("conditional") and not n_add:
            raise ValueError(f"training variant '{variant['name']}': model.conditional needs records.add_vars "
                             f"(the candidate variables each constituent is conditioned on)")
        model = build_model(variant["model"], n_candidate_vars, collections, len(classes), seed=seed,
                            n_add_vars=n_add)
        # named: Keras numbers unnamed optimizers per process (adam, adam_1, ...), and the name is in
        # the model file, so a training that followed another in the same worker wrote other bytes
        model.compile(optimizer=keras.optimizers.Adam(learning_rate(variant), name="adam"),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    seq_vars = {k: list(metadata["variables"].get(f"{k}/inputs") or []) for k in collections}
    write_json(out["config"], {"variant": variant, "seed": seed, "classes": classes, "source": source,
                               "sample_weights": with_weights,
                               **({"event_weights": True} if variant.get("event_weights") else {}),
                               "add_vars": list(metadata.get("add_vars") or []),
                               "candidate_variables": list(metadata["variables"]["jets/inputs"]),
                               "sequence_variables": seq_vars,
                               "inputs": {"candidate": n_candidate_vars,
                                          **{k: list(v) for k, v in collections.items()}}})

    batch = int(variant["batch_size"])
    # only the sequences the model reads (a dense tagger reads none)
    model_inputs = {i.name for i in model.inputs}
    coll_names = [c for c in collections if c in model_inputs]
    with_add = "add_vars" in model_inputs
    weights = class_weights(variant.get("class_weights"), classes, class_counts)
    if weights:
        log(f"class weights: { {classes[i]: round(w, 4) for i, w in weights.items()} }"
            + (" (times the flattening weights)" if with_weights else ""))
    log(f"training from {source}{', with the flattening weights of the train sample' if with_weights else ''}"
        f"{', with the event weights (jets/event_weight)' if variant.get('event_weights') else ''}")

    def datasets(epoch: int, with_validation: bool):
        return training_datasets(variant, metadata, train_files, val_files if with_validation else (), batch, seed,
                                 coll_names, with_add_vars=with_add, with_weights=loss_weights or False,
                                 class_weight=weights, epoch=epoch)

    train_ds, val_ds = datasets(initial_epoch, True)

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        """EarlyStopping whose patience count, best value and epoch continue those of the checkpoint."""

        def __init__(self, restored: dict | None, **kwargs):
            super().__init__(**kwargs)
            self.restored = restored if restored and restored.get("monitor") == self.monitor else None

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if self.restored:
                r = self.restored
                self.wait, self.best_epoch = int(r["wait"]), int(r["best_epoch"])
                self.stopped_epoch = int(r["stopped_epoch"])
                self.best = None if r["best"] is None else float(r["best"])

        def state(self) -> dict:
            return {"monitor": self.monitor, "patience": int(self.patience), "wait": int(self.wait),
                    "best": None if self.best is None else float(self.best), "best_epoch": int(self.best_epoch),
                    "stopped_epoch": int(self.stopped_epoch)}

    class OneTraining(keras.callbacks.CallbackList):
        """The callbacks of the per-epoch fit calls, called as if one fit ran all the epochs:
        on_train_begin before the first, on_train_end (``end()``) after the last; the progress line
        says "Epoch 4/8", not "Epoch 4/4"."""

        began = False

        def on_train_begin(self, logs=None):
            if not self.began:
                self.began = True
                super().on_train_begin(logs)

        def on_train_end(self, logs=None):  # of one fit: only wait for what it dispatched
            if self._async_train:
                self._flush_futures()

        def end(self, logs=None):
            if self.began:
                super().on_train_end(logs)

    def loggable(v):
        try:
            return float(v)
        except (TypeError, ValueError):
            return str(v)

    class EpochCheckpoint(keras.callbacks.Callback):
        """The checkpoint of every epoch, after the early-stopping update of that epoch (see train_model)."""

        def __init__(self, history: list[dict], early_stopping: ResumableEarlyStopping):
            super().__init__()
            self.history = list(history)
            self.early_stopping = early_stopping

        def on_epoch_end(self, epoch, logs=None):
            logs = {k: loggable(v) for k, v in (logs or {}).items()}
            self.history = [r for r in self.history if int(r["epoch"]) < epoch] + [{"epoch": epoch, **logs}]
            name = f"epoch-{epoch + 1:04d}.keras"
            path = os.path.join(ckpt_dir, name)
            with atomic_path(path, suffix=".keras") as tmp:
                save_model(self.model, tmp)
                _pause_point("model-saved", epoch)
            _pause_point("model-renamed", epoch)
            write_json(ckpt_state, {"version": CHECKPOINT_VERSION, "epoch": epoch + 1, "model": name,
                                    "model_sha256": file_sha256(path), "logs": logs, "history": self.history,
                                    "early_stopping": self.early_stopping.state(),
                                    "stopped": bool(self.model.stop_training)})
            _pause_point("state-committed", epoch)
            write_history(history_tmp, self.history)
            _clean_checkpoint_dir(ckpt_dir, keep=name)

    early_stopping = ResumableEarlyStopping((state or {}).get("early_stopping"),
                                            monitor="val_loss" if val_ds is not None else "loss",
                                            patience=int(settings["early_stopping_patience"]),
                                            restore_best_weights=False)
    checkpoint = EpochCheckpoint(state["history"] if state else [], early_stopping)
    # early stopping first: the checkpoint of an epoch holds the early-stopping state after it
    fit_callbacks = [early_stopping, checkpoint]
    if settings["tensorboard"] and out.get("tensorboard"):
        fit_callbacks.append(keras.callbacks.TensorBoard(log_dir=out["tensorboard"], write_graph=False))
    fit_callbacks.extend(callbacks)
    start = time.time()
    epochs = int(variant["epochs"])
    stopped = bool(state and state.get("stopped"))
    if stopped:
        log(f"the checkpointed run stopped early after epoch {initial_epoch}: not training further")
    if initial_epoch < epochs and not stopped:
        training = OneTraining(fit_callbacks, add_history=True, add_progbar=True, model=model, verbose=2,
                                epochs=epochs, steps=None)
        for epoch in range(initial_epoch, epochs):
            if epoch > initial_epoch:
                train_ds, _ = datasets(epoch, False)
            reseed_random_layers(model, seed, epoch)
            # one fit per epoch, over that epoch's dataset; with sample weights the class weights are
            # already in the batches' weights
            model.fit(train_ds, validation_data=val_ds, epochs=epoch + 1, initial_epoch=epoch, callbacks=training,
                      verbose=2, shuffle=False, class_weight=None if loss_weights else weights)
            if model.stop_training:
                break
        training.end()
    duration = time.time() - start

    # evaluation on the test split
    arrays = read_h5(test_h5)
    probs = predict(model, arrays, metadata.get("add_vars"), metadata["variables"]["jets/inputs"])
    labels = arrays["jets/labels"]
    history = checkpoint.history
    summary = {"name": variant["name"], "seed": seed, "device": info, "train_seconds": duration,
               "epochs_run": len(history), "resumed_from_epoch": initial_epoch, "class_weights": weights,
               "source": source, "sample_weights": with_weights,
               **({"event_weights": True} if variant.get("event_weights") else {}),
               "stopped_early": bool(early_stopping.stopped_epoch > 0 or stopped),
               # n, accuracy, auc (None where a class is absent), per_class, warnings
               "test": split_metrics(probs, labels, classes, "test"),
               "config": variant}
    with atomic_path(out["model"], suffix=".keras") as tmp:
        save_model(model, tmp)
    write_history(out["history"], history)
    write_json(out["summary"], summary)
    if settings["mlflow"] and out.get("mlruns"):
        log_mlflow(out["mlruns"], variant, summary, read_history(out["history"]),
                   [out["model"], out["history"], out["summary"]])
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
            if v is not None:   # undefined (a class absent from the test split): in summary warnings
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


#: rej_abs_eta: mis-id rate vs |eta| at the inclusive thresholds (as rej_pt vs pt); rej_flat_pt /
#: rej_flat_abs_eta: background rejection at thresholds derived in each bin (flat signal efficiency)
BINNED_PLOT_KINDS = ("rej_abs_eta", "rej_flat_pt", "rej_flat_abs_eta")


def evaluation_plots(classes: list[str], signals: list[str]) -> dict[str, str]:
    """The plot files of one evaluation: key -> file name."""
    names = {"history": "history.png"}
    for s in signals:
        names[f"scores_{s}"] = f"scores_{s}.png"
        for b in classes:
            if b != s:
                for kind in ("roc", "eff_pt", "eff_abs_eta", "rej_pt") + BINNED_PLOT_KINDS:
                    names[f"{kind}_{s}_vs_{b}"] = f"{kind}_{s}_vs_{b}.png"
    return names


def _signal_scans(metrics, probs, labels, classes, ev_cfg, arrays, weights, out, name) -> None:
    """S/sqrt(B) scan and efficiency map per signal (taggerflow.signal_scan) into metrics, plotted
    where ``out`` has significance_<s> / eff_map_<s>. Event weights where the test files have them."""
    from taggerflow.signal_scan import signal_scan_summary
    from taggerflow.signal_scan_plots import plot_efficiency_map, plot_significance

    if weights is None and "jets/event_weight" in arrays:
        weights = arrays["jets/event_weight"]
    params = {int(k): tuple(v) for k, v in (ev_cfg.get("signal_parameters") or {}).items()}
    metrics["signal_scan"] = {}
    for s in ev_cfg["signals"]:
        summary = signal_scan_summary(probs, labels, classes, s, ev_cfg["working_points"], weights,
                                      arrays.get("jets/dataset_id"), params)
        metrics["signal_scan"][s] = summary
        if f"significance_{s}" in out:
            plot_significance(summary, out[f"significance_{s}"], title=name)
        if f"eff_map_{s}" in out:
            plot_efficiency_map(summary, out[f"eff_map_{s}"], title=name)


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
    weights = None
    if ev_cfg.get("event_weights"):   # weighted metrics (taggerflow.weighted_metrics)
        if "jets/event_weight" not in arrays:
            raise ValueError(f"evaluation.event_weights: the test files {list(test_files)[:2]} have no "
                             f"jets/event_weight (written without inputs.datasets.<ds>.weight)")
        weights = arrays["jets/event_weight"]
    metrics = evaluate(probs, labels, classes, ev_cfg["signals"], ev_cfg["working_points"],
                       arrays["jets/pt"], arrays["jets/eta"], pt_bins, eta_bins, weights=weights)
    metrics["name"] = name
    _signal_scans(metrics, probs, labels, classes, ev_cfg, arrays, weights, out, name)
    write_json(out["metrics"], metrics)
    write_json(out["working_points"], thresholds(metrics))

    plotting.plot_history(read_history(history_path), out["history"], title=name)
    for s in ev_cfg["signals"]:
        plotting.plot_scores(probs, labels, classes, s, out[f"scores_{s}"])
    for pair, m in metrics["pairs"].items():
        auc = {} if m["auc"] is None else {"auc": m["auc"]}   # None: a class absent from the test split
        plotting.plot_rocs({name or "model": {**m["roc"], **auc}}, pair, out[f"roc_{pair}"])
        plotting.plot_efficiency_binned(m["binned"], "pt", out[f"eff_pt_{pair}"],
                                        label=f"{pair.split('_vs_')[0]} efficiency")
        plotting.plot_efficiency_binned(m["binned"], "abs_eta", out[f"eff_abs_eta_{pair}"],
                                        label=f"{pair.split('_vs_')[0]} efficiency")
        plotting.plot_efficiency_binned(m["binned"], "pt", out[f"rej_pt_{pair}"], what="background_efficiency",
                                        label=f"{pair.split('_vs_')[1]} mis-id rate")
    plotting.plot_binned_rejections(metrics, out)
    return metrics
