"""Training sources (TFRecords or the training HDF5 files) and the flattening weights of the train
sample reaching the loss."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from taggerflow.config import ConfigError, config_from_dict
from taggerflow.training import (class_weights, h5_metadata, read_history, sample_weighted, train_model,
                                 training_datasets, use_sample_weights)

SPLITS = ("train", "validation", "test")


def _cfg(base, train_sample=None, training=None):
    raw = json.loads(json.dumps(base.raw))
    raw["train_sample"].update(train_sample or {})
    raw["training"].update(training or {})
    return config_from_dict(raw, base.path)


@pytest.fixture(scope="module")
def weighted(files_config, shard_and_scaling, tmp_path_factory):
    """Training files with flattening weights, and their TFRecords (train, validation)."""
    from taggerflow.records import write_records
    from taggerflow.trainsample import write_train_sample

    shard, scaling, _ = shard_and_scaling
    cfg = _cfg(files_config, {"weights": True})
    d = tmp_path_factory.mktemp("weighted")
    h5 = {s: str(d / f"{s}.h5") for s in SPLITS}
    write_train_sample(cfg, [shard], scaling, h5)
    metas = {s: write_records(h5[s], str(d / f"{s}.tfrecord"), 100) for s in ("train", "validation")}
    return {"cfg": cfg, "h5": h5, "records": {s: str(d / f"{s}.tfrecord") for s in metas}, "meta": metas["train"]}


def _batches(ds):
    return list(ds.as_numpy_iterator())


def _variant(cfg, **kw):
    return {**cfg.training_variants()[0], "epochs": 1, "batch_size": 128, "tensorboard": False, "mlflow": False, **kw}


def test_sources_yield_the_same_weighted_batches(weighted):
    cfg, h5 = weighted["cfg"], weighted["h5"]
    common = dict(batch_size=64, seed=1, collections=["pfcand"], with_weights=True, shuffle=False)
    rec, rec_val = training_datasets(_variant(cfg, source="records"), weighted["meta"], [weighted["records"]["train"]],
                                     [weighted["records"]["validation"]], **common)
    hdf, hdf_val = training_datasets(_variant(cfg, source="h5"), h5_metadata(h5["train"]), [h5["train"]],
                                     [h5["validation"]], **common)
    for a_ds, b_ds in ((rec, hdf), (rec_val, hdf_val)):
        a, b = _batches(a_ds), _batches(b_ds)
        assert len(a) == len(b) > 1
        for (xa, ya, wa), (xb, yb, wb) in zip(a, b):
            assert set(xa) == set(xb) == {"candidate", "pfcand", "pfcand_valid"}
            for k in xa:
                np.testing.assert_array_equal(xa[k], xb[k], err_msg=k)
            np.testing.assert_array_equal(ya, yb)
            np.testing.assert_array_equal(wa, wb)
    # unshuffled, the batches are the file in order, weights included
    with h5py.File(h5["train"], "r") as f:
        w_file, y_file, x_file = f["jets/weights"][:], f["jets/labels"][:], f["pfcand/inputs"][:]
    a = _batches(rec)
    np.testing.assert_array_equal(np.concatenate([t[2] for t in a]), w_file)
    np.testing.assert_array_equal(np.concatenate([t[0]["pfcand"] for t in a]), x_file)
    assert w_file.std() > 0.05 and not np.allclose(w_file, 1.0)  # real flattening weights, not ones
    # class weights are multiplied into the training weights only (Keras cannot take both)
    cw = class_weights("balanced", cfg.class_names, np.bincount(y_file, minlength=len(cfg.class_names)))
    folded, folded_val = training_datasets(_variant(cfg, source="h5"), h5_metadata(h5["train"]), [h5["train"]],
                                           [h5["validation"]], class_weight=cw, **common)
    w = np.concatenate([t[2] for t in _batches(folded)])
    np.testing.assert_allclose(w, w_file * np.array([cw[i] for i in range(len(cw))])[y_file], rtol=1e-6)
    np.testing.assert_array_equal(np.concatenate([t[2] for t in _batches(folded_val)]),
                                  np.concatenate([t[2] for t in _batches(hdf_val)]))


def test_sample_weights_reach_the_loss(weighted):
    """Keras's loss on the weighted batches is the weighted mean of the per-candidate losses."""
    import keras

    from taggerflow.models import build_model
    from taggerflow.records import h5_model_inputs, read_h5

    cfg, h5 = weighted["cfg"], weighted["h5"]
    seqs = {n: (c.n_max, len(c.variables)) for n, c, _ in cfg.sequences()}
    model = build_model({"type": "deepsets", "phi_layers": [8], "f_layers": [8]}, len(cfg.candidate_variables),
                        seqs, len(cfg.class_names), seed=2)
    model.compile(loss="sparse_categorical_crossentropy")
    arrays = read_h5([h5["train"]])
    probs = np.asarray(model.predict(h5_model_inputs(arrays, ["pfcand"]), verbose=0), dtype=np.float64)
    y, w = arrays["jets/labels"], arrays["jets/weights"].astype(np.float64)
    per = -np.log(probs[np.arange(len(y)), y])
    kw = dict(batch_size=len(y), seed=0, collections=["pfcand"], shuffle=False)  # one batch: no batch averaging
    ds_w, _ = training_datasets(_variant(cfg, source="h5"), h5_metadata(h5["train"]), [h5["train"]], [],
                                with_weights=True, **kw)
    ds_u, _ = training_datasets(_variant(cfg, source="h5"), h5_metadata(h5["train"]), [h5["train"]], [], **kw)
    loss_w = model.evaluate(ds_w, verbose=0)
    loss_u = model.evaluate(ds_u, verbose=0)
    assert loss_w == pytest.approx(np.sum(w * per) / len(y), rel=1e-4)
    assert loss_u == pytest.approx(per.mean(), rel=1e-4)
    assert abs(loss_w - loss_u) > 1e-3


def test_use_sample_weights_option(weighted, tiny_config, tmp_path):
    assert sample_weighted([weighted["h5"]["train"], weighted["h5"]["test"]])
    v = {"name": "v"}
    assert use_sample_weights(v, True) and not use_sample_weights(v, False)
    assert not use_sample_weights(dict(v, use_sample_weights=False), True)
    with pytest.raises(ValueError, match="use_sample_weights is true.*train_sample.weights"):
        use_sample_weights(dict(v, use_sample_weights=True), False)
    # configuration: source and use_sample_weights are validated, naming the key
    with pytest.raises(ConfigError, match=r"training\.source: unknown source 'parquet'"):
        _cfg(tiny_config, training={"source": "parquet"})
    raw = json.loads(json.dumps(tiny_config.raw))
    raw["training"]["variants"][1]["source"] = "csv"
    with pytest.raises(ConfigError, match=r"training\.variants\[1\]\.source: unknown source"):
        config_from_dict(raw, tiny_config.path)
    with pytest.raises(ConfigError, match=r"training\.use_sample_weights: true needs train_sample\.weights"):
        _cfg(tiny_config, training={"use_sample_weights": True})
    ok = _cfg(tiny_config, {"weights": True}, {"source": "h5", "use_sample_weights": True})
    assert {v["source"] for v in ok.training_variants()} == {"h5"}


def _outputs(d) -> dict:
    os.makedirs(d, exist_ok=True)
    return {"model": str(d / "model.keras"), "history": str(d / "history.csv"), "summary": str(d / "summary.json"),
            "config": str(d / "config.json"), "checkpoint_dir": str(d / "ckpt"), "tensorboard": str(d / "tb"),
            "mlruns": str(d / "mlruns")}


def test_training_from_records_and_from_h5(weighted, tmp_path):
    """The same unshuffled batches from either source train the same model; without the weights the
    loss is another one."""
    cfg, h5 = weighted["cfg"], weighted["h5"]
    seqs = {n: (c.n_max, len(c.variables)) for n, c, _ in cfg.sequences()}
    base = _variant(cfg, shuffle_buffer=0, class_weights="balanced", epochs=2, learning_rate=0.01,
                    model={"type": "deepsets", "phi_layers": [16], "f_layers": [16]})
    counts = np.bincount(h5py.File(h5["train"], "r")["jets/labels"][:], minlength=len(cfg.class_names))
    args = (cfg.class_names, seqs, len(cfg.candidate_variables))

    def run(tag, variant, train, val, meta):
        out = _outputs(tmp_path / tag)
        s = train_model(variant, *args, train, val, meta, [h5["test"]], out, 7, log=lambda m: None,
                        class_counts=counts)
        return s, read_history(out["history"]), json.load(open(out["config"]))

    rec, rec_hist, rec_cfg = run("rec", dict(base, source="records"), [weighted["records"]["train"]],
                                 [weighted["records"]["validation"]], weighted["meta"])
    hdf, hdf_hist, hdf_cfg = run("h5", dict(base, source="h5"), [h5["train"]], [h5["validation"]],
                                 h5_metadata(h5["train"]))
    assert rec["source"] == "records" and hdf["source"] == "h5" and hdf_cfg["source"] == "h5"
    assert rec["sample_weights"] and hdf["sample_weights"] and rec_cfg["sample_weights"]  # auto: the sample has them
    for key in ("loss", "val_loss"):
        for a, b in zip(rec_hist, hdf_hist, strict=True):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-4)
    assert rec["test"]["accuracy"] == pytest.approx(hdf["test"]["accuracy"], abs=0.01)
    assert hdf["test"]["auc"]["tau_vs_jet"] > 0.7
    plain, plain_hist, _ = run("plain", dict(base, source="h5", use_sample_weights=False), [h5["train"]],
                               [h5["validation"]], h5_metadata(h5["train"]))
    assert not plain["sample_weights"]
    assert abs(float(plain_hist[0]["loss"]) - float(hdf_hist[0]["loss"])) > 1e-3
    assert float(plain_hist[0]["val_loss"]) != pytest.approx(float(hdf_hist[0]["val_loss"]), rel=1e-3)


def test_model_widths_must_match_the_files(files_config, shard_and_scaling, tmp_path):
    """With concat_jet_tracks the constituents are wider than the collection's variables: a model
    built from len(collection.variables) is refused before training, naming the option."""
    from taggerflow.trainsample import sequence_variables, write_train_sample

    shard, scaling, _ = shard_and_scaling
    cfg = _cfg(files_config, {"concat_jet_tracks": ["pt"]})
    h5 = {s: str(tmp_path / f"{s}.h5") for s in SPLITS}
    write_train_sample(cfg, [shard], scaling, h5)
    wrong = {n: (c.n_max, len(c.variables)) for n, c, _ in cfg.sequences()}
    with pytest.raises(ValueError, match="sequence 'pfcand'.*concat_jet_tracks"):
        train_model(_variant(cfg, source="h5"), cfg.class_names, wrong, len(cfg.candidate_variables), [h5["train"]],
                    [], h5_metadata(h5["train"]), [h5["test"]], _outputs(tmp_path / "w"), 1, log=lambda m: None)
    assert not os.path.exists(tmp_path / "w" / "model.keras")
    right = {n: (c.n_max, len(sequence_variables(cfg)[n])) for n, c, _ in cfg.sequences()}
    assert right["pfcand"][1] == len(cfg.collections[0].variables) + 1


def test_training_task_requires_records_only_for_record_variants(tmp_path, monkeypatch):
    from tasks.training import Training
    from tests.conftest import tiny_raw, write_config

    monkeypatch.setenv("TAGGERFLOW_DATA", str(tmp_path / "data"))
    raw = tiny_raw()
    raw["training"]["variants"][1]["source"] = "h5"  # dense from the HDF5 files, deepsets from the records
    path = write_config(raw, tmp_path)
    wf = Training(version="t", config=path)
    assert wf.get_branch_map() == {0: "deepsets", 1: "dense"}
    assert set(wf.workflow_requires()) >= {"records", "train_sample"}
    assert set(Training(version="t", config=path, branch=0).requires()) == {"records", "train_sample"}
    assert set(Training(version="t", config=path, branch=1).requires()) == {"train_sample"}
    raw["training"]["source"] = "h5"
    raw["name"] = "all_h5"
    path = write_config(raw, tmp_path)
    assert "records" not in Training(version="t", config=path).workflow_requires()
