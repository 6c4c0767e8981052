"""The control sample's configuration (taggerflow.control_sample writes its training files):
the ``control`` section, validated here (called by taggerflow.config), and the *control view* of a
configuration that the control stages run under.

Configuration::

    control:
      datasets:                        # the form of inputs.datasets, plus is_data (required)
        CR_data: {files: [...], is_data: true}
        CR_mc:   {files: [...], is_data: false, weight: genWeight}

With a demo that generates control-region files (``demo.control``, the llp family), a control
dataset of the same name may omit ``files``: it reads the demo's generated files
(:func:`generated_datasets`; tasks.demo.input_files), which depend on ``--version`` and so cannot
be listed in the configuration.

This module does not import taggerflow.config (which imports it): the view is built with the class
of the configuration it is given, the section is checked with taggerflow.schema's checker.
"""

from __future__ import annotations

import copy

CONTROL_CLASS = "control"
#: an alias of the control view: the pseudo-class (0) of every control candidate, whatever its truth
CONTROL_TRUTH = "taggerflow_control_class"
IS_DATA = "jets/is_data"


# ---------------------------------------------------------------------------------------------
# configuration


def validate_control_section(cfg, err) -> None:
    """The ``control`` section (if any) and the adversarial variants' need of it; ``err(key, msg)``
    makes the ConfigError naming the file and the key."""
    from taggerflow.formats import NAMES as INPUT_FORMATS
    from taggerflow.schema import check_section as _check_section, legacy_schema as _schema

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
    return type(cfg)(raw=raw, path=cfg.path)   # cfg's class: Config


# views by the id of their main configuration (kept alive with it): tasks of 10k branches share one
_VIEWS: dict[int, tuple[object, object]] = {}


def control_config(cfg):
    """The control view of a validated configuration (see the module docstring); ConfigError when
    it has no control section."""
    from taggerflow.schema import ConfigError

    if cfg.raw.get("control") is None:
        raise ConfigError(f"{cfg.path}: control: the control sample (--sample control) needs a top-level "
                          f"'control' section with control.datasets")
    hit = _VIEWS.get(id(cfg))
    if hit is None or hit[0] is not cfg:
        hit = _VIEWS[id(cfg)] = (cfg, _view_of(cfg))
    return hit[1]
