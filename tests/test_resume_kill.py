"""A training killed with SIGKILL (a real process: its whole process group) mid-epoch, between
epochs or while it writes a checkpoint, and resumed in a new process, ends bit for bit as an
uninterrupted run: the same model file, weights, optimizer state and history. Two trainings from
scratch write the same bytes.

Run as a script (``python tests/test_resume_kill.py spec.json``) this module is the training
process the tests start and kill: it trains on the tiny files the fixtures write with the project's
own stages.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS = 3
#: a small deep-sets model with dropout (its random state must resume too), small batches, a window
#: shuffle smaller than the sample, balanced class weights and a decaying learning rate
VARIANT = {"epochs": EPOCHS, "batch_size": 64, "shuffle_buffer": 500, "class_weights": "balanced",
           "learning_rate": 0.005, "lr_schedule": {"type": "exponential", "decay_steps": 20, "decay_rate": 0.9},
           "model": {"type": "deepsets", "phi_layers": [16], "f_layers": [16], "dropout": 0.2},
           "tensorboard": False, "mlflow": False}
SEED = 7
TRAIN_SPLITS = ("train", "validation")
STARTUP_TIMEOUT = 240  # seconds for a worker to reach its pause point (TensorFlow imports on a busy CI machine)


# ----------------------------------------------------------------------------------------------
# the worker process


def _pause_forever(marker: str) -> None:
    with open(marker, "w"):
        pass
    time.sleep(3600)


def _worker(spec_path: str) -> None:
    sys.path.insert(0, REPO)
    with open(spec_path) as f:
        spec = json.load(f)
    import h5py
    import keras

    from taggerflow.config import load_config
    from taggerflow.training import h5_metadata, train_model

    cfg = load_config(spec["config"])
    variant = dict(cfg.training_variants()[0], **VARIANT, source=spec["source"])
    seqs = {n: (c.n_max, len(c.variables)) for n, c, _ in cfg.sequences()}
    meta = spec["meta"] if spec["source"] == "records" else h5_metadata(spec["train"][0])
    counts = np.zeros(len(cfg.class_names), dtype=np.int64)
    for path in spec["h5_train"]:
        with h5py.File(path, "r") as f:
            counts += np.bincount(f["jets/labels"][:], minlength=len(cfg.class_names))
    pause = spec.get("pause")

    class Pause(keras.callbacks.Callback):
        """Stops the process (until it is killed) at the first epoch it begins, or after a batch of it."""

        epoch = None

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            if pause["at"] == "epoch-begin" and epoch == pause["epoch"]:
                _pause_forever(pause["marker"])

        def on_train_batch_end(self, batch, logs=None):
            if pause["at"] == "mid-epoch" and self.epoch == pause["epoch"] and batch == pause["batch"]:
                _pause_forever(pause["marker"])

    if spec.get("after_another"):  # a law worker trains the variants one after the other in one process
        first = {k: v + "_first" for k, v in spec["out"].items()}
        train_model(dict(variant, epochs=1), cfg.class_names, seqs, len(cfg.candidate_variables), spec["train"],
                    spec["validation"], meta, spec["test"], first, SEED + 1, log=lambda m: None,
                    class_counts=counts.tolist())
    train_model(variant, cfg.class_names, seqs, len(cfg.candidate_variables), spec["train"], spec["validation"], meta,
                spec["test"], spec["out"], SEED, log=lambda m: None, class_counts=counts.tolist(),
                callbacks=[Pause()] if pause else [])


# ----------------------------------------------------------------------------------------------
# running and killing it


def _outputs(d) -> dict:
    os.makedirs(d, exist_ok=True)
    return {"model": str(d / "model.keras"), "history": str(d / "history.csv"), "summary": str(d / "summary.json"),
            "config": str(d / "config.json"), "checkpoint_dir": str(d / "ckpt"), "tensorboard": str(d / "tb"),
            "mlruns": str(d / "mlruns")}


def _run(inputs: dict, source: str, out_dir, kill: tuple | None = None, after_another: bool = False) -> None:
    """Run the worker to completion, or with ``kill = (point, epoch)`` until it reaches that point,
    then SIGKILL its process group. Points: mid-epoch (after batch 5 of the epoch), epoch-begin (the
    previous epoch's checkpoint done), or a checkpoint writer point of taggerflow.training.PAUSE_POINTS.
    ``after_another``: the worker first trains another model (one epoch, another seed) in the same process."""
    from taggerflow.training import PAUSE_ENV, PAUSE_POINTS

    out = _outputs(out_dir)
    # two training files (the file order is shuffled too), the test split for validation and testing
    train = [inputs[source][s] for s in TRAIN_SPLITS]
    spec = {"config": inputs["config"], "source": source, "out": out, "train": train,
            "h5_train": [inputs["h5"][s] for s in TRAIN_SPLITS], "validation": [inputs[source]["test"]],
            "test": [inputs["h5"]["test"]], "meta": inputs["meta"], "after_another": after_another}
    env = {k: v for k, v in os.environ.items() if k != PAUSE_ENV}
    marker = str(out_dir / "paused")
    if os.path.exists(marker):
        os.remove(marker)
    if kill and kill[0] in PAUSE_POINTS:
        env[PAUSE_ENV] = f"{kill[0]}@{kill[1]}:{marker}"
    elif kill:
        spec["pause"] = {"at": kill[0], "epoch": kill[1], "batch": 5, "marker": marker}
    spec_path = str(out_dir / "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    log_path = str(out_dir / "worker.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), spec_path], env=env, cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if kill is None:
            rc = proc.wait(timeout=STARTUP_TIMEOUT)
            assert rc == 0, open(log_path).read()[-3000:]
            return
        deadline = time.time() + STARTUP_TIMEOUT
        while not os.path.exists(marker):
            assert proc.poll() is None, f"the worker ended (rc {proc.returncode}) before {kill}: " \
                                        + open(log_path).read()[-3000:]
            assert time.time() < deadline, f"the worker did not reach {kill}"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _state(out_dir) -> dict:
    with open(out_dir / "ckpt" / "state.json") as f:
        return json.load(f)


def _bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _variables(path):
    import keras

    import taggerflow.models  # noqa: F401  (custom layers)

    model = keras.models.load_model(path)
    return [np.array(w) for w in model.get_weights()], [np.array(v.numpy()) for v in model.optimizer.variables]


# ----------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def inputs(files_config, shard_and_scaling, tmp_path_factory):
    """Training files (WriteTrainSample) and their TFRecords (ToRecords) of the tiny sample, by
    source and split."""
    from taggerflow.records import write_records
    from taggerflow.trainsample import write_train_sample

    shard, scaling, _ = shard_and_scaling
    d = tmp_path_factory.mktemp("resume_inputs")
    h5 = {s: str(d / f"{s}.h5") for s in ("train", "validation", "test")}
    write_train_sample(files_config, [shard], scaling, h5)
    metas = {s: write_records(h5[s], str(d / f"{s}.tfrecord"), 100) for s in h5}
    return {"config": files_config.path, "h5": h5, "records": {s: str(d / f"{s}.tfrecord") for s in metas},
            "meta": metas["train"]}


@pytest.fixture(scope="module")
def uninterrupted(inputs, tmp_path_factory):
    """One uninterrupted training per source (output directories), run when first needed."""
    runs = {}

    def get(source):
        if source not in runs:
            d = tmp_path_factory.mktemp(f"uninterrupted_{source}")
            _run(inputs, source, d)
            runs[source] = d
        return runs[source]

    return get


# ----------------------------------------------------------------------------------------------
# tests

#: (kill point, epoch, epochs committed in state.json after the kill); each rerun resumes and is
#: killed at the next point, the last rerun completes
KILLS = {
    "records": [("mid-epoch", 1, 1), ("model-saved", 1, 1), ("state-committed", 1, 2), ("epoch-begin", 2, 2)],
    "h5": [("mid-epoch", 1, 1), ("model-renamed", 1, 1)],
}


@pytest.mark.parametrize("source", ["records", "h5"])
def test_killed_and_resumed_equals_uninterrupted(inputs, uninterrupted, tmp_path, source):
    run = tmp_path / "run"
    for point, epoch, committed in KILLS[source]:
        _run(inputs, source, run, kill=(point, epoch))
        state = _state(run)
        assert state["epoch"] == committed, (point, state["epoch"])
        names = os.listdir(run / "ckpt")
        if point == "model-saved":  # killed while the next model file existed under its temporary name only
            assert any(n.startswith(f".epoch-{epoch + 1:04d}.keras.") for n in names), names
        if point == "model-renamed":  # the next model file in place, not committed
            assert f"epoch-{epoch + 1:04d}.keras" in names and state["model"] == f"epoch-{epoch:04d}.keras"
    _run(inputs, source, run)
    ref = uninterrupted(source)
    with open(run / "summary.json") as f:
        summary = json.load(f)
    assert summary["resumed_from_epoch"] == KILLS[source][-1][2] and summary["epochs_run"] == EPOCHS
    # final weights and optimizer state, exactly
    (w, opt), (w_ref, opt_ref) = _variables(run / "model.keras"), _variables(ref / "model.keras")
    assert len(w) == len(w_ref) > 0 and len(opt) == len(opt_ref) > 0
    assert all(np.array_equal(a, b) for a, b in zip(w, w_ref))
    assert all(np.array_equal(a, b) for a, b in zip(opt, opt_ref))
    assert int(opt[0]) > 0  # the optimizer's iteration count
    # and the files, byte for byte
    for name in ("model.keras", "history.csv", "config.json", "ckpt/state.json", "ckpt/history.csv",
                 f"ckpt/epoch-{EPOCHS:04d}.keras"):
        assert _bytes(run / name) == _bytes(ref / name), name
    with open(ref / "summary.json") as f:
        assert summary["test"] == json.load(f)["test"]
    assert sorted(os.listdir(run / "ckpt")) == [f"epoch-{EPOCHS:04d}.keras", "history.csv", "state.json"]


def test_two_trainings_from_scratch_write_the_same_bytes(inputs, uninterrupted, tmp_path):
    """... also when the second process trained another model first (Keras numbers the optimizers
    and layers it makes unnamed per process: the model file must not depend on that)."""
    import keras

    ref = uninterrupted("records")
    _run(inputs, "records", tmp_path / "again", after_another=True)
    for name in ("model.keras", "history.csv", "config.json", "ckpt/state.json", "ckpt/history.csv",
                 f"ckpt/epoch-{EPOCHS:04d}.keras"):
        assert _bytes(tmp_path / "again" / name) == _bytes(ref / name), name
    # the stable model file is one Keras reads, and it holds a trained model with its optimizer
    weights, optimizer = _variables(ref / "model.keras")
    assert int(optimizer[0]) > 0 and any(np.abs(w).sum() > 0 for w in weights)
    assert isinstance(keras.models.load_model(ref / "model.keras"), keras.Model)


def test_model_file_bytes_depend_on_the_model_only(tmp_path):
    """save_model: saved twice (a second apart), and saved again after loading it, a trained model
    gives one file; Keras's own save gives a date and memory addresses, which this one does not hold."""
    import zipfile

    import keras

    from taggerflow.models import KERAS_ZIP_DATE, build_model, save_model

    keras.utils.set_random_seed(3)
    model = build_model(VARIANT["model"], 5, {"pfcand": (4, 3)}, 3, seed=3)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = {"candidate": rng.normal(size=(32, 5)).astype("f4"), "pfcand": rng.normal(size=(32, 4, 3)).astype("f4"),
         "pfcand_valid": np.ones((32, 4), "f4")}
    model.fit(x, rng.integers(0, 3, 32), epochs=1, verbose=0)
    paths = [str(tmp_path / f"{i}.keras") for i in range(3)]
    save_model(model, paths[0])
    time.sleep(1.1)  # a zip time stamp has a resolution of 2 s, date_saved of 1 s
    save_model(model, paths[1])
    loaded = keras.models.load_model(paths[0])
    save_model(loaded, paths[2])
    assert _bytes(paths[0]) == _bytes(paths[1]) == _bytes(paths[2])
    for a, b in zip(loaded.get_weights() + [v.numpy() for v in loaded.optimizer.variables],
                    model.get_weights() + [v.numpy() for v in model.optimizer.variables]):
        assert np.array_equal(a, b)
    with zipfile.ZipFile(paths[0]) as zf:
        assert {i.date_time for i in zf.infolist()} == {KERAS_ZIP_DATE}
        assert "date_saved" not in json.loads(zf.read("metadata.json"))
        assert "shared_object_id" not in zf.read("config.json").decode()
    model.save(str(tmp_path / "keras.keras"))  # what Keras writes itself
    with zipfile.ZipFile(tmp_path / "keras.keras") as zf:
        assert "date_saved" in json.loads(zf.read("metadata.json"))
        assert "shared_object_id" in zf.read("config.json").decode()


if __name__ == "__main__":
    _worker(sys.argv[1])
