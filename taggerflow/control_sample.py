"""The control sample of the adversarial training (taggerflow.adversarial): candidates of a
background process in a signal-free region, from data and MC, next to the main sample.

Configuration (validated here, registered by one line in taggerflow.config)::

    control:
      datasets:                        # the form of inputs.datasets, plus is_data (required)
        CR_data: {files: [...], is_data: true}
        CR_mc:   {files: [...], is_data: false, weight: genWeight}

With a demo that generates control-region files (``demo.control``, the llp family), a control
dataset of the same name may omit ``files``: it reads the demo's generated files
(:func:`generated_datasets`; tasks.demo.input_files), which depend on ``--version`` and so cannot
be listed in the configuration.

The control candidates go through the stages of the main sample (Spectrum, ShuffleMergeSpectral,
WriteTrainSample with ``--sample control``) under a *control view* of the configuration
(:func:`control_config`): the control datasets are the inputs (format, tree, selection, aliases and
features those of the main sample); every candidate is in one pseudo-class (control candidates have
no class: there is no class resampling, the mixing keeps every candidate inside the resampling bins,
in an order fixed by the seed); the scaling is the main sample's (MergeScaling is never run on the
control view); no flattening weights, no extra labels. Its training files carry ``jets/is_data``
(1 data, 0 MC, from the dataset) beside the usual datasets (event weights in ``jets/event_weight``
where the control datasets configure them), split by the same hash of event and dataset.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable

import numpy as np

CONTROL_CLASS = "control"
#: an alias of the control view: the pseudo-class (0) of every control candidate, whatever its truth
CONTROL_TRUTH = "taggerflow_control_class"
IS_DATA = "jets/is_data"


# ---------------------------------------------------------------------------------------------
# configuration


def validate_control_section(cfg, err) -> None:
    """The ``control`` section (if any) and the adversarial variants' need of it; ``err(key, msg)``
    makes the ConfigError naming the file and the key."""
    from taggerflow.config import INPUT_FORMATS, _check_section, _schema

    section = cfg.raw.get("control")
    adversarial = [i for i, v in enumerate(cfg.raw["training"].get("variants") or [])
                   if isinstance(v, dict) and v.get("adversary") is not None]
    if cfg.raw["training"].get("adversary") is not None:
        adversarial = adversarial or [None]
    if section is None:
        if adversarial:
            i = adversarial[0]
            key = "training.adversary" if i is None else f"training.variants[{i}].adversary"
            raise err(key, "an adversary needs the control sample: add a top-level 'control' section "
                           "(control.datasets with is_data)")
        return
    _check_section(section, {"datasets": (dict, True)}, "control", cfg.path)
    datasets = section["datasets"]
    if not datasets:
        raise err("control.datasets", "expected at least one dataset of data and one of MC")
    spec = {**_schema()["_sub"]["inputs.datasets.*"], "is_data": (bool, True)}
    demo_control = ((cfg.raw.get("demo") or {}).get("control") or {}).get("datasets") or {}
    main = set(cfg.dataset_names)
    for name, ds in datasets.items():
        where = f"control.datasets.{name}"
        if isinstance(ds, dict) and "files" not in ds:
            if name not in demo_control:
                raise err(f"{where}.files", "missing: only a dataset the demo generates (a name of "
                                            "demo.control.datasets) may omit it")
            _check_section(ds, {**spec, "files": (list, False)}, where, cfg.path)
            if bool(ds["is_data"]) != bool(demo_control[name]["is_data"]):
                raise err(f"{where}.is_data", f"{ds['is_data']} but demo.control.datasets.{name}.is_data is "
                                              f"{demo_control[name]['is_data']} (the demo generates its files)")
            if "format" in ds and ds["format"] != "candidate_tree":
                raise err(f"{where}.format", "the demo's generated files are candidate trees (candidate_tree)")
            continue
        _check_section(ds, spec, where, cfg.path)
        if name in main:
            raise err(where, f"'{name}' is also a dataset of the main sample: control dataset names must "
                             f"differ from the main ones (the hash split and dataset ids use the name)")
        for pattern in ds["files"]:
            if not isinstance(pattern, str):
                raise err(f"{where}.files", f"expected path strings, got {pattern!r}")
        if "format" in ds and ds["format"] not in INPUT_FORMATS:
            raise err(f"{where}.format", f"unknown format '{ds['format']}' (supported: {', '.join(INPUT_FORMATS)})")
    generated = generated_datasets(cfg)
    tree = cfg.raw["inputs"].get("tree")
    demo_tree = cfg.settings("demo").tree if cfg.raw.get("demo") else None
    if generated and len(generated) < len(datasets) and tree is not None and tree != demo_tree:
        raise err("inputs.tree", f"'{tree}', but the demo's generated control files (control.datasets."
                                 f"{generated[0]}) have the tree '{demo_tree}' (demo.tree): give both the same")
    kinds = {bool(ds["is_data"]) for ds in datasets.values()}
    if kinds != {True, False}:
        missing = "data (is_data: true)" if True not in kinds else "MC (is_data: false)"
        raise err("control.datasets", f"needs datasets of both data and MC: none of {missing}")
    # the event-weight keys, checked as inputs.datasets' are, errors naming control.datasets
    from taggerflow.event_weights import validate as validate_event_weights

    def control_err(key: str, msg: str):
        return err(key.replace("inputs.datasets.", "control.datasets.", 1), msg)

    validate_event_weights(_view_of(cfg), control_err)


def control_datasets(cfg) -> dict[str, bool]:
    """{control dataset: is_data} of the configuration (the main one or its control view)."""
    return {name: bool(ds["is_data"]) for name, ds in cfg.raw["control"]["datasets"].items()}


def generated_datasets(cfg) -> list[str]:
    """The control datasets whose files the demo generates (no ``files``, a name of
    demo.control.datasets), in configuration order; of the main configuration or its control view."""
    return [name for name, ds in cfg.raw["control"]["datasets"].items()
            if isinstance(ds, dict) and "files" not in ds]


def _view_of(cfg):
    from taggerflow.config import Config

    raw = copy.deepcopy(cfg.raw)
    demo = raw.pop("demo", None)
    generated = generated_datasets(cfg)
    inputs = raw["inputs"]
    # the generated datasets get no files here (tasks.demo.input_files names them); the view is no
    # demo, so they are read as what they are, candidate trees of the demo's tree
    inputs["datasets"] = {name: {k: v for k, v in ds.items() if k != "is_data"}
                          if name not in generated else
                          {**{k: v for k, v in ds.items() if k != "is_data"}, "files": [], "format": "candidate_tree"}
                          for name, ds in raw["control"]["datasets"].items()}
    if generated:
        inputs["tree"] = cfg.settings("demo").tree
        # what the generated files depend on, in the section the control outputs' paths hash
        raw["control"]["generated_by_demo"] = {"tree": inputs["tree"], "control": demo["control"]}
    # first: the main aliases may not use it, and it needs only pt (read by every stage)
    inputs["aliases"] = {CONTROL_TRUTH: "pt * 0", **(inputs.get("aliases") or {})}
    raw["classes"] = {"truth_branch": CONTROL_TRUTH, "labels": {CONTROL_CLASS: [0]}}
    rs = raw["resampling"]
    for key in ("groups", "lastbin_takeall", "lastbin_disbalance", "refill_spectrum"):
        rs.pop(key, None)
    rs["class_ratio"] = {CONTROL_CLASS: -1}   # take all: acceptance 1 in every bin
    rs["enable_emptybin"] = True
    ts = raw["train_sample"]
    ts["weights"] = False
    ts["additional_labels"] = []
    ts["constituent_labels"] = {}
    return Config(raw=raw, path=cfg.path)


# views by the id of their main configuration (kept alive with it): tasks of 10k branches share one
_VIEWS: dict[int, tuple[object, object]] = {}


def control_config(cfg):
    """The control view of a validated configuration (see the module docstring); ConfigError when
    it has no control section."""
    from taggerflow.config import ConfigError

    if cfg.raw.get("control") is None:
        raise ConfigError(f"{cfg.path}: control: the control sample (--sample control) needs a top-level "
                          f"'control' section with control.datasets")
    hit = _VIEWS.get(id(cfg))
    if hit is None or hit[0] is not cfg:
        hit = _VIEWS[id(cfg)] = (cfg, _view_of(cfg))
    return hit[1]


# ---------------------------------------------------------------------------------------------
# the training files


def write_control_sample(view, shard_paths: Iterable[str], scaling: dict, outputs: dict[str, str],
                         meta: dict | None = None, weight_counts=None, config_hash: str | None = None) -> dict[str, int]:
    """write_train_sample of the control view, then ``jets/is_data`` (int8: 1 data, 0 MC, from each
    candidate's dataset id) in every file; the files are written under temporary names and renamed
    into place at the end, all three after all three are complete."""
    import h5py

    from taggerflow.resample import dataset_id
    from taggerflow.trainsample import options, write_train_sample

    by_id = {dataset_id(name): int(is_data) for name, is_data in control_datasets(view).items()}
    parts = {s: os.path.join(os.path.dirname(p), f".{os.path.basename(p)}.part") for s, p in outputs.items()}
    for p in parts.values():  # a killed attempt's (we hold the task's lock)
        if os.path.exists(p):
            os.remove(p)
    if weight_counts is not None:
        raise ValueError("the control sample has no flattening weights (control candidates have no class)")
    counts = write_train_sample(view, shard_paths, scaling, parts, meta=meta, config_hash=config_hash)
    opts = options(view)
    comp = {"compression": opts.compression} if opts.compression else {}
    try:
        for p in parts.values():
            with h5py.File(p, "r+") as f:
                ids = f["jets/dataset_id"][:]
                unknown = sorted(set(np.unique(ids).tolist()) - set(by_id))
                if unknown:
                    raise ValueError(f"{p}: dataset ids {unknown[:3]} are no control dataset of the configuration")
                is_data = np.array([by_id[i] for i in ids.tolist()], dtype=np.int8)
                ds = f.create_dataset(IS_DATA, data=is_data, maxshape=(None,),
                                      chunks=(max(1, min(opts.chunk_rows, max(1, len(ids)))),), **comp)
                ds.attrs["description"] = "1: data, 0: MC (control.datasets.<dataset>.is_data)"
    except BaseException:
        for p in parts.values():
            if os.path.exists(p):
                os.remove(p)
        raise
    for s, p in parts.items():
        os.replace(p, outputs[s])
    return counts


def read_control_split(files: Iterable[str], collections: Iterable[str]) -> dict:
    """A control split for train_adversarial from control training files: {"x": model inputs,
    "is_data", "weights" (jets/event_weight, or None), "pt"}."""
    from taggerflow.records import h5_model_inputs, read_h5

    arrays = read_h5(list(files))
    if IS_DATA not in arrays:
        raise ValueError(f"{sorted(files)[0]}: no {IS_DATA}: not a control training file")
    return {"x": h5_model_inputs(arrays, list(collections)), "is_data": arrays[IS_DATA].astype(np.int32),
            "weights": arrays.get("jets/event_weight"), "pt": arrays["jets/pt"].astype(np.float64)}


def read_main_split(files: Iterable[str], collections: Iterable[str], event_weights: bool) -> dict:
    """A main split for train_adversarial from training files: {"x", "y", "weights"} (the event
    weights with ``event_weights``, else None: unit weights)."""
    from taggerflow.records import h5_model_inputs, read_h5

    arrays = read_h5(list(files))
    return {"x": h5_model_inputs(arrays, list(collections)), "y": arrays["jets/labels"].astype(np.int32),
            "weights": arrays["jets/event_weight"] if event_weights else None}
