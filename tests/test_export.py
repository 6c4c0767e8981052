"""ConvertLwtnn glue: lwtnn variables from the scaling and the lwtnn-vs-Keras check on real shards."""

from __future__ import annotations

import os

import numpy as np
import pytest

from taggerflow.export import check, check_inputs, convert, format_table, lwtnn_variables, raw_inputs


def test_lwtnn_variables_from_scaling():
    scaling = {"candidate": {"x": {"global": {"mean": 50.0, "std": 0.5, "lim_min": -2.0, "lim_max": None,
                                              "default": 1.0}}}}
    variables, clamp = lwtnn_variables(scaling, "candidate", ["x"])
    assert variables == [{"name": "x", "offset": -50.0, "scale": 2.0, "default": 50.5}]
    assert clamp == {"x": [49.0, None]}
    np.testing.assert_array_equal(raw_inputs(np.array([[10.0], [49.5], [1e9]]), [clamp["x"]], [50.5])[:, 0],
                                  [49.0, 49.5, 1e9])
    # the recipe: clamp, then non-finite -> default; -inf meets the lower bound, +inf and NaN the default
    np.testing.assert_array_equal(raw_inputs(np.array([[-np.inf], [np.inf], [np.nan]]), [clamp["x"]], [50.5])[:, 0],
                                  [49.0, 50.5, 50.5])


@pytest.mark.parametrize("model_type", ["deepsets", "dense"])
def test_check_on_shard_candidates(files_config, shard_and_scaling, model_type):
    from taggerflow.models import build_model

    cfg = files_config
    shard, scaling, _ = shard_and_scaling
    seqs = {n: (c.n_max, len(c.variables)) for n, c, _ in cfg.sequences()}
    model = build_model({"type": model_type, "phi_layers": [16, 16], "f_layers": [16], "activation": "relu"},
                        len(cfg.candidate_variables), seqs, len(cfg.class_names), seed=3)
    config, clamps = convert(model, cfg, scaling)
    if model_type == "dense":
        assert "nodes" not in config and [v["name"] for v in config["inputs"]] == [v.name for v in cfg.candidate_variables]
    else:
        assert [s["name"] for s in config["input_sequences"]] == ["pfcand"]
    inputs = check_inputs(cfg, [shard], scaling, 250)
    assert inputs["n"] == 250
    counts = inputs["raw"]["pfcand"][1]
    assert counts.max() == cfg.collections[0].n_max  # candidates with more constituents were truncated
    # the same test-split candidates in the shard: some have more than n_max constituents, some none
    import awkward as ak
    import uproot

    from taggerflow.trainsample import split_index
    t = uproot.open(shard)["candidates"]
    arr = t.arrays(["event", "dataset_id", "pfcand_pt"])
    test = split_index(ak.to_numpy(arr["event"]), ak.to_numpy(arr["dataset_id"]), cfg.raw["train_sample"]["split"]) == 2
    n_raw = ak.to_numpy(ak.num(arr["pfcand_pt"][test]))[:250]
    np.testing.assert_array_equal(np.minimum(n_raw, cfg.collections[0].n_max), counts)
    assert n_raw.max() > cfg.collections[0].n_max and (n_raw == 0).any()
    result = check(model, config, clamps, inputs, ["pfcand"], tolerance=1e-5)
    assert result["passed"] and result["max_abs_diff"] < 1e-5
    assert result["fraction_above"]["1e-05"] == 0.0
    assert "fraction above" in format_table(result)


def test_check_detects_a_wrong_offset(files_config, shard_and_scaling):
    from taggerflow.models import build_model

    cfg = files_config
    shard, scaling, _ = shard_and_scaling
    seqs = {n: (c.n_max, len(c.variables)) for n, c, _ in cfg.sequences()}
    model = build_model({"type": "deepsets", "phi_layers": [8], "f_layers": [8]}, len(cfg.candidate_variables),
                        seqs, len(cfg.class_names), seed=4)
    config, clamps = convert(model, cfg, scaling)
    config["inputs"][0]["variables"][0]["offset"] += 1.0  # a scaling mismatch between C++ and training
    inputs = check_inputs(cfg, [shard], scaling, 200)
    result = check(model, config, clamps, inputs, ["pfcand"], tolerance=1e-5)
    assert not result["passed"] and result["max_abs_diff"] > 1e-4


def test_concat_jet_tracks_train_export_and_check(files_config, shard_and_scaling, tmp_path):
    """concat_jet_tracks: a model trained on constituents carrying candidate variables exports to
    lwtnn with those variables in every input sequence (the candidate's name, offset and scale), and
    the numpy lwtnn evaluator fed raw values agrees with Keras; ONNX and the model card follow."""
    import json

    from taggerflow.config import config_from_dict
    from taggerflow.export import check_files, export_model
    from taggerflow.training import h5_metadata, train_model
    from taggerflow.trainsample import sequence_variables, write_train_sample

    shard, scaling, _ = shard_and_scaling
    raw = json.loads(json.dumps(files_config.raw))
    raw["train_sample"]["concat_jet_tracks"] = ["pt", "abs_eta"]
    cfg = config_from_dict(raw, files_config.path)
    coll = cfg.collections[0]
    h5 = {s: str(tmp_path / f"{s}.h5") for s in ("train", "validation", "test")}
    write_train_sample(cfg, [shard], scaling, h5)
    seq_vars = sequence_variables(cfg)
    seqs = {n: (c.n_max, len(seq_vars[n])) for n, c, _ in cfg.sequences()}
    assert seqs == {"pfcand": (coll.n_max, len(coll.variables) + 2)}
    variant = dict(cfg.training_variants()[0], epochs=1, batch_size=128, source="h5", tensorboard=False,
                   mlflow=False, class_weights=None, model={"type": "deepsets", "phi_layers": [16], "f_layers": [16]})
    d = tmp_path / "train"
    d.mkdir()
    out = {k: str(d / f) for k, f in (("model", "model.keras"), ("history", "h.csv"), ("summary", "s.json"),
                                      ("config", "c.json"), ("checkpoint_dir", "ckpt"))}
    summary = train_model(variant, cfg.class_names, seqs, len(cfg.candidate_variables), [h5["train"]],
                          [h5["validation"]], h5_metadata(h5["train"]), [h5["test"]], out, 5, log=lambda m: None)
    assert json.load(open(out["config"]))["sequence_variables"]["pfcand"] == coll.variable_names + ["pt", "abs_eta"]

    ex = {k: str(tmp_path / f) for k, f in (("lwtnn", "lwtnn.json"), ("check", "check.json"), ("onnx", "m.onnx"),
                                            ("card", "card.json"))}
    result = export_model(out["model"], cfg, scaling, [shard], ex, training_summary=summary, log=lambda m: None)
    assert result["lwtnn"]["passed"] and result["lwtnn"]["max_abs_diff"] < 1e-5
    import h5py

    with h5py.File(h5["test"], "r") as f:  # every test-split candidate of the shard (fewer than n_check)
        assert result["lwtnn"]["n_candidates"] == min(cfg.raw["export"]["n_check"], len(f["jets/labels"]))
    assert result["onnx"]["passed"]
    lw = json.load(open(ex["lwtnn"]))
    seq = next(s for s in lw["input_sequences"] if s["name"] == "pfcand")
    assert [v["name"] for v in seq["variables"]] == coll.variable_names + ["pt", "abs_eta"]
    cand = {v["name"]: v for v in lw["inputs"][0]["variables"]}
    for name in ("pt", "abs_eta"):  # scaled exactly as the candidate variable
        assert next(v for v in seq["variables"] if v["name"] == name) == cand[name]
    clamps = json.loads(lw["miscellaneous"]["clamp_raw_inputs"])
    assert clamps["pfcand"]["abs_eta"] == clamps["candidate"]["abs_eta"]
    assert json.loads(lw["miscellaneous"]["concat_jet_tracks"]) == ["pt", "abs_eta"]
    card = json.load(open(ex["card"]))
    card_seq = next(i for i in card["inputs"] if i["name"] == "pfcand")
    assert card_seq["shape"] == [None, coll.n_max, len(coll.variables) + 2]
    assert card_seq["variables"][-1]["lwtnn_offset"] == cand["abs_eta"]["offset"]
    # the written files, re-read as a deployment would
    again = check_files(ex["lwtnn"], ex["onnx"], out["model"], cfg, scaling, [shard], 300, 1e-5)
    assert again["lwtnn"]["passed"] and again["onnx"]["passed"]

    # --sequence-names: the sequence under the experiment's name, in the JSON, the card and the re-check
    renamed = {k: v.replace(str(tmp_path), str(tmp_path / "renamed")) for k, v in ex.items()}
    export_model(out["model"], cfg, scaling, [shard], renamed, log=lambda m: None,
                 sequence_names={"pfcand": "tracks_r22default_sd0sort"})
    lw2 = json.load(open(renamed["lwtnn"]))
    assert [s["name"] for s in lw2["input_sequences"]] == ["tracks_r22default_sd0sort"]
    assert lw2["input_sequences"][0]["variables"] == seq["variables"]
    card2 = json.load(open(renamed["card"]))
    assert next(i for i in card2["inputs"] if i["name"] == "pfcand")["lwtnn_node"] == "tracks_r22default_sd0sort"
    again = check_files(renamed["lwtnn"], renamed["onnx"], out["model"], cfg, scaling, [shard], 300, 1e-5,
                        sequence_names={"pfcand": "tracks_r22default_sd0sort"})
    assert again["lwtnn"]["passed"]

    # the check feeds the candidate's raw values to every constituent: a wrong offset there is caught
    import keras

    import taggerflow.models  # noqa: F401
    from taggerflow.export import check_inputs

    model = keras.models.load_model(out["model"])
    config, clamps = convert(model, cfg, scaling)
    inputs = check_inputs(cfg, [shard], scaling, 200)
    flat, counts = inputs["raw"]["pfcand"]
    assert flat.shape == (counts.sum(), len(coll.variables) + 2)
    config["input_sequences"][0]["variables"][-2]["offset"] += 5.0
    assert not check(model, config, clamps, inputs, ["pfcand"])["passed"]
    # a configuration without the option does not fit the model: refused before anything is written
    with pytest.raises(ValueError, match="concat_jet_tracks"):
        export_model(out["model"], files_config, scaling, [shard], {k: v + ".no" for k, v in ex.items()},
                     log=lambda m: None)
    assert not any(os.path.exists(v + ".no") for v in ex.values())


def test_sequence_names_parameter(files_config):
    from taggerflow.export import export_sequence_names
    from tasks.training import parse_sequence_names

    assert parse_sequence_names(["pfcand=tracks_r22default_sd0sort"]) == {"pfcand": "tracks_r22default_sd0sort"}
    assert export_sequence_names(files_config) == {"pfcand": "pfcand"}  # the config's export.sequence_names
    assert export_sequence_names(files_config, {"pfcand": "tracks"}) == {"pfcand": "tracks"}
    with pytest.raises(ValueError, match="'tracks' is not a model sequence"):
        export_sequence_names(files_config, {"tracks": "x"})
    with pytest.raises(ValueError, match="expected sequence=name"):
        parse_sequence_names(["pfcand"])


@pytest.mark.parametrize("model_type", ["deepsets", "dense"])
def test_export_with_non_finite_raw_inputs(files_config, shard_and_scaling, tmp_path, model_type):
    """NaN, +inf and -inf in raw candidate and constituent variables (PFNano's NaN btagSip3dSig):
    the lwtnn check applies the input recipe with the file's own bounds and defaults and passes
    (max |diff| finite and within tolerance), the ONNX check too; the lwtnn evaluator fed with the
    recipe's values equals Keras on the values the training files hold."""
    import json

    import h5py

    from nonfinite import write_nonfinite_shard
    from taggerflow.export import export_model
    from taggerflow.lwtnn_eval import LwtnnGraph, LwtnnSequential
    from taggerflow.models import build_model
    from taggerflow.records import h5_model_inputs
    from taggerflow.scaling import RAW_INPUT_RECIPE
    from taggerflow.trainsample import write_train_sample

    cfg = files_config
    shard, scaling, _ = shard_and_scaling
    bad_shard = str(tmp_path / "nonfinite.root")
    injected = write_nonfinite_shard(cfg, shard, bad_shard)
    seqs = {n: (c.n_max, len(c.variables)) for n, c, _ in cfg.sequences()}
    model = build_model({"type": model_type, "phi_layers": [16], "f_layers": [16], "activation": "relu"},
                        len(cfg.candidate_variables), seqs, len(cfg.class_names), seed=5)
    model_path = str(tmp_path / "model.keras")
    model.save(model_path)
    ex = {k: str(tmp_path / f) for k, f in (("lwtnn", "lwtnn.json"), ("check", "check.json"), ("onnx", "m.onnx"),
                                            ("card", "card.json"))}
    result = export_model(model_path, cfg, scaling, [bad_shard], ex, log=lambda m: None)
    assert result["lwtnn"]["passed"] and np.isfinite(result["lwtnn"]["max_abs_diff"])
    assert result["lwtnn"]["max_abs_diff"] < 1e-5 and result["onnx"]["passed"] and result["onnx"]["max_abs_diff"] < 1e-5
    lw = json.load(open(ex["lwtnn"]))
    assert lw["miscellaneous"]["input_recipe"].startswith(RAW_INPUT_RECIPE)
    card = json.load(open(ex["card"]))
    assert card["preprocessing"]["lwtnn"].startswith(RAW_INPUT_RECIPE)

    # the checked candidates include the injected ones, with their raw NaN and infs
    inputs = check_inputs(cfg, [bad_shard], scaling, 400)
    raw_cand = inputs["raw"]["candidate"]
    assert np.isnan(raw_cand).sum() == 2 and np.isposinf(raw_cand).sum() == 3 and np.isneginf(raw_cand).sum() == 3
    if model_type == "deepsets":
        flat = inputs["raw"]["pfcand"][0]
        assert np.isnan(flat).sum() == 2 and np.isposinf(flat).sum() == 3 and np.isneginf(flat).sum() == 3
    # the Keras inputs of the check are the training files' values
    h5 = {s: str(tmp_path / f"{s}.h5") for s in ("train", "validation", "test")}
    write_train_sample(cfg, [bad_shard], scaling, h5)
    with h5py.File(h5["test"], "r") as f:
        arrays = {k: f[k][: inputs["n"]] for k in ("jets/inputs", "pfcand/inputs", "pfcand/valid", "jets/event")}
    np.testing.assert_array_equal(inputs["keras"]["jets"].astype(np.float32), arrays["jets/inputs"])
    assert {i["event"] for i in injected} <= set(arrays["jets/event"].tolist())
    # the evaluator on the recipe's raw values (bounds from clamp_raw_inputs, defaults from the file)
    clamps = json.loads(lw["miscellaneous"]["clamp_raw_inputs"])
    sequences = [n for n in seqs if n in {i.name for i in model.inputs}]
    keras_scores = model.predict(h5_model_inputs(arrays, sequences), verbose=0).astype(np.float64)
    if model_type == "dense":
        names = [v["name"] for v in lw["inputs"]]
        x = raw_inputs(raw_cand, [clamps["candidate"][n] for n in names], [lw["defaults"][n] for n in names])
        lwtnn_scores = LwtnnSequential(lw).compute_batch(x)
    else:
        node, seq = lw["inputs"][0], lw["input_sequences"][0]
        x = raw_inputs(raw_cand, [clamps["candidate"][v["name"]] for v in node["variables"]],
                       [v["default"] for v in node["variables"]])
        flat, counts = inputs["raw"]["pfcand"]
        s = raw_inputs(flat, [clamps["pfcand"][v["name"]] for v in seq["variables"]],
                       [v["default"] for v in seq["variables"]])
        assert np.isfinite(s).all()
        lwtnn_scores = LwtnnGraph(lw).compute_batch({node["name"]: x}, {seq["name"]: (s, counts)})
    assert np.isfinite(x).all()
    np.testing.assert_allclose(lwtnn_scores, keras_scores, rtol=0, atol=1e-5)
    # without the defaults in the file the recipe cannot be followed: NaN scores, the check fails
    for v in (lw["inputs"] if model_type == "dense" else lw["inputs"][0]["variables"]):
        del v["default"]
    lw.pop("defaults", None)
    failed = check(model, lw, clamps, inputs, sequences)
    assert not failed["passed"] and np.isnan(failed["max_abs_diff"])


def test_check_with_concat_jet_tracks_and_non_finite_candidates(files_config, shard_and_scaling, tmp_path):
    """concat_jet_tracks puts the candidate's raw value on every constituent: a NaN or inf there
    follows the candidate variable's recipe (its bounds and default) on every constituent too."""
    import json

    from nonfinite import write_nonfinite_shard
    from taggerflow.config import config_from_dict
    from taggerflow.models import build_model

    shard, scaling, _ = shard_and_scaling
    raw = json.loads(json.dumps(files_config.raw))
    raw["train_sample"]["concat_jet_tracks"] = ["mass", "decay_mode"]
    cfg = config_from_dict(raw, files_config.path)
    bad_shard = str(tmp_path / "nonfinite.root")
    write_nonfinite_shard(cfg, shard, bad_shard)
    coll = cfg.collections[0]
    model = build_model({"type": "deepsets", "phi_layers": [8], "f_layers": [8]}, len(cfg.candidate_variables),
                        {"pfcand": (coll.n_max, len(coll.variables) + 2)}, len(cfg.class_names), seed=6)
    config, clamps = convert(model, cfg, scaling)
    seq = config["input_sequences"][0]
    assert [v["name"] for v in seq["variables"]][-2:] == ["mass", "decay_mode"]
    cand = {v["name"]: v for v in config["inputs"][0]["variables"]}
    assert seq["variables"][-1]["default"] == cand["decay_mode"]["default"]
    inputs = check_inputs(cfg, [bad_shard], scaling, 300)
    flat, counts = inputs["raw"]["pfcand"]
    assert np.isnan(flat[:, -1]).any() and np.isinf(flat[:, -2]).any()  # the candidate's values, per constituent
    result = check(model, config, clamps, inputs, ["pfcand"])
    assert result["passed"] and np.isfinite(result["max_abs_diff"]) and result["max_abs_diff"] < 1e-5
