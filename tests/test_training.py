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
