"""Event weights and their normalisation to a cross section and a luminosity.

Configuration (``inputs``; every key optional, nothing changes where none is given):

* ``inputs.datasets.<ds>.weight``: expression of the per-event (generator) weight over the
  dataset's raw branches (``genWeight`` in NanoAOD, ``mcEventWeight`` in a candidate tree or an
  HDF5 ``jets`` field), in the expression language of the features; default ``1``;
* ``inputs.datasets.<ds>.cross_section_pb``: the dataset's cross section in picobarn; with it the
  weights are normalised (needs ``inputs.luminosity_invpb``);
* ``inputs.luminosity_invpb``: the integrated luminosity in inverse picobarn;
* ``inputs.datasets.<ds>.sum_of_weights``: where the sum of the generated weights comes from:
  ``{tree: Runs, branch: [genEventSumw, genEventSumw_]}`` (the default for NanoAOD: the first of
  the branches the file has, summed over the tree's entries; older NanoAOD names it
  ``genEventSumw_``) or ``computed`` (the default for the other formats: the weight expression
  summed over every event of every file, before any selection; for one-candidate-per-entry
  formats one value per distinct ``event`` number of a file).

Normalised weight of a candidate = weight * cross_section_pb * luminosity_invpb / sum_of_weights
(the dataset's sum over all its files): the expected number of events of that dataset in the
luminosity. Without ``cross_section_pb`` the weight is taken as it is.

The weight is evaluated while reading, as an alias ``event_weight`` (before ``inputs.selection``),
written to the shards (normalised there: ShuffleMergeSpectral knows every file's sum of weights from
the Spectrum outputs) and to the training files as ``jets/event_weight``. Negative weights are kept
as they are (see the README).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from taggerflow import formats as format_modules
from taggerflow.io import InputError, evaluate, tree_keys

WEIGHT_FIELD = "event_weight"   # the alias, the shard branch and the training-file dataset (jets/<name>)
RUNS_DEFAULT = {"tree": "Runs", "branch": ["genEventSumw", "genEventSumw_"]}


class EventWeightError(ValueError):
    """The weights cannot be normalised; the message names the dataset, its files and the config key."""


def weights_configured(cfg) -> bool:
    """Whether any dataset has a weight expression or a cross section (else: no weights anywhere)."""
    if cfg.is_demo:
        return False
    return any("weight" in d or "cross_section_pb" in d for d in (cfg.raw["inputs"].get("datasets") or {}).values())


def weight_expression(cfg, dataset: str) -> str:
    return str((cfg.raw["inputs"]["datasets"].get(dataset) or {}).get("weight", "1"))


def weight_names(cfg, dataset: str) -> tuple[str, ...]:
    from taggerflow.expressions import expression_names

    return expression_names(weight_expression(cfg, dataset))


def _format(cfg, dataset: str) -> str:
    inp = cfg.raw["inputs"]
    return (inp["datasets"].get(dataset) or {}).get("format", inp.get("format", "candidate_tree"))


def sum_of_weights_spec(cfg, dataset: str) -> dict | str | None:
    """``computed``, {tree, branch: [names]} or None (no cross section: nothing to normalise)."""
    spec = cfg.raw["inputs"]["datasets"][dataset]
    if "cross_section_pb" not in spec:
        return None
    sw = spec.get("sum_of_weights")
    if sw is None:
        return dict(RUNS_DEFAULT) if _format(cfg, dataset) == "nanoaod" else "computed"
    if isinstance(sw, str):
        return sw
    branch = sw.get("branch", RUNS_DEFAULT["branch"])
    return {"tree": sw.get("tree", "Runs"), "branch": [branch] if isinstance(branch, str) else list(branch)}


def validate(cfg, err) -> None:
    """The weight keys of ``inputs`` (called by the configuration's validation)."""
    from taggerflow.expressions import expression_names

    inp = cfg.raw["inputs"]
    datasets = inp.get("datasets") or {}
    if WEIGHT_FIELD in (inp.get("aliases") or {}):
        raise err(f"inputs.aliases.{WEIGHT_FIELD}", "the name is taken by the event weight "
                                                  "(inputs.datasets.<ds>.weight)")
    any_xsec = False
    for ds, spec in datasets.items():
        key = f"inputs.datasets.{ds}"
        if "weight" in spec:
            try:
                names = expression_names(spec["weight"])
            except (SyntaxError, ValueError) as e:
                raise err(f"{key}.weight", f"invalid expression: {e}") from None
            if WEIGHT_FIELD in names:
                raise err(f"{key}.weight", f"'{WEIGHT_FIELD}' is the result of this expression, not a branch")
        if "cross_section_pb" in spec:
            any_xsec = True
            if not spec["cross_section_pb"] > 0:
                raise err(f"{key}.cross_section_pb", f"expected a cross section > 0 (pb), got {spec['cross_section_pb']}")
            if "luminosity_invpb" not in inp:
                raise err(f"{key}.cross_section_pb", "normalising to a cross section needs inputs.luminosity_invpb "
                                                     "(the integrated luminosity in pb^-1)")
        sw = spec.get("sum_of_weights")
        if sw is not None:
            if "cross_section_pb" not in spec:
                raise err(f"{key}.sum_of_weights", "only used with cross_section_pb (the normalisation)")
            if isinstance(sw, str):
                if sw != "computed":
                    raise err(f"{key}.sum_of_weights", f"expected 'computed' or {{tree, branch}}, got {sw!r}")
            else:
                extra = sorted(set(sw) - {"tree", "branch"})
                if extra:
                    raise err(f"{key}.sum_of_weights.{extra[0]}", "unknown key (allowed: branch, tree)")
                branch = sw.get("branch", RUNS_DEFAULT["branch"])
                branches = [branch] if isinstance(branch, str) else branch
                if not isinstance(sw.get("tree", "Runs"), str) or not isinstance(branches, list) or not branches \
                        or not all(isinstance(b, str) and b for b in branches):
                    raise err(f"{key}.sum_of_weights", "expected {tree: <name>, branch: <name> or [names, ...]}")
                if _format(cfg, ds) == "h5":
                    raise err(f"{key}.sum_of_weights", "HDF5 inputs have no ROOT tree of sums: use 'computed'")
    if "luminosity_invpb" in inp:
        if not inp["luminosity_invpb"] > 0:
            raise err("inputs.luminosity_invpb", f"expected a luminosity > 0 (pb^-1), got {inp['luminosity_invpb']}")
        if not any_xsec:
            raise err("inputs.luminosity_invpb", "no dataset has a cross_section_pb to normalise")


# ---------------------------------------------------------------------------------------------
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
    from taggerflow.io import open_tree

    key = f"inputs.datasets.{dataset}.weight"
    expr, names = weight_expression(cfg, dataset), weight_names(cfg, dataset)
    fmt = _format(cfg, dataset)
    spec = sum_of_weights_spec(cfg, dataset)
    if fmt == "h5":
        import h5py

        jets_name = (cfg.raw["inputs"].get("h5") or {}).get("candidates", "jets")
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
    from taggerflow.readers import input_spec, open_source

    fmt = _format(cfg, dataset)
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


def dataset_norms(cfg, sums: dict[str, list[tuple[str, float | None]]]) -> dict[str, dict]:
    """Per dataset {factor, sum_of_weights, cross_section_pb, luminosity_invpb}: factor =
    cross_section_pb * luminosity_invpb / (sum over the dataset's files), 1 without a cross section.
    ``sums``: dataset -> [(file as stored, its sum of weights), ...]."""
    inp = cfg.raw["inputs"]
    out = {}
    for ds in cfg.dataset_names:
        spec = inp["datasets"][ds]
        if "cross_section_pb" not in spec:
            out[ds] = {"factor": 1.0}
            continue
        files = sums.get(ds, [])
        total = float(np.sum([s for _, s in files if s is not None], dtype=np.float64))
        if not total > 0:
            names = ", ".join(p for p, _ in files[:3]) + (" ..." if len(files) > 3 else "")
            raise EventWeightError(f"dataset '{ds}' ({names}): sum of weights {total:g} over {len(files)} file(s) "
                                   f"(config key inputs.datasets.{ds}.sum_of_weights): cannot normalise to "
                                   f"cross_section_pb (needs a positive sum)")
        xsec, lumi = float(spec["cross_section_pb"]), float(inp["luminosity_invpb"])
        out[ds] = {"factor": xsec * lumi / total, "sum_of_weights": total, "cross_section_pb": xsec,
                   "luminosity_invpb": lumi}
    return out
