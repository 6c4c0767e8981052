"""Model card: one JSON file describing a trained tagger for the people and programs that use it.

It lists the model inputs in model order (``candidate``, then per constituent sequence ``<seq>`` and
its mask ``<seq>_valid``) with the per-variable scaling, the outputs (class labels in order), the
training configuration, the metrics, the lwtnn/ONNX check figures and the file names. Numbers come
straight from the merged scaling, so the card agrees with the lwtnn JSON and the training files.

Per variable (``inputs[i].variables[j]``):

``mean``, ``std``
    the scaling: ``scaled = (raw - mean) / std``;
``lim_min``, ``lim_max``
    clamp bounds of the scaled value (null = unbounded);
``default``
    scaled value that replaces a value still non-finite after the clamp (NaN, or +-inf on an
    unbounded side; +inf goes to ``lim_max`` and -inf to ``lim_min`` where bounded);
``raw_min``, ``raw_max``
    the same clamp bounds in raw units, ``mean + lim * std``: what C++ clamps raw inputs to before
    lwtnn (= ``miscellaneous.clamp_raw_inputs`` of the lwtnn file);
``raw_default``
    ``mean + default * std``, the raw value that replaces a raw input still non-finite after the
    clamp (= the variable's ``default`` in the lwtnn file);
``lwtnn_offset``, ``lwtnn_scale``
    ``-mean`` and ``1/std``, lwtnn's ``(x + offset) * scale``;
``scaling``, ``expression``
    the configured scaling type and the expression computing the variable, when known;
``one_hot``
    for an indicator of a ``one_hot`` variable (:mod:`taggerflow.scaling.types.one_hot`): the configured
    ``variable``, the ``code`` expression, the ``category`` and the ``recipe`` computing the raw
    input (1 if code == category else 0).

``preprocessing`` states the one input recipe (clamp, then non-finite -> default) as the training
files apply it (``keras_onnx``, scaled units) and as C++ applies it before lwtnn (``lwtnn``, raw units):
:data:`taggerflow.scaling.SCALED_INPUT_RECIPE` and :data:`~taggerflow.scaling.RAW_INPUT_RECIPE`.

Non-finite numbers anywhere in the card (e.g. an undefined AUC) are written as null: the file is
strict JSON.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any, Mapping, Sequence

import numpy as np

from taggerflow.utils import atomic_path

__all__ = ["CARD_VERSION", "model_card", "write_model_card", "card_inputs_from_config"]

CARD_VERSION = 1
CANDIDATE_INPUT = "candidate"  # = taggerflow.models.CANDIDATE_INPUT (not imported: no Keras here)
VALID_SUFFIX = "_valid"
GLOBAL_CONE = "global"


def _jsonable(obj: Any, where: str) -> Any:
    """Deep copy as plain JSON types; numpy scalars/arrays converted, non-finite floats -> None."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist(), where)
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str):
        return obj
    raise ValueError(f"{where}: not JSON serialisable ({type(obj).__name__})")


def _float_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _variable_entries(scaling: Mapping, type_name: str, cone: str, variables: Sequence[Any], where: str
                      ) -> list[dict]:
    from taggerflow.scaling.apply import raw_recipe_arrays, scaling_arrays  # noqa: PLC0415

    specs = []
    for j, v in enumerate(variables):
        spec = {"name": v} if isinstance(v, str) else dict(v) if isinstance(v, Mapping) else None
        if spec is None or not isinstance(spec.get("name"), str) or not spec["name"]:
            raise ValueError(f"{where}[{j}]: expected a variable name or a dict with a 'name', got {v!r}")
        specs.append(spec)
    names = [s["name"] for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: duplicate variable names {names}")
    if not names:
        raise ValueError(f"{where}: no variables")
    mean, std, lo, hi, default = scaling_arrays(dict(scaling), type_name, names, cone)
    raw_min, raw_max, raw_default = raw_recipe_arrays(dict(scaling), type_name, names, cone)
    out = []
    for j, spec in enumerate(specs):
        entry_scaling = scaling[type_name][spec["name"]][cone].get("scaling")
        e = {"name": spec["name"], "mean": float(mean[j]), "std": float(std[j]),
             "lim_min": _float_or_none(lo[j]), "lim_max": _float_or_none(hi[j]), "default": float(default[j]),
             "raw_min": _float_or_none(raw_min[j]), "raw_max": _float_or_none(raw_max[j]),
             "raw_default": float(raw_default[j]),
             "lwtnn_offset": float(-mean[j]), "lwtnn_scale": float(1.0 / std[j]),
             "scaling": spec.get("scaling", entry_scaling)}
        if spec.get("expression") is not None:
            e["expression"] = str(spec["expression"])
        if spec.get("one_hot") is not None:   # an indicator of a one_hot variable: how to compute it
            e["one_hot"] = dict(spec["one_hot"])
        out.append(e)
    return out


def model_card(*, name: str, classes: list[str], candidate_variables: list[dict], sequences: dict[str, dict],
               scaling: dict, training_config: dict, metrics: dict, lwtnn_check: dict | None,
               onnx_info: dict | None, files: dict[str, str]) -> dict:
    """The model card (a JSON-ready dict).

    ``candidate_variables``: the candidate variables in model order, each a dict with ``name`` and
    optionally ``expression`` and ``scaling`` (or a bare name). ``sequences``: the constituent
    sequences the model reads, in model order, ``{input name: {"n_max": int, "variables": [...],
    "collection": scaling type (default: the input name), "cone": (default "global"),
    "sort_by": variable or None, "lwtnn_node": lwtnn sequence node (default: the input name)}}``.
    ``scaling``: the merged scaling (``{type: {var: {cone: {mean, std, lim_min, lim_max, default}}}}``).
    ``lwtnn_check``: the figures of the lwtnn check (or None). ``onnx_info``: what
    :func:`taggerflow.onnx_export.export_onnx` returned (or None), optionally with the
    :func:`~taggerflow.onnx_export.onnx_check` figures under ``"check"``; its input names must be
    the card's inputs in order. ``files``: role -> file name. Raises ValueError on inconsistent input.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty string, got {name!r}")
    classes = list(classes)
    if not classes or not all(isinstance(c, str) and c for c in classes) or len(set(classes)) != len(classes):
        raise ValueError(f"classes: expected unique non-empty class names, got {classes!r}")
    if not isinstance(sequences, Mapping):
        raise ValueError(f"sequences: expected a mapping, got {type(sequences).__name__}")
    from taggerflow.scaling.apply import RAW_INPUT_RECIPE, SCALED_INPUT_RECIPE  # noqa: PLC0415

    cand_vars = _variable_entries(scaling, "candidate", GLOBAL_CONE, list(candidate_variables),
                                  "candidate_variables")
    inputs: list[dict] = [{"name": CANDIDATE_INPUT, "kind": "candidate", "shape": [None, len(cand_vars)],
                           "lwtnn_node": CANDIDATE_INPUT, "variables": cand_vars}]
    for seq_name, spec in sequences.items():
        where = f"sequences.{seq_name}"
        if not isinstance(seq_name, str) or not seq_name or seq_name == CANDIDATE_INPUT \
                or seq_name.endswith(VALID_SUFFIX):
            raise ValueError(f"{where}: invalid sequence input name {seq_name!r}")
        if not isinstance(spec, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {type(spec).__name__}")
        n_max = spec.get("n_max")
        if isinstance(n_max, bool) or not isinstance(n_max, (int, np.integer)) or n_max < 1:
            raise ValueError(f"{where}.n_max: expected a positive integer, got {n_max!r}")
        collection = spec.get("collection", seq_name)
        cone = spec.get("cone", GLOBAL_CONE)
        variables = _variable_entries(scaling, collection, cone, list(spec.get("variables") or []),
                                      f"{where}.variables")
        sort_by = spec.get("sort_by")
        inputs.append({"name": seq_name, "kind": "sequence", "shape": [None, int(n_max), len(variables)],
                       "collection": collection, "cone": cone, "n_max": int(n_max), "sort_by": sort_by,
                       "order": (f"descending {sort_by}, then truncated to n_max" if sort_by
                                 else "input order, truncated to n_max"),
                       "valid_input": f"{seq_name}{VALID_SUFFIX}",
                       "lwtnn_node": spec.get("lwtnn_node", seq_name), "variables": variables})
        inputs.append({"name": f"{seq_name}{VALID_SUFFIX}", "kind": "mask", "shape": [None, int(n_max)],
                       "mask_of": seq_name,
                       "meaning": "1.0 for a real constituent, 0.0 for a padded slot (Keras/ONNX only; "
                                  "lwtnn is given the real constituents only)"})

    output_name = "output"
    onnx_section, onnx_check = None, None
    if onnx_info is not None:
        if not isinstance(onnx_info, Mapping):
            raise ValueError(f"onnx_info: expected a mapping, got {type(onnx_info).__name__}")
        onnx_section = {k: v for k, v in onnx_info.items() if k != "check"}
        onnx_check = onnx_info.get("check")
        onnx_inputs = [i["name"] for i in onnx_info.get("inputs", [])]
        card_inputs = [i["name"] for i in inputs]
        if onnx_inputs != card_inputs:
            raise ValueError(f"onnx_info: the ONNX inputs {onnx_inputs} are not the card's inputs {card_inputs}")
        for card_in, onnx_in in zip(inputs, onnx_info["inputs"]):
            if list(onnx_in.get("shape", []))[1:] != card_in["shape"][1:]:
                raise ValueError(f"onnx_info: input {card_in['name']!r} has shape {onnx_in.get('shape')} in ONNX, "
                                 f"{card_in['shape']} from the variables")
        outs = list(onnx_info.get("outputs") or [])
        if outs:
            output_name = outs[0]["name"]
            width = list(outs[0].get("shape") or [None])[-1]
            if width is not None and width != len(classes):
                raise ValueError(f"onnx_info: output {output_name!r} has {width} values for {len(classes)} classes")

    card = {
        "card_version": CARD_VERSION,
        "name": name,
        "classes": classes,
        "inputs": inputs,
        "outputs": [{"name": output_name, "shape": [None, len(classes)], "labels": classes,
                     "meaning": "softmax probabilities, one per class, in label order"}],
        "preprocessing": {
            "keras_onnx": f"{SCALED_INPUT_RECIPE} (what the training files hold); constituents ordered as in "
                          f"'order', padded with zeros to n_max, <seq>_valid = 1 for real constituents",
            "lwtnn": f"{RAW_INPUT_RECIPE} (raw bounds: raw_min/raw_max, raw default: raw_default); lwtnn applies "
                     f"(x + lwtnn_offset) * lwtnn_scale itself; pass only the real constituents, ordered and "
                     f"truncated as in 'order', and every sequence variable (empty vectors for zero constituents)",
        },
        "training": copy.deepcopy(training_config),
        "metrics": copy.deepcopy(metrics),
        "checks": {"lwtnn": copy.deepcopy(lwtnn_check), "onnx": copy.deepcopy(onnx_check)},
        "onnx": copy.deepcopy(onnx_section),
        "files": dict(files),
    }
    if any("one_hot" in v for i in inputs for v in i.get("variables", [])):
        for key in ("keras_onnx", "lwtnn"):
            card["preprocessing"][key] += ("; a one_hot input is computed from the raw code first "
                                           "(variables[].one_hot.recipe: 1 if code == category else 0)")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in card["files"].items()):
        raise ValueError(f"files: expected a role -> file name mapping of strings, got {files!r}")
    return _jsonable(card, "card")


def write_model_card(card: dict, path: str) -> None:
    """Write the card atomically as strict JSON, keys sorted (equal content gives equal bytes)."""
    text = json.dumps(_jsonable(card, "card"), indent=1, sort_keys=True, allow_nan=False)
    with atomic_path(path, suffix=".json") as tmp:
        with open(tmp, "w") as f:
            f.write(text + "\n")


def card_inputs_from_config(cfg, model_input_names: Sequence[str] | None = None,
                            sequence_names: Mapping[str, str] | None = None) -> tuple[list[dict], dict[str, dict]]:
    """``candidate_variables`` and ``sequences`` for :func:`model_card` from a
    :class:`taggerflow.config.Config`; only the sequences among ``model_input_names`` when given
    (a dense model reads none). ``sequence_names`` maps a sequence to its lwtnn node name
    (``export.sequence_names``)."""
    def var(v) -> dict:
        out = {"name": v.name, "expression": v.expression, "scaling": v.scaling}
        if getattr(v, "one_hot", None) is not None:
            from taggerflow.scaling.types.one_hot import recipe  # noqa: PLC0415

            source, code_expr, code = v.one_hot
            out["one_hot"] = {"variable": source, "code": code_expr, "category": code,
                              "recipe": recipe(source, code_expr, code)}
        return out

    names = None if model_input_names is None else set(model_input_names)
    sequence_names = dict(sequence_names or {})
    sequences = {}
    for seq_name, coll, cone in cfg.sequences():
        if names is not None and seq_name not in names:
            continue
        sequences[seq_name] = {"collection": coll.name, "cone": cone, "n_max": coll.n_max, "sort_by": coll.sort_by,
                               "lwtnn_node": sequence_names.get(seq_name, seq_name),
                               "variables": [var(v) for v in coll.variables]}
    return [var(v) for v in cfg.candidate_variables], sequences
