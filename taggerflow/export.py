"""ConvertLwtnn glue: lwtnn input variables from the merged scaling, and the agreement check.

lwtnn computes x' = (x + offset) * scale, so offset = -mean and scale = 1/std, and C++ feeds raw
values. lwtnn neither clamps nor replaces non-finite values: C++ (and the check here) applies the
training files' input recipe to the raw values first (:data:`taggerflow.scaling.RAW_INPUT_RECIPE`:
clamp to the raw bounds written in ``miscellaneous.clamp_raw_inputs``, then non-finite -> the
variable's ``default`` written in the lwtnn file). Constituents are passed as lwtnn expects: only
the real ones, in the training order, at most n_max.

With ``train_sample.concat_jet_tracks`` every constituent also carries candidate variables (scaled
exactly as the candidate's own); in lwtnn they are further variables of each input sequence, with
the candidate variable's name, offset, scale and clamp bounds, and C++ passes the candidate's raw
value on every constituent (listed in ``miscellaneous.concat_jet_tracks``).
"""

from __future__ import annotations

import copy
import json
import os

import awkward as ak
import numpy as np

from taggerflow.config import Config
from taggerflow.formats.shards import open_shard
from taggerflow.io import candidate_features
from taggerflow.scaling.apply import RAW_INPUT_RECIPE, apply_raw_recipe, raw_recipe_arrays, scaling_arrays
from taggerflow.trainsample import (CANDIDATE_GROUP, options, order_and_pad, prepare, sequence_constituents,
                                    sequence_variables, split_index)

THRESHOLDS = (1e-7, 5e-7, 1e-6, 5e-6, 1e-5)


def lwtnn_variables(scaling: dict, type_name: str, names: list[str], cone: str = "global"
                    ) -> tuple[list[dict], dict]:
    """lwtnn variable entries (name, offset, scale, default = the recipe's raw default) and raw
    clamp bounds ([min, max], None = unbounded) for one input."""
    mean, std, _, _, _ = scaling_arrays(scaling, type_name, names, cone)
    raw_min, raw_max, raw_default = raw_recipe_arrays(scaling, type_name, names, cone)
    variables, clamp = [], {}
    for i, name in enumerate(names):
        variables.append({"name": name, "offset": float(-mean[i]), "scale": float(1.0 / std[i]),
                          "default": float(raw_default[i])})
        clamp[name] = [float(raw_min[i]) if np.isfinite(raw_min[i]) else None,
                       float(raw_max[i]) if np.isfinite(raw_max[i]) else None]
    return variables, clamp


def sequence_scaling(cfg: Config, scaling: dict) -> dict:
    """The scaling with, for every collection and cone, an entry per concat_jet_tracks variable: the
    candidate variable's own (the training files hold the scaled candidate value on every
    constituent), so sequence inputs can be looked up by their written variable names."""
    concat = list(options(cfg).concat)
    if not concat:
        return scaling
    out = copy.copy(scaling)
    for coll in cfg.collections:
        entries = out[coll.name] = dict(scaling.get(coll.name) or {})
        for v in concat:
            # config validation keeps the names apart; a clash would mean another configuration
            if v in entries:
                raise ValueError(f"train_sample.concat_jet_tracks: '{v}' is also a variable of collection "
                                 f"'{coll.name}' in the scaling file")
            entries[v] = {cone: scaling["candidate"][v]["global"] for cone in coll.cones}
    return out


def raw_inputs(x: np.ndarray, bounds: list[list[float | None]], defaults: list[float]) -> np.ndarray:
    """The input recipe on raw values per column, with the bounds and defaults written in the lwtnn
    file (what C++ must do): clamp, then non-finite -> default."""
    lo = np.array([-np.inf if b[0] is None else b[0] for b in bounds], dtype=np.float64)
    hi = np.array([np.inf if b[1] is None else b[1] for b in bounds], dtype=np.float64)
    return apply_raw_recipe(x, lo, hi, np.asarray(defaults, dtype=np.float64))


def check_inputs(cfg: Config, shard_paths: list[str], scaling: dict, n_max_candidates: int) -> dict:
    """Test-split candidates from the shards: scaled padded inputs (Keras) and raw real
    constituents (lwtnn)."""
    fractions = cfg.raw["train_sample"]["split"]
    cand_names = [v.name for v in cfg.candidate_variables]
    concat_idx = [cand_names.index(v) for v in options(cfg).concat]
    keras_parts: dict[str, list[np.ndarray]] = {}
    raw_parts: dict[str, list] = {"candidate": []}
    for name, _, _ in cfg.sequences():
        raw_parts[name] = []
    n = 0
    for path in shard_paths:
        shard = open_shard(path, cfg.tree)
        branches = sorted(set(cfg.required_branches()) | {"class_label", "dataset_id"})
        for chunk in shard.chunks(branches, cfg.chunk_size):
            split = split_index(ak.to_numpy(chunk["event"]), ak.to_numpy(chunk["dataset_id"]), fractions)
            chunk = chunk[split == 2][: n_max_candidates - n]
            if len(chunk) == 0:
                continue
            for k, v in prepare(cfg, chunk, scaling).items():
                keras_parts.setdefault(k, []).append(v)
            raw_cand = candidate_features(chunk, cfg.candidate_variables)
            raw_parts["candidate"].append(raw_cand)
            for name, (coll, _, flat, counts, key) in sequence_constituents(cfg, chunk).items():
                # what C++ passes: the real constituents, ordered and truncated as in training
                padded, valid = order_and_pad(flat, counts, key, coll.n_max)
                real, n_real = padded[valid], valid.sum(axis=1)
                if concat_idx:  # the candidate's raw concat_jet_tracks values on each of its constituents
                    owner = np.repeat(np.arange(len(n_real)), n_real)
                    real = np.concatenate([real, np.asarray(raw_cand, dtype=real.dtype)[owner][:, concat_idx]],
                                          axis=1)
                raw_parts[name].append((real, n_real))
            n += len(chunk)
            if n >= n_max_candidates:
                break
        shard.close()
        if n >= n_max_candidates:
            break
    if n == 0:
        raise ValueError("no test-split candidates found in the shards for the lwtnn check")
    keras_inputs = {k: np.concatenate(v) for k, v in keras_parts.items()}
    raw = {"candidate": np.concatenate(raw_parts["candidate"])}
    for name, _, _ in cfg.sequences():
        raw[name] = (np.concatenate([p[0] for p in raw_parts[name]]),
                     np.concatenate([p[1] for p in raw_parts[name]]))
    return {"keras": keras_inputs, "raw": raw, "n": n}


def convert(model, cfg: Config, scaling: dict, sequence_names: dict[str, str] | None = None,
            output_name: str = "tagger") -> tuple[dict, dict]:
    """The lwtnn JSON of a trained model (graph format; sequential format for a model reading only
    the candidate variables), and the raw clamp bounds per lwtnn node."""
    from taggerflow.lwtnn import keras_to_lwtnn, keras_to_lwtnn_sequential

    sequence_names = dict(sequence_names or {})
    cand_vars, cand_clamp = lwtnn_variables(scaling, "candidate", [v.name for v in cfg.candidate_variables])
    seq_vars, clamps = {}, {"candidate": cand_clamp}
    input_shapes = {getattr(i, "name", None): tuple(i.shape) for i in model.inputs}
    seq_scaling, seq_names = sequence_scaling(cfg, scaling), sequence_variables(cfg)
    for name, coll, cone in cfg.sequences():
        if name not in input_shapes:
            continue
        width = input_shapes[name][-1]
        if width != len(seq_names[name]):
            raise ValueError(f"sequence '{name}': the model reads {width} variables per constituent, the "
                             f"configuration writes {len(seq_names[name])} ({seq_names[name]}; "
                             f"train_sample.concat_jet_tracks: {list(options(cfg).concat)}): model and "
                             f"configuration do not belong together")
        seq_vars[name], clamps[sequence_names.get(name, name)] = \
            lwtnn_variables(seq_scaling, coll.name, seq_names[name], cone)
    misc = {"clamp_raw_inputs": json.dumps(clamps, sort_keys=True),
            "input_recipe": f"{RAW_INPUT_RECIPE}; raw bounds: clamp_raw_inputs; raw default: the variable's "
                            f"default (graph: inputs[].variables[].default, input_sequences[].variables[].default; "
                            f"sequential: defaults)",
            "note": "apply input_recipe to the raw inputs before evaluating (lwtnn neither clamps nor replaces "
                    "non-finite values)"}
    if seq_vars:  # lwtnn's graph parser rejects an empty sequence map and a missing sequence node
        misc["note"] += ("; pass only real constituents, ordered and truncated as in training, and every "
                         "sequence variable of every sequence node (empty vectors for zero constituents)")
    indicators = _one_hot_inputs(cfg, {sequence_names.get(n, n): c for n, c, _ in cfg.sequences() if n in seq_vars})
    if indicators:
        misc["one_hot_inputs"] = json.dumps(indicators, sort_keys=True)
        misc["note"] += ("; a one_hot input (one_hot_inputs: node -> input -> [code expression, category]) is 1 "
                         "where the raw code equals its category, else 0 (other codes, NaN, inf: 0)")
    concat = list(options(cfg).concat)
    if concat and seq_vars:
        misc["concat_jet_tracks"] = json.dumps(concat)
        misc["note"] += ("; every constituent also carries the candidate's raw values of concat_jet_tracks "
                         "(same offsets, scales, clamp bounds and defaults as the candidate input)")
    if len(model.inputs) == 1:
        return keras_to_lwtnn_sequential(model, cand_vars, cfg.class_names, miscellaneous=misc), clamps
    config = keras_to_lwtnn(model, cand_vars, seq_vars, cfg.class_names, sequence_names=sequence_names,
                            output_name=output_name, miscellaneous=misc)
    return config, clamps


def _one_hot_inputs(cfg: Config, sequence_nodes: dict) -> dict:
    """{lwtnn node: {input variable: [code expression, category]}} of the one_hot indicators
    (taggerflow.scaling.types.one_hot); ``sequence_nodes``: lwtnn sequence node -> its collection."""
    nodes = {"candidate": cfg.candidate_variables, **{n: c.variables for n, c in sequence_nodes.items()}}
    out = {node: {v.name: [v.one_hot[1], v.one_hot[2]] for v in variables if v.one_hot is not None}
           for node, variables in nodes.items()}
    return {node: ind for node, ind in out.items() if ind}


def check(model, lwtnn_config: dict, clamps: dict, inputs: dict, collections: list[str],
          sequence_names: dict[str, str] | None = None, tolerance: float = 1e-5) -> dict:
    """Scores of the independent numpy lwtnn evaluator (raw inputs through the input recipe with
    the file's bounds and defaults, real constituents) against Keras (the training files' scaled,
    padded inputs); the table of fractions above each threshold."""
    from taggerflow.lwtnn_eval import LwtnnGraph, LwtnnSequential
    from taggerflow.records import h5_model_inputs

    sequence_names = dict(sequence_names or {})
    keras_in = {f"{CANDIDATE_GROUP}/inputs": inputs["keras"][CANDIDATE_GROUP]}
    for c in collections:
        keras_in[f"{c}/inputs"] = inputs["keras"][c]
        keras_in[f"{c}/valid"] = inputs["keras"][f"{c}_valid"]
    model_inputs = h5_model_inputs(keras_in, [c for c in collections if c in {i.name for i in model.inputs}])
    model_inputs = {k: v for k, v in model_inputs.items() if k in {i.name for i in model.inputs}}
    keras_scores = np.asarray(model.predict(model_inputs, batch_size=4096, verbose=0), dtype=np.float64)

    if "nodes" not in lwtnn_config:  # sequential format
        names = [v["name"] for v in lwtnn_config["inputs"]]
        defaults = lwtnn_config.get("defaults") or {}
        x = raw_inputs(inputs["raw"]["candidate"], [clamps["candidate"][n] for n in names],
                       [defaults.get(n, np.nan) for n in names])
        lwtnn_scores = LwtnnSequential(lwtnn_config).compute_batch(x)
    else:
        graph = LwtnnGraph(lwtnn_config)
        node = lwtnn_config["inputs"][0]
        node_in = {node["name"]: raw_inputs(inputs["raw"]["candidate"],
                                            [clamps["candidate"][v["name"]] for v in node["variables"]],
                                            [v.get("default", np.nan) for v in node["variables"]])}
        seqs = {}
        for seq in lwtnn_config["input_sequences"]:
            name = next(c for c in collections if sequence_names.get(c, c) == seq["name"])
            flat, counts = inputs["raw"][name]
            seqs[seq["name"]] = (raw_inputs(flat, [clamps[seq["name"]][v["name"]] for v in seq["variables"]],
                                            [v.get("default", np.nan) for v in seq["variables"]]), counts)
        lwtnn_scores = graph.compute_batch(node_in, seqs)
    diff = np.abs(lwtnn_scores - keras_scores).max(axis=1)
    table = {f"{t:g}": float(np.mean(diff > t)) for t in THRESHOLDS}
    # 6 digits: the float64 reference graph's BLAS sums differ in the 16th digit from one process to
    # another (threads, alignment), which must not change the bytes of the check and the model card
    return {"n_candidates": int(len(diff)), "max_abs_diff": float(f"{diff.max():.6g}"),
            "mean_abs_diff": float(f"{diff.mean():.6g}"), "fraction_above": table, "tolerance": tolerance,
            "passed": bool(diff.max() <= tolerance)}


def format_table(result: dict) -> str:
    lines = [f"lwtnn vs Keras on {result['n_candidates']} test candidates "
             f"(max |diff| = {result['max_abs_diff']:.3g})", "  threshold   fraction above"]
    for t, frac in result["fraction_above"].items():
        lines.append(f"  {float(t):>9.0e}   {frac:.6f}")
    return "\n".join(lines)


def keras_inputs(inputs: dict, sequences: list[str]) -> dict[str, np.ndarray]:
    """Model input dict (Keras/ONNX names, float32) from check_inputs()['keras']."""
    x = {"candidate": inputs["keras"][CANDIDATE_GROUP].astype(np.float32)}
    for name in sequences:
        x[name] = inputs["keras"][name].astype(np.float32)
        x[f"{name}_valid"] = inputs["keras"][f"{name}_valid"].astype(np.float32)
    return x


def export_sequence_names(cfg: Config, override: dict[str, str] | None = None) -> dict[str, str]:
    """Model sequence -> its name in the experiment's software (e.g. pfcand -> tracks_r22default_sd0sort):
    ``export.sequence_names`` updated by ``override`` (ConvertLwtnn's --sequence-names)."""
    names = dict(cfg.raw["export"].get("sequence_names") or {})
    known = [n for n, _, _ in cfg.sequences()]
    for key, value in (override or {}).items():
        if key not in known:
            raise ValueError(f"--sequence-names: '{key}' is not a model sequence (known: {', '.join(known)})")
        if not str(value).strip():
            raise ValueError(f"--sequence-names: empty name for '{key}'")
        names[key] = str(value).strip()
    return names


#: the exporters of ConvertLwtnn (export_model) and of ConvertFdeep (taggerflow.fdeep_export)
LWTNN_EXPORTERS = ("lwtnn", "onnx")
FDEEP_EXPORTERS = ("fdeep",)


def require_exporters(cfg: Config, variant: str, exporters: tuple[str, ...]) -> None:
    """Refuse, before any work, a training variant whose model family has no converter for one of
    ``exporters`` (taggerflow.model_families): one line naming the family and the key of its type."""
    from taggerflow.model_families import require_exporter, variant_model

    model_cfg, key = variant_model(cfg, variant)
    for exporter in exporters:
        require_exporter(model_cfg, exporter, key)


def export_model(model_path: str, cfg: Config, scaling: dict, shard_paths: list[str], out: dict[str, str],
                 training_summary: dict | None = None, log=print,
                 sequence_names: dict[str, str] | None = None, variant: str | None = None) -> dict:
    """Everything ConvertLwtnn produces for one trained model: the lwtnn JSON (checked against
    Keras by the numpy evaluator), the ONNX file (checked with onnxruntime) and the model card.
    Nothing is written unless both checks pass. out: 'lwtnn', 'check', 'onnx', 'card'. With
    ``variant`` (the training variant's name), a model family without an lwtnn or ONNX converter
    is refused first."""
    if variant is not None:
        require_exporters(cfg, variant, LWTNN_EXPORTERS)
    import keras

    import taggerflow.models  # noqa: F401  (custom layers)
    from taggerflow.lwtnn import write_lwtnn
    from taggerflow.modelcard import card_inputs_from_config, model_card, write_model_card
    from taggerflow.onnx_export import export_onnx, onnx_check
    from taggerflow.utils import atomic_path, write_json

    ex = cfg.raw["export"]
    seq_names = export_sequence_names(cfg, sequence_names)
    tolerance = float(ex["tolerance"])
    model = keras.models.load_model(model_path)
    lwtnn_config, clamps = convert(model, cfg, scaling, seq_names)
    inputs = check_inputs(cfg, shard_paths, scaling, int(ex["n_check"]))
    sequences = [n for n, _, _ in cfg.sequences()]
    lwtnn_result = check(model, lwtnn_config, clamps, inputs, sequences, seq_names, tolerance=tolerance)
    log(format_table(lwtnn_result))
    if not lwtnn_result["passed"]:
        raise RuntimeError(f"lwtnn check failed: max |diff| {lwtnn_result['max_abs_diff']:.3g} > {tolerance:g}; "
                           f"no file written")
    # ONNX to a temporary name first: nothing appears unless its check passes too
    with atomic_path(out["onnx"], suffix=".onnx") as tmp:
        info = export_onnx(model, tmp, check_tolerance=tolerance)
        onnx_result = onnx_check(model, tmp, keras_inputs(inputs, [s for s in sequences
                                                               if s in {i.name for i in model.inputs}]), tolerance)
        log(format_table(onnx_result).replace("lwtnn vs Keras", "ONNX vs Keras"))
        if not onnx_result["passed"]:
            raise RuntimeError(f"ONNX check failed: max |diff| {onnx_result['max_abs_diff']:.3g} > {tolerance:g}")
    write_lwtnn(lwtnn_config, out["lwtnn"])
    write_json(out["check"], {"lwtnn": lwtnn_result, "onnx": onnx_result})
    cand_vars, seqs = card_inputs_from_config(cfg, [i.name for i in model.inputs], seq_names)
    training_config = dict((training_summary or {}).get("config", {}))
    concat = list(options(cfg).concat)
    if concat:  # the card lists what each constituent really carries (its widths must match ONNX)
        by_name = {v["name"]: v for v in cand_vars}
        for spec in seqs.values():
            spec["variables"] = list(spec["variables"]) + [dict(by_name[v]) for v in concat]
        training_config["concat_jet_tracks"] = concat
    summary = training_summary or {}
    card = model_card(name=summary.get("name", os.path.basename(os.path.dirname(model_path))), classes=cfg.class_names,
                      candidate_variables=cand_vars, sequences=seqs, scaling=sequence_scaling(cfg, scaling),
                      training_config=training_config, metrics=summary.get("test", {}),
                      lwtnn_check=lwtnn_result, onnx_info={**info, "check": onnx_result},
                      files={k: os.path.basename(v) for k, v in out.items()})
    write_model_card(card, out["card"])
    return {"lwtnn": lwtnn_result, "onnx": onnx_result}


def check_files(lwtnn_path: str, onnx_path: str, model_path: str, cfg: Config, scaling: dict,
                shard_paths: list[str], n_check: int, tolerance: float,
                sequence_names: dict[str, str] | None = None) -> dict:
    """Re-check written files as a deployment would read them: the lwtnn JSON from disk through the
    numpy evaluator, the ONNX file through onnxruntime, both against Keras."""
    import keras

    import taggerflow.models  # noqa: F401
    from taggerflow.onnx_export import onnx_check

    with open(lwtnn_path) as f:
        lwtnn_config = json.load(f)
    clamps = json.loads(lwtnn_config["miscellaneous"]["clamp_raw_inputs"])
    model = keras.models.load_model(model_path)
    seq_names = export_sequence_names(cfg, sequence_names)
    inputs = check_inputs(cfg, shard_paths, scaling, n_check)
    sequences = [n for n, _, _ in cfg.sequences()]
    used = [s for s in sequences if s in {i.name for i in model.inputs}]
    return {"lwtnn": check(model, lwtnn_config, clamps, inputs, sequences, seq_names, tolerance=tolerance),
            "onnx": onnx_check(model, onnx_path, keras_inputs(inputs, used), tolerance)}
