"""ConvertFdeep glue: the frugally-deep JSON of a trained model, its input documentation from the
merged scaling, and the agreement check against Keras.

The frugally-deep model takes the model's own inputs (as Keras and ONNX do): ``candidate`` (n_vars,),
then per constituent sequence ``<seq>`` (n_max, n_vars) and its mask ``<seq>_valid`` (n_max,).
frugally-deep neither scales, clamps nor replaces non-finite values, so C++ prepares each input
from raw values with the recipe written under ``taggerflow`` (what the training files did):

1. per variable, :data:`taggerflow.scaling.RAW_INPUT_RECIPE` (the lwtnn recipe): clamp the raw
   value to ``[raw_min, raw_max]`` (null = unbounded), then a value still non-finite -> ``raw_default``;
2. ``scaled = (value - mean) / std`` in double, passed as float;
3. constituents: the real ones first, ordered and truncated to n_max as in training, padded slots
   0 with mask 0, real slots mask 1 (the mask must be exactly 0 or 1, padded slots finite).

The check feeds the numpy evaluator (:mod:`taggerflow.fdeep_eval`, the written file only) with
test-split candidates prepared from raw values by that recipe, and compares with Keras on the
training files' inputs. Nothing is written unless it agrees within ``export.tolerance``.
"""

from __future__ import annotations

import json
import os

import numpy as np

from taggerflow.config import Config
from taggerflow.export import THRESHOLDS, check_inputs, export_sequence_names, keras_inputs, sequence_scaling
from taggerflow.scaling.apply import RAW_INPUT_RECIPE, raw_recipe_arrays, scaling_arrays
from taggerflow.trainsample import options, sequence_variables

CANDIDATE_INPUT = "candidate"   # = taggerflow.models.CANDIDATE_INPUT (not imported: no Keras here)
VALID_SUFFIX = "_valid"
#: embedded test cases (frugally-deep runs each on load)
N_TESTS = 2

INPUT_RECIPE = (f"{RAW_INPUT_RECIPE} (raw bounds: raw_min/raw_max, raw default: raw_default); then scaled = "
                "(value - mean) / std computed in double and passed as float")
NOTE = ("frugally-deep neither scales, clamps nor replaces non-finite values: apply input_recipe to the raw "
        "inputs before fdeep::model::predict; inputs in model_inputs order; a sequence with a mask input "
        "holds its real constituents first, ordered and truncated to n_max as in training, padded slots 0, and "
        "its mask input is 1 for real slots and 0 for padded ones; a sequence without one (length variable, "
        "read by a recurrent layer) holds its real constituents only, ordered and truncated to n_max as in "
        "training: a tensor of shape (n_real, n_vars), no padding")


def _variables(scaling: dict, type_name: str, names: list[str], cone: str) -> list[dict]:
    mean, std, _, _, _ = scaling_arrays(scaling, type_name, names, cone)
    raw_min, raw_max, raw_default = raw_recipe_arrays(scaling, type_name, names, cone)

    def bound(x: float) -> float | None:
        return float(x) if np.isfinite(x) else None

    return [{"name": n, "mean": float(mean[i]), "std": float(std[i]), "raw_min": bound(raw_min[i]),
             "raw_max": bound(raw_max[i]), "raw_default": float(raw_default[i])} for i, n in enumerate(names)]


def documentation(cfg: Config, scaling: dict, model_input_names: list[str],
                  sequence_names: dict[str, str] | None = None, variable_length: set | frozenset = frozenset()) -> dict:
    """What the file's ``taggerflow`` entry holds: the inputs in model order with their scaling and
    raw recipe numbers, the classes, the recipe. ``variable_length``: the sequence inputs written
    with a variable time dimension and no mask input (read by recurrent layers). Raises ValueError
    for an input it cannot document."""
    sequence_names = dict(sequence_names or {})
    seq_scaling, seq_vars = sequence_scaling(cfg, scaling), sequence_variables(cfg)
    seqs = {name: (coll, cone) for name, coll, cone in cfg.sequences()}
    for name in model_input_names:
        if name != CANDIDATE_INPUT and name not in seqs and not (
                name.endswith(VALID_SUFFIX) and name[:-len(VALID_SUFFIX)] in seqs):
            raise ValueError(f"model input {name!r}: the frugally-deep export documents the candidate and "
                             f"constituent sequence inputs only (conditional models' add_vars are not supported)")
    inputs, masks = [], set()
    for name in model_input_names:
        if name == CANDIDATE_INPUT:
            inputs.append({"name": name, "kind": "candidate",
                           "variables": _variables(scaling, "candidate", [v.name for v in cfg.candidate_variables],
                                                   "global")})
        elif name in seqs:
            coll, cone = seqs[name]
            mask = f"{name}{VALID_SUFFIX}"
            if name in variable_length:
                mask = None
            elif mask not in model_input_names:
                raise ValueError(f"model input {name!r}: no mask input {mask!r}")
            else:
                masks.add(mask)
            inputs.append({"name": name, "kind": "sequence", "collection": coll.name, "cone": cone,
                           "n_max": int(coll.n_max), "sort_by": coll.sort_by, "mask": mask,
                           "length": "variable" if mask is None else "n_max",
                           "software_name": sequence_names.get(name, name),
                           "variables": _variables(seq_scaling, coll.name, seq_vars[name], cone)})
    doc = {"model_inputs": list(model_input_names), "inputs": inputs, "classes": list(cfg.class_names),
           "outputs": [{"name": "output", "labels": list(cfg.class_names)}],
           "input_recipe": INPUT_RECIPE, "note": NOTE}
    concat = list(options(cfg).concat)
    if concat and (masks or variable_length):
        doc["concat_jet_tracks"] = concat
        doc["note"] += ("; every constituent also carries the candidate's raw values of concat_jet_tracks "
                        "(same numbers as the candidate input)")
    return doc


def test_case_rows(x: dict, n: int) -> np.ndarray:
    """The first ``n`` candidates with at least one constituent in every sequence (mask inputs
    ``*_valid``): the embedded test cases then never hold an empty (variable-length) sequence."""
    masks = [v for k, v in x.items() if k.endswith(VALID_SUFFIX)]
    count = len(next(iter(x.values())))
    ok = np.ones(count, dtype=bool)
    for m in masks:
        ok &= (np.asarray(m) > 0.5).any(axis=1)
    return np.flatnonzero(ok)[:n]


def check(doc: dict, keras_scores: np.ndarray, raw: dict, tolerance: float) -> dict:
    """The numpy evaluator of the written document on raw inputs (through the documented recipe)
    against Keras' scores; the table of fractions above each threshold."""
    from taggerflow.fdeep_eval import FdeepModel, inputs_from_raw

    model = FdeepModel(doc)
    scores = model.predict(inputs_from_raw(doc, raw))[0]
    diff = np.abs(scores - keras_scores).max(axis=1)
    return {"n_candidates": int(len(diff)), "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "fraction_above": {f"{t:g}": float(np.mean(diff > t)) for t in THRESHOLDS},
            "tests_max_abs_diff": model.run_tests(), "n_tests": len(model.test_cases()),
            "tolerance": tolerance, "passed": bool(diff.max() <= tolerance)}


def format_table(result: dict) -> str:
    lines = [f"frugally-deep vs Keras on {result['n_candidates']} test candidates "
             f"(max |diff| = {result['max_abs_diff']:.3g}; embedded test cases: {result['tests_max_abs_diff']:.3g})",
             "  threshold   fraction above"]
    for t, frac in result["fraction_above"].items():
        lines.append(f"  {float(t):>9.0e}   {frac:.6f}")
    return "\n".join(lines)


def export_fdeep(model_path: str, cfg: Config, scaling: dict, shard_paths: list[str], out: dict[str, str],
                 log=print, sequence_names: dict[str, str] | None = None) -> dict:
    """The frugally-deep JSON of one trained model (``out['fdeep']``), checked against Keras by the
    numpy evaluator on test-split candidates (figures in ``out['check']``). Nothing is written
    unless the check passes; the JSON is written last-but-one, the check last."""
    import keras

    import taggerflow.models  # noqa: F401  (custom layers)
    from taggerflow.fdeep import fdeep_json_text, keras_to_fdeep, write_fdeep, written_input_names
    from taggerflow.utils import write_json

    ex = cfg.raw["export"]
    tolerance = float(ex["tolerance"])
    model = keras.models.load_model(model_path)
    names = [t.name for t in model.inputs]
    documentation(cfg, scaling, names, export_sequence_names(cfg, sequence_names))  # refuse early what it cannot
    inputs = check_inputs(cfg, shard_paths, scaling, int(ex["n_check"]))
    used = [n for n, _, _ in cfg.sequences() if n in names]
    x = keras_inputs(inputs, used)
    x = {k: v for k, v in x.items() if k in names}
    keras_scores = np.asarray(model.predict(x, batch_size=4096, verbose=0), dtype=np.float64)
    rows = test_case_rows(x, N_TESTS)
    doc = keras_to_fdeep(model, {k: v[rows] for k, v in x.items()} if len(rows) else None)
    names = written_input_names(doc)
    variable = {n for n, shape in zip(names, doc["input_shapes"]) if len(shape) == 2 and shape[0] is None}
    doc["taggerflow"] = json.loads(json.dumps(documentation(cfg, scaling, names, export_sequence_names(
        cfg, sequence_names), variable_length=variable), allow_nan=False))
    text = fdeep_json_text(doc)
    result = check(json.loads(text), keras_scores, inputs["raw"], tolerance)
    log(format_table(result))
    if not result["passed"]:
        raise RuntimeError(f"frugally-deep check failed: max |diff| {result['max_abs_diff']:.3g} > {tolerance:g}; "
                           "no file written")
    write_fdeep(doc, out["fdeep"])
    write_json(out["check"], {"fdeep": result, "file": os.path.basename(out["fdeep"])})
    return result
