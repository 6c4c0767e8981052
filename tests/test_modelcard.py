"""Model card: the values of the scaling, sequences, outputs, checks and files come through."""

from __future__ import annotations

import json
import math
import os

import pytest

from taggerflow.modelcard import card_inputs_from_config, model_card, write_model_card

CLASSES = ["tau", "e", "mu", "jet"]


def _entry(mean, std, lo, hi, default=0.0, kind="normal"):
    return {"global": {"mean": mean, "std": std, "lim_min": lo, "lim_max": hi, "num": 100, "nan": 0, "inf": 0,
                       "scaling": kind, "default": default}}


SCALING = {
    "candidate": {"pt": _entry(40.0, 20.0, -5.0, 5.0), "abs_eta": _entry(1.15, 1.15, -1.0, 1.0, kind="linear"),
                  "decay_mode": _entry(0.0, 1.0, None, None, kind="categorical"),
                  "ip_sig": _entry(0.5, 2.0, None, 3.0, default=-1.0)},
    "pfcand": {"deta": _entry(0.01, 0.1, -5.0, 5.0), "charge": _entry(0.0, 1.0, None, None, kind="categorical")},
}
CANDIDATE_VARIABLES = [{"name": "pt", "expression": "pt", "scaling": "normal"},
                       {"name": "abs_eta", "expression": "abs(eta)", "scaling": "linear"},
                       "decay_mode", {"name": "ip_sig"}]
SEQUENCES = {"pfcand": {"n_max": 16, "sort_by": "pt", "variables": ["deta", {"name": "charge"}]}}
ONNX_INFO = {"inputs": [{"name": "candidate", "shape": [None, 4], "dtype": "float32"},
                        {"name": "pfcand", "shape": [None, 16, 2], "dtype": "float32"},
                        {"name": "pfcand_valid", "shape": [None, 16], "dtype": "float32"}],
             "outputs": [{"name": "output", "shape": [None, 4], "dtype": "float32"}],
             "opset": 15, "converter": "tf2onnx 1.17.0", "self_check_max_abs_diff": 6e-8,
             "check": {"n_candidates": 500, "max_abs_diff": 1.2e-7, "passed": True}}
LWTNN_CHECK = {"n_candidates": 500, "max_abs_diff": 3e-7, "fraction_above": {"1e-07": 0.2}, "passed": True}
METRICS = {"accuracy": 0.91, "auc": {"tau_vs_jet": 0.97, "e_vs_mu": float("nan")}}
TRAINING = {"name": "deepsets", "batch_size": 256, "epochs": 8,
            "model": {"type": "deepsets", "phi_layers": [64, 64], "f_layers": [64, 32]}}
FILES = {"keras": "model.keras", "lwtnn": "lwtnn.json", "onnx": "model.onnx"}


def _card(**overrides):
    kwargs = dict(name="demo_deepsets", classes=CLASSES, candidate_variables=CANDIDATE_VARIABLES,
                  sequences=SEQUENCES, scaling=SCALING, training_config=TRAINING, metrics=METRICS,
                  lwtnn_check=LWTNN_CHECK, onnx_info=ONNX_INFO, files=FILES)
    kwargs.update(overrides)
    return model_card(**kwargs)


def test_inputs_in_model_order_with_scaling():
    card = _card()
    assert [i["name"] for i in card["inputs"]] == ["candidate", "pfcand", "pfcand_valid"]
    assert [i["kind"] for i in card["inputs"]] == ["candidate", "sequence", "mask"]
    cand = card["inputs"][0]
    assert [v["name"] for v in cand["variables"]] == ["pt", "abs_eta", "decay_mode", "ip_sig"]
    pt = cand["variables"][0]
    assert pt["mean"] == SCALING["candidate"]["pt"]["global"]["mean"]
    assert pt["std"] == SCALING["candidate"]["pt"]["global"]["std"]
    assert (pt["lim_min"], pt["lim_max"], pt["default"]) == (-5.0, 5.0, 0.0)
    assert (pt["raw_min"], pt["raw_max"], pt["raw_default"]) == (40.0 - 100.0, 40.0 + 100.0, 40.0)
    assert (pt["lwtnn_offset"], pt["lwtnn_scale"]) == (-40.0, 1 / 20.0)
    assert pt["expression"] == "pt" and pt["scaling"] == "normal"
    eta = cand["variables"][1]
    assert eta["raw_min"] == pytest.approx(0.0) and eta["raw_max"] == pytest.approx(2.3)
    dm = cand["variables"][2]
    assert (dm["lim_min"], dm["lim_max"], dm["raw_min"], dm["raw_max"]) == (None, None, None, None)
    assert dm["scaling"] == "categorical"  # from the scaling file when the variable does not say
    ip = cand["variables"][3]
    assert (ip["raw_min"], ip["raw_max"], ip["raw_default"]) == (None, 0.5 + 3.0 * 2.0, 0.5 - 2.0)

    seq = card["inputs"][1]
    assert seq["n_max"] == 16 and seq["sort_by"] == "pt" and seq["shape"] == [None, 16, 2]
    assert seq["collection"] == "pfcand" and seq["cone"] == "global" and seq["lwtnn_node"] == "pfcand"
    assert seq["valid_input"] == "pfcand_valid" and "descending pt" in seq["order"]
    assert [v["name"] for v in seq["variables"]] == ["deta", "charge"]
    assert seq["variables"][0]["mean"] == SCALING["pfcand"]["deta"]["global"]["mean"]
    assert card["inputs"][2] == {**card["inputs"][2], "shape": [None, 16], "mask_of": "pfcand"}


def test_outputs_training_metrics_checks_files():
    card = _card()
    assert card["name"] == "demo_deepsets" and card["classes"] == CLASSES
    assert card["outputs"][0]["name"] == "output" and card["outputs"][0]["labels"] == CLASSES
    assert card["training"] == TRAINING
    assert card["metrics"]["accuracy"] == 0.91 and card["metrics"]["auc"]["tau_vs_jet"] == 0.97
    assert card["metrics"]["auc"]["e_vs_mu"] is None  # NaN -> null: strict JSON
    assert card["checks"]["lwtnn"] == LWTNN_CHECK
    assert card["checks"]["onnx"] == ONNX_INFO["check"]
    assert card["onnx"]["opset"] == 15 and "check" not in card["onnx"]
    assert card["onnx"]["inputs"] == ONNX_INFO["inputs"]
    assert card["files"] == FILES
    # optional parts
    card = _card(lwtnn_check=None, onnx_info=None)
    assert card["checks"] == {"lwtnn": None, "onnx": None} and card["onnx"] is None


def test_dense_model_card_has_only_the_candidate():
    info = {"inputs": ONNX_INFO["inputs"][:1], "outputs": ONNX_INFO["outputs"], "opset": 15}
    card = _card(sequences={}, onnx_info=info)
    assert [i["name"] for i in card["inputs"]] == ["candidate"]


def test_raw_bounds_agree_with_the_lwtnn_file():
    from taggerflow.export import lwtnn_variables

    card = _card()
    for inp, type_name in ((card["inputs"][0], "candidate"), (card["inputs"][1], "pfcand")):
        names = [v["name"] for v in inp["variables"]]
        lw_vars, clamp = lwtnn_variables(SCALING, type_name, names)
        for v, lw in zip(inp["variables"], lw_vars):
            assert [v["raw_min"], v["raw_max"]] == clamp[v["name"]]
            assert (v["lwtnn_offset"], v["lwtnn_scale"], v["raw_default"]) == (lw["offset"], lw["scale"], lw["default"])


def test_inconsistent_inputs_are_refused():
    with pytest.raises(ValueError, match="not the card's inputs"):
        _card(sequences={})  # the ONNX model reads pfcand, the card would not list it
    with pytest.raises(ValueError, match="shape"):
        _card(sequences={"pfcand": dict(SEQUENCES["pfcand"], n_max=8)})
    with pytest.raises(ValueError, match="classes"):
        _card(classes=CLASSES[:3])
    with pytest.raises(ValueError, match="pfcand.no_such"):
        _card(sequences={"pfcand": dict(SEQUENCES["pfcand"], variables=["no_such"])}, onnx_info=None)
    with pytest.raises(ValueError, match="n_max"):
        _card(sequences={"pfcand": dict(SEQUENCES["pfcand"], n_max=0)}, onnx_info=None)
    with pytest.raises(ValueError, match="duplicate"):
        _card(candidate_variables=["pt", "pt"], onnx_info=None)


def test_write_model_card(tmp_path):
    card = _card()
    path = tmp_path / "model_card.json"
    write_model_card(card, str(path))
    text = path.read_text()

    def no_constant(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    back = json.loads(text, parse_constant=no_constant)
    assert back == card
    assert text == json.dumps(back, indent=1, sort_keys=True) + "\n"  # keys sorted
    write_model_card(card, str(path))
    assert path.read_text() == text  # equal content, equal bytes
    assert os.listdir(tmp_path) == ["model_card.json"]
    with pytest.raises(ValueError, match="not JSON serialisable"):
        write_model_card({**card, "bad": object()}, str(path))
    assert path.read_text() == text and os.listdir(tmp_path) == ["model_card.json"]
    assert not any(isinstance(x, float) and math.isnan(x) for x in back["metrics"]["auc"].values())


def test_card_inputs_from_config(tiny_config):
    cfg = tiny_config
    cand, seqs = card_inputs_from_config(cfg)
    assert [v["name"] for v in cand] == [v.name for v in cfg.candidate_variables]
    assert list(seqs) == [name for name, _, _ in cfg.sequences()]
    name, coll, cone = cfg.sequences()[0]
    assert seqs[name]["n_max"] == coll.n_max and seqs[name]["sort_by"] == coll.sort_by
    assert [v["name"] for v in seqs[name]["variables"]] == coll.variable_names
    assert card_inputs_from_config(cfg, model_input_names=["candidate"])[1] == {}
    # a card from them, with a scaling that has every variable
    scaling = {"candidate": {v["name"]: _entry(1.0, 2.0, -5.0, 5.0) for v in cand}}
    for s in seqs.values():
        scaling.setdefault(s["collection"], {}).update({v["name"]: {s["cone"]: _entry(0.0, 1.0, None, None)["global"]}
                                                        for v in s["variables"]})
    card = _card(candidate_variables=cand, sequences=seqs, scaling=scaling, onnx_info=None)
    assert card["inputs"][0]["variables"][0]["mean"] == 1.0
    assert card["inputs"][0]["variables"][1]["expression"] == cand[1]["expression"]


def test_card_states_the_training_recipe_for_non_finite_inputs():
    """The card's raw recipe (clamp to raw_min/raw_max, then non-finite -> raw_default, then lwtnn's
    (x + offset) * scale) gives, for NaN, +inf, -inf and finite raw values, what the training files
    hold (apply_scaling), for candidate and constituent variables, bounded and unbounded."""
    import numpy as np

    from taggerflow.scaling import (RAW_INPUT_RECIPE, SCALED_INPUT_RECIPE, apply_raw_recipe, apply_scaling,
                                    scaling_arrays)

    card = _card()
    assert card["preprocessing"]["lwtnn"].startswith(RAW_INPUT_RECIPE)
    assert card["preprocessing"]["keras_onnx"].startswith(SCALED_INPUT_RECIPE)
    raw = np.array([[np.nan], [np.inf], [-np.inf], [1e300], [-1e300], [0.7]])
    checked = 0
    for inp, type_name in ((card["inputs"][0], "candidate"), (card["inputs"][1], "pfcand")):
        for v in inp["variables"]:
            lo = -np.inf if v["raw_min"] is None else v["raw_min"]
            hi = np.inf if v["raw_max"] is None else v["raw_max"]
            deployed = (apply_raw_recipe(raw, lo, hi, v["raw_default"]) + v["lwtnn_offset"]) * v["lwtnn_scale"]
            trained = apply_scaling(raw, *scaling_arrays(SCALING, type_name, [v["name"]]))
            np.testing.assert_allclose(deployed[:3], trained[:3], rtol=1e-12, atol=1e-12)
            assert trained[0, 0] == v["default"]  # NaN -> default
            assert trained[1, 0] == (v["default"] if v["lim_max"] is None else v["lim_max"])
            assert trained[2, 0] == (v["default"] if v["lim_min"] is None else v["lim_min"])
            if v["lim_min"] is not None and v["lim_max"] is not None:  # finite values beyond the bounds
                np.testing.assert_allclose(deployed, trained, rtol=1e-12, atol=1e-12)
            checked += 1
    assert checked == 6
