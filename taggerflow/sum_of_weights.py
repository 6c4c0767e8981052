"""The sum of generated weights of an input file, the denominator of the cross-section
normalisation (taggerflow.event_weights: the configuration and the normalisation; Spectrum calls
:func:`file_sum_of_weights` on each of its files)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from taggerflow import formats as format_modules
from taggerflow.event_weights import dataset_format, sum_of_weights_spec, weight_expression, weight_names
from taggerflow.formats.h5 import DEFAULT_CANDIDATES
from taggerflow.io import InputError, evaluate, open_tree, tree_keys
from taggerflow.readers import input_spec, open_source


def _tree_arrays(tree, names: Sequence[str], path: str, key: str, step: int = 200_000):
    """Chunks of the branches ``names`` of a TTree as numpy arrays (the names checked first)."""
    keys = set(tree_keys(tree))
    for n in names:
        if n not in keys:
            raise InputError(f"{path}: branch '{n}' (needed by config key {key}) not found in tree "
                             f"'{tree.name}'")
    for start in range(0, int(tree.num_entries), step):
        yield tree.arrays(list(names), entry_start=start, entry_stop=min(start + step, int(tree.num_entries)),
                          library="np", how=dict)


def _weights_of(expr: str, arrays: dict, n: int) -> np.ndarray:
    value = evaluate(expr, arrays)
    return np.broadcast_to(np.asarray(value, dtype=np.float64), (n,))


def file_sum_of_weights(cfg, dataset: str, path: str) -> float | None:
    """The sum of generated weights of one input file (see the module docstring), or None where the
    dataset is not normalised. Checks that the file has the weight expression's branches (so that a
    missing one fails in Spectrum, naming the file and the config key)."""
    key = f"inputs.datasets.{dataset}.weight"
    expr, names = weight_expression(cfg, dataset), weight_names(cfg, dataset)
    fmt = dataset_format(cfg, dataset)
    spec = sum_of_weights_spec(cfg, dataset)
    if fmt == "h5":
        import h5py

        jets_name = (cfg.raw["inputs"].get("h5") or {}).get("candidates", DEFAULT_CANDIDATES)
        with h5py.File(path, "r") as f:
            fields = f[jets_name].dtype.names or ()
            for n in names:
                if n not in fields:
                    raise InputError(f"{path}: field '{n}' (needed by config key {key}) not found in dataset "
                                     f"'{jets_name}'")
            if spec != "computed":
                return None
            need = list(dict.fromkeys(list(names) + ["event"]))
            data = f[jets_name].fields(need)[:]
            arrays = {n: data[n] for n in need}
        return _unique_event_sum(expr, arrays, names, path)
    if fmt in format_modules.event_field_formats():
        return _event_format_sum(cfg, dataset, path, expr, names, spec, key)
    tree_name = cfg.raw["inputs"].get("tree") or format_modules.module(fmt).DEFAULT_TREE
    tree = open_tree(path, tree_name)
    try:
        if spec != "computed":
            # the branches must exist even where the sum comes from the Runs tree
            missing = [n for n in names if n not in set(tree_keys(tree))]
            if missing:
                raise InputError(f"{path}: branch '{missing[0]}' (needed by config key {key}) not found in "
                                 f"tree '{tree_name}'")
            return None if spec is None else _runs_sum(path, spec, dataset)
        if fmt == "nanoaod":   # one entry per event: every event, whatever candidates it has
            total = 0.0
            for arrays in _tree_arrays(tree, names, path, key):
                n = len(next(iter(arrays.values()))) if arrays else 0
                total += float(np.sum(_weights_of(expr, arrays, n)))
            if not names:
                total = float(np.sum(_weights_of(expr, {}, int(tree.num_entries))))
            return total
        parts: dict[str, list] = {}
        for arrays in _tree_arrays(tree, list(dict.fromkeys(list(names) + ["event"])), path,
                                   f"inputs.datasets.{dataset}.sum_of_weights (computed: one weight per event)"):
            for k, v in arrays.items():
                parts.setdefault(k, []).append(v)
        arrays = {k: np.concatenate(v) for k, v in parts.items()} if parts else {n: np.zeros(0) for n in names}
        return _unique_event_sum(expr, arrays, names, path)
    finally:
        try:
            tree.file.close()
        except Exception:
            pass


def _event_format_sum(cfg, dataset: str, path: str, expr: str, names, spec, key: str,
                      step: int = 200_000) -> float | None:
    """The sum over every event of a per-event format of taggerflow.formats (PHYSLITE, Delphes):
    the weight must be an expression of the format's event fields (``event_branches``), read per
    event through the format's own source."""
    fmt = dataset_format(cfg, dataset)
    src = open_source(input_spec(cfg, dataset), path)
    try:
        missing = [n for n in names if n not in src.event]
        if missing:
            raise InputError(f"{path}: '{missing[0]}' (needed by config key {key}) is not an event field of "
                             f"{src.describe()}: name it in inputs.{fmt}.event_branches (e.g. "
                             f"{{{missing[0]}: <branch>}}), as the weight is one value per event")
        if spec != "computed":
            return None if spec is None else _runs_sum(path, spec, dataset)
        total = 0.0
        for start in range(0, src.num_entries, step):
            stop = min(start + step, src.num_entries)
            total += float(np.sum(_weights_of(expr, src.event_arrays(names, start, stop), stop - start)))
        return total
    finally:
        src.close()


def _unique_event_sum(expr: str, arrays: dict, names, path: str) -> float:
    """Sum of the weight over the distinct event numbers (one candidate per entry: an event's first)."""
    event = np.asarray(arrays.get("event", np.zeros(0)))
    _, first = np.unique(event, return_index=True)
    w = _weights_of(expr, {n: arrays[n] for n in names}, len(event))
    return float(np.sum(w[first]))


def _runs_sum(path: str, spec: dict, dataset: str) -> float:
    import uproot

    key = f"inputs.datasets.{dataset}.sum_of_weights"
    with uproot.open(path) as f:
        trees = sorted({k.split(";")[0] for k in f.keys()})
        if spec["tree"] not in trees:
            raise InputError(f"{path}: no tree '{spec['tree']}' for the sum of weights (config key {key}.tree; "
                             f"keys: {', '.join(trees) or 'none'})")
        runs = f[spec["tree"]]
        have = set(runs.keys())
        branch = next((b for b in spec["branch"] if b in have), None)
        if branch is None:
            raise InputError(f"{path}: tree '{spec['tree']}' has none of the branches {', '.join(spec['branch'])} "
                             f"(config key {key}.branch)")
        return float(np.sum(runs[branch].array(library="np"), dtype=np.float64))
