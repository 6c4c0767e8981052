"""Training: resume from the last checkpoint, class weights, logs, and a learned model that beats
the AUC bound an untrained one cannot reach."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest

from taggerflow.training import class_weights, learning_rate, read_history, train_model

AUC_BOUND = 0.85  # tau vs jet on the tiny demo sample after 2 epochs (the e2e test asserts it too)


def test_class_weights():
    assert class_weights(None, ["a", "b"], [1, 3]) is None
    w = class_weights("balanced", ["a", "b"], [100, 300])
    assert w == {0: pytest.approx(2.0), 1: pytest.approx(2 / 3)}
    assert 100 * w[0] == pytest.approx(300 * w[1])  # each class weighs the same in the loss
    assert class_weights({"b": 2.5}, ["a", "b"], None) == {0: 1.0, 1: 2.5}
    with pytest.raises(ValueError, match="every class"):
        class_weights("balanced", ["a", "b"], [10, 0])


def test_learning_rate_schedules():
    assert learning_rate({"learning_rate": 0.01}) == 0.01
    exp = learning_rate({"learning_rate": 0.01, "lr_schedule": {"type": "exponential", "decay_steps": 10,
                                                                 "decay_rate": 0.5}})
    assert float(exp(10)) == pytest.approx(0.005)
    cos = learning_rate({"learning_rate": 0.01, "lr_schedule": {"type": "cosine", "decay_steps": 10}})
    assert float(cos(10)) == pytest.approx(0.0, abs=1e-9) and float(cos(0)) == pytest.approx(0.01)


@pytest.fixture(scope="module")
def records(files_config, shard_and_scaling, tmp_path_factory):
    from taggerflow.records import write_records
    from taggerflow.trainsample import write_train_sample

    shard, scaling, _ = shard_and_scaling
    d = tmp_path_factory.mktemp("train")
    h5 = {s: str(d / f"{s}.h5") for s in ("train", "validation", "test")}
    write_train_sample(files_config, [shard], scaling, h5)
    metas = {s: write_records(h5[s], str(d / f"{s}.tfrecord"), 128) for s in ("train", "validation")}
    return {"h5": h5, "records": {s: str(d / f"{s}.tfrecord") for s in metas}, "meta": metas["train"], "dir": d}


def _outputs(d) -> dict:
    os.makedirs(d, exist_ok=True)
    return {"model": str(d / "model.keras"), "history": str(d / "history.csv"), "summary": str(d / "summary.json"),
            "config": str(d / "config.json"), "checkpoint_dir": str(d / "ckpt"), "tensorboard": str(d / "tb"),
            "mlruns": str(d / "mlruns")}


def test_train_resume_and_logs(files_config, records, tmp_path):
    cfg = files_config
    seqs = {n: (c.n_max, len(c.variables)) for n, c, _ in cfg.sequences()}
    variant = dict(cfg.training_variants()[0], epochs=1, batch_size=128, tensorboard=True,
                   class_weights="balanced")
    out = _outputs(tmp_path / "run")
    counts = np.bincount(np.asarray(__import__("h5py").File(records["h5"]["train"])["jets/labels"][:]), minlength=4)
    args = (cfg.class_names, seqs, len(cfg.candidate_variables), [records["records"]["train"]],
            [records["records"]["validation"]], records["meta"], [records["h5"]["test"]], out, 11)
    first = train_model(variant, *args, log=lambda m: None, class_counts=counts)
    assert first["resumed_from_epoch"] == 0 and first["epochs_run"] == 1
    assert first["class_weights"][0] == pytest.approx(counts.sum() / (4 * counts[0]))
    # the run is "interrupted" after epoch 1; asked for 2 epochs, the rerun continues from the checkpoint
    second = train_model(dict(variant, epochs=2), *args, log=lambda m: None, class_counts=counts)
    assert second["resumed_from_epoch"] == 1
    history = read_history(out["history"])
    assert [int(r["epoch"]) for r in history] == [0, 1]
    assert {"loss", "val_loss", "accuracy", "val_accuracy"} <= set(history[0])
    assert second["test"]["auc"]["tau_vs_jet"] > AUC_BOUND
    saved = json.load(open(out["config"]))
    assert saved["seed"] == 11 and saved["variant"]["epochs"] == 2
    assert glob.glob(str(tmp_path / "run" / "tb" / "**" / "events.out.tfevents.*"), recursive=True)
    # mlflow (a test dependency): parameters and per-epoch metrics in the local mlruns directory
    runs = glob.glob(str(tmp_path / "run" / "mlruns" / "*" / "*" / "metrics" / "val_loss"))
    assert len(runs) == 2
    assert len(open(runs[0]).read().strip().splitlines()) in (1, 2)


def test_untrained_model_does_not_reach_the_auc_bound(files_config, records):
    import keras

    from taggerflow.metrics import pairwise_aucs
    from taggerflow.models import build_model
    from taggerflow.records import read_h5
    from taggerflow.training import predict

    cfg = files_config
    seqs = {n: (c.n_max, len(c.variables)) for n, c, _ in cfg.sequences()}
    keras.utils.set_random_seed(5)
    model = build_model(cfg.training_variants()[0]["model"], len(cfg.candidate_variables), seqs, 4, seed=5)
    arrays = read_h5([records["h5"]["test"]])
    auc = pairwise_aucs(predict(model, arrays), arrays["jets/labels"], cfg.class_names)["tau_vs_jet"]
    assert auc < AUC_BOUND


def test_conditional_training_from_records_with_add_vars(files_config, records, tmp_path):
    from taggerflow.records import write_records

    cfg = files_config
    rec = str(tmp_path / "train_add.tfrecord")
    meta = write_records(records["h5"]["train"], rec, 128, add_vars=["pt", "abs_eta"])
    seqs = {n: (c.n_max, len(c.variables)) for n, c, _ in cfg.sequences()}
    variant = dict(cfg.training_variants()[0], epochs=1, batch_size=128, class_weights=None,
                   model=dict(cfg.training_variants()[0]["model"], conditional=True))
    out = _outputs(tmp_path / "cond")
    summary = train_model(variant, cfg.class_names, seqs, len(cfg.candidate_variables), [rec], [], meta,
                          [records["h5"]["test"]], out, 3, log=lambda m: None)
    assert summary["test"]["auc"]["tau_vs_jet"] > 0.7
    saved = json.load(open(out["config"]))
    assert saved["add_vars"] == ["pt", "abs_eta"]
    import keras

    import taggerflow.models  # noqa: F401
    assert "add_vars" in [i.name for i in keras.models.load_model(out["model"]).inputs]
    # without add_vars in the records, a conditional variant is refused with a clear message
    with pytest.raises(ValueError, match="model.conditional needs records.add_vars"):
        train_model(variant, cfg.class_names, seqs, len(cfg.candidate_variables), [records["records"]["train"]], [],
                    records["meta"], [records["h5"]["test"]], _outputs(tmp_path / "cond2"), 3, log=lambda m: None)


def test_conditional_training_from_h5(files_config, records, tmp_path):
    """source: h5 takes the conditional inputs (records.add_vars) from the candidate inputs of the
    HDF5 files, as ToRecords does; the first batches equal those of the records."""
    from taggerflow.records import write_records
    from taggerflow.training import h5_metadata, training_datasets

    cfg = files_config
    meta = h5_metadata(records["h5"]["train"], ["pt", "abs_eta"])
    rec = str(tmp_path / "train_add.tfrecord")
    rec_meta = write_records(records["h5"]["train"], rec, 128, add_vars=["pt", "abs_eta"])
    kw = dict(batch_size=64, seed=0, collections=["pfcand"], with_add_vars=True, shuffle=False)
    (xa, ya), (xb, yb) = (next(iter(training_datasets(dict(variant, name="v"), m, files, [], **kw)[0]
                                    .as_numpy_iterator()))
                          for variant, m, files in (({"source": "h5"}, meta, [records["h5"]["train"]]),
                                                    ({"source": "records"}, rec_meta, [rec])))
    assert set(xa) == set(xb) == {"candidate", "pfcand", "pfcand_valid", "add_vars"}
    for k in xa:
        np.testing.assert_array_equal(xa[k], xb[k], err_msg=k)
    np.testing.assert_array_equal(ya, yb)
    names = meta["variables"]["jets/inputs"]
    np.testing.assert_array_equal(xa["add_vars"], xa["candidate"][:, [names.index("pt"), names.index("abs_eta")]])
    seqs = {n: (c.n_max, len(c.variables)) for n, c, _ in cfg.sequences()}
    variant = dict(cfg.training_variants()[0], epochs=1, batch_size=128, class_weights=None, source="h5",
                   tensorboard=False, mlflow=False, model=dict(cfg.training_variants()[0]["model"], conditional=True))
    summary = train_model(variant, cfg.class_names, seqs, len(cfg.candidate_variables), [records["h5"]["train"]],
                          [records["h5"]["validation"]], meta, [records["h5"]["test"]], _outputs(tmp_path / "c"), 3,
                          log=lambda m: None)
    assert summary["source"] == "h5" and not summary["sample_weights"]
    assert summary["test"]["auc"]["tau_vs_jet"] > 0.7


# ----------------------------------------------------------------------------------------------
# resuming after a kill: the checkpoint weights, one history row per epoch, early stopping


class Killed(BaseException):
    """A kill simulated: raised inside the training, caught by nothing (not an Exception)."""


N_EPOCHS = 3


def _variant(cfg, **kw) -> dict:
    return dict(cfg.training_variants()[0], **{"epochs": N_EPOCHS, "batch_size": 128, "class_weights": None,
                                               "tensorboard": False, "mlflow": False, **kw})


def _train(cfg, records, variant, out, callbacks=()):
    seqs = {n: (c.n_max, len(c.variables)) for n, c, _ in cfg.sequences()}
    return train_model(variant, cfg.class_names, seqs, len(cfg.candidate_variables), [records["records"]["train"]],
                       [records["records"]["validation"]], records["meta"], [records["h5"]["test"]], out, 7,
                       log=lambda m: None, callbacks=callbacks)


def _recorder():
    """A callback recording the first epoch a fit runs and the model/optimizer variables it starts from."""
    import keras

    class Recorder(keras.callbacks.Callback):
        first_epoch = None
        weights = optimizer = None

        def on_train_begin(self, logs=None):
            self.weights = [np.array(w) for w in self.model.get_weights()]
            self.optimizer = [np.array(v) for v in self.model.optimizer.variables]

        def on_epoch_begin(self, epoch, logs=None):
            if self.first_epoch is None:
                self.first_epoch = epoch

    return Recorder()


def _killer(at_epoch: int):
    """Kills the training at the end of epoch ``at_epoch`` (0-based), after its checkpoint."""
    import keras

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == at_epoch:
                raise Killed(f"after epoch {epoch}")

    return Kill()


def _model_weights(path):
    import keras

    import taggerflow.models  # noqa: F401

    model = keras.models.load_model(path)
    return [np.array(w) for w in model.get_weights()], [np.array(v) for v in model.optimizer.variables]


def _epochs(history) -> list[int]:
    return [int(r["epoch"]) for r in history]


@pytest.fixture(scope="module")
def reference_run(files_config, records, tmp_path_factory):
    """An uninterrupted run of N_EPOCHS epochs: summary, history rows and final weights."""
    out = _outputs(tmp_path_factory.mktemp("reference"))
    summary = _train(files_config, records, _variant(files_config), out)
    return {"summary": summary, "history": read_history(out["history"]), "weights": _model_weights(out["model"])[0]}


@pytest.mark.parametrize("kill", ["after_checkpoint", "before_state", "before_history"])
def test_resume_after_kill(files_config, records, reference_run, tmp_path, monkeypatch, kill):
    """Killed in epoch 1 (0-based) at three moments (simulated in this process; tests/test_resume_kill.py
    kills real processes), the rerun resumes after the last committed epoch from its weights and
    optimizer state, and ends with exactly the weights and history of the uninterrupted run."""
    import taggerflow.training as training
    from taggerflow.models import build_model

    cfg = files_config
    out = _outputs(tmp_path / "run")
    state_path = os.path.join(out["checkpoint_dir"], "state.json")
    ckpt_history = os.path.join(out["checkpoint_dir"], "history.csv")
    callbacks, committed = (), 2
    if kill == "after_checkpoint":  # everything of epoch 1 written
        callbacks = (_killer(1),)
    elif kill == "before_state":  # epoch 1's model file renamed into place, its state.json not written
        committed = 1
        real = training.write_json

        def write_json(path, obj):
            if path == state_path and obj["epoch"] == 2:
                raise Killed("before state.json")
            real(path, obj)
        monkeypatch.setattr(training, "write_json", write_json)
    else:  # epoch 1's state.json committed, the checkpoint history.csv not rewritten
        real = training.write_history

        def write_history(path, rows):
            if path == ckpt_history and len(rows) == 2:
                raise Killed("before history.csv")
            real(path, rows)
        monkeypatch.setattr(training, "write_history", write_history)
    with pytest.raises(Killed):
        _train(cfg, records, _variant(cfg), out, callbacks=callbacks)
    monkeypatch.undo()
    state = json.load(open(state_path))
    assert state["epoch"] == committed and _epochs(state["history"]) == list(range(committed))
    assert len(read_history(ckpt_history)) == (1 if kill == "before_history" else committed)
    ckpt_weights, ckpt_optimizer = _model_weights(os.path.join(out["checkpoint_dir"], state["model"]))

    rec = _recorder()
    summary = _train(cfg, records, _variant(cfg), out, callbacks=(rec,))
    assert summary["resumed_from_epoch"] == committed and rec.first_epoch == committed
    # the resumed fit starts from the checkpointed weights and optimizer state, not a fresh model
    assert len(rec.weights) == len(ckpt_weights) and len(rec.optimizer) == len(ckpt_optimizer)
    for a, b in zip(rec.weights + rec.optimizer, ckpt_weights + ckpt_optimizer):
        np.testing.assert_array_equal(a, b)
    seqs = {n: (c.n_max, len(c.variables)) for n, c, _ in cfg.sequences()}
    fresh = build_model(_variant(cfg)["model"], len(cfg.candidate_variables), seqs, 4, seed=7).get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(fresh, rec.weights))
    assert int(rec.optimizer[0]) > 0  # the optimizer's iteration count went on
    # exactly one history row per epoch, in the final and the checkpoint history
    history = read_history(out["history"])
    assert _epochs(history) == _epochs(read_history(ckpt_history)) == list(range(N_EPOCHS))
    assert summary["epochs_run"] == N_EPOCHS
    # the same epochs as the uninterrupted run, exactly: history rows, and the final weights
    assert history == reference_run["history"]
    final = _model_weights(out["model"])[0]
    assert len(final) == len(reference_run["weights"])
    for a, b in zip(final, reference_run["weights"]):
        np.testing.assert_array_equal(a, b)
    # one model file left in the checkpoint, no temporary files
    assert sorted(os.listdir(out["checkpoint_dir"])) == ["epoch-0003.keras", "history.csv", "state.json"]


def test_resume_rejects_a_checkpoint_whose_model_differs(files_config, records, tmp_path):
    cfg = files_config
    out = _outputs(tmp_path / "run")
    with pytest.raises(Killed):
        _train(cfg, records, _variant(cfg, epochs=2), out, callbacks=(_killer(0),))
    state = json.load(open(os.path.join(out["checkpoint_dir"], "state.json")))
    with open(os.path.join(out["checkpoint_dir"], state["model"]), "ab") as f:
        f.write(b"\0")  # not the file the state recorded
    messages = []
    seqs = {n: (c.n_max, len(c.variables)) for n, c, _ in cfg.sequences()}
    summary = train_model(_variant(cfg, epochs=2), cfg.class_names, seqs, len(cfg.candidate_variables),
                          [records["records"]["train"]], [records["records"]["validation"]], records["meta"],
                          [records["h5"]["test"]], out, 7, log=messages.append)
    assert any("differs from the one the state recorded" in m for m in messages)
    assert summary["resumed_from_epoch"] == 0 and _epochs(read_history(out["history"])) == [0, 1]


def test_early_stopping_survives_a_resume(files_config, records, tmp_path):
    """With a learning rate of 0 the validation loss never improves after epoch 0: patience 2 stops
    the run after epoch 2. Killed after epoch 1, the rerun continues the patience count and stops
    there too (a restarted count would train epochs 2-4); killed after the stopping epoch's
    checkpoint, the rerun trains nothing."""
    cfg = files_config
    variant = _variant(cfg, epochs=8, learning_rate=0.0, lr_schedule={"type": "constant"}, early_stopping_patience=2)
    ref = _train(cfg, records, variant, _outputs(tmp_path / "ref"))
    assert ref["stopped_early"] and ref["epochs_run"] == 3

    out = _outputs(tmp_path / "run")
    with pytest.raises(Killed):
        _train(cfg, records, variant, out, callbacks=(_killer(1),))
    es = json.load(open(os.path.join(out["checkpoint_dir"], "state.json")))["early_stopping"]
    assert es["wait"] == 1 and es["best_epoch"] == 0 and es["monitor"] == "val_loss"
    rec = _recorder()
    resumed = _train(cfg, records, variant, out, callbacks=(rec,))
    assert rec.first_epoch == 2 and resumed["stopped_early"]
    assert _epochs(read_history(out["history"])) == [0, 1, 2]

    out = _outputs(tmp_path / "run2")
    with pytest.raises(Killed):
        _train(cfg, records, variant, out, callbacks=(_killer(2),))
    assert json.load(open(os.path.join(out["checkpoint_dir"], "state.json")))["stopped"]
    rec = _recorder()
    rerun = _train(cfg, records, variant, out, callbacks=(rec,))
    assert rec.first_epoch is None and rerun["resumed_from_epoch"] == 3 and rerun["stopped_early"]
    assert _epochs(read_history(out["history"])) == [0, 1, 2]
