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
the Spectrum outputs, which taggerflow.sum_of_weights computes per file) and to the training files
as ``jets/event_weight``. Negative weights are kept as they are (see the README).
"""

from __future__ import annotations

import numpy as np


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


def dataset_format(cfg, dataset: str) -> str:
    inp = cfg.raw["inputs"]
    return (inp["datasets"].get(dataset) or {}).get("format") or inp["format"]


def sum_of_weights_spec(cfg, dataset: str) -> dict | str | None:
    """``computed``, {tree, branch: [names]} or None (no cross section: nothing to normalise)."""
    spec = cfg.raw["inputs"]["datasets"][dataset]
    if "cross_section_pb" not in spec:
        return None
    sw = spec.get("sum_of_weights")
    if sw is None:
        return dict(RUNS_DEFAULT) if dataset_format(cfg, dataset) == "nanoaod" else "computed"
    if isinstance(sw, str):
        return sw
    branch = sw.get("branch", RUNS_DEFAULT["branch"])
    return {"tree": sw.get("tree", RUNS_DEFAULT["tree"]), "branch": [branch] if isinstance(branch, str) else list(branch)}


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
                if not isinstance(sw.get("tree", RUNS_DEFAULT["tree"]), str) or not isinstance(branches, list) or not branches \
                        or not all(isinstance(b, str) and b for b in branches):
                    raise err(f"{key}.sum_of_weights", "expected {tree: <name>, branch: <name> or [names, ...]}")
                if dataset_format(cfg, ds) == "h5":
                    raise err(f"{key}.sum_of_weights", "HDF5 inputs have no ROOT tree of sums: use 'computed'")
    if "luminosity_invpb" in inp:
        if not inp["luminosity_invpb"] > 0:
            raise err("inputs.luminosity_invpb", f"expected a luminosity > 0 (pb^-1), got {inp['luminosity_invpb']}")
        if not any_xsec:
            raise err("inputs.luminosity_invpb", "no dataset has a cross_section_pb to normalise")


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
