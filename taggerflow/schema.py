"""The configuration schema: one typed section (a frozen dataclass) per configuration mapping, every
default in it and nowhere else.

A section is registered under its *pattern*, the dotted key path of the mapping it describes
(``""`` is the top level, ``*`` stands for every key of a mapping, e.g. ``features.candidate.*``).
A field without a default is a required key; the annotation gives the accepted YAML types
(``float`` accepts integers, ``int`` and ``float`` refuse true/false); a field whose YAML key is not
a Python name (``lambda``) names it in ``field(metadata={"key": ...})``.

Modules registered elsewhere (input formats, scaling types, model families, the adversary) declare
their sections in the legacy form ``{pattern: {key: (types, required[, default])}}``;
:func:`from_legacy` turns each into a dataclass of the same kind, and a section whose parent
mapping lacks its key gets that key (optional) in the parent. The registry is built on first use
(:func:`sections`), so importing this module costs a few dataclass definitions.

This module imports nothing of taggerflow at import time and no third-party package: ``law index``
and every task start-up import it.
"""

import copy
import dataclasses
import keyword
import types
import typing
from dataclasses import MISSING, dataclass, field
from typing import Any

#: the accepted YAML types of a key, as isinstance() takes them
TypeSpec = tuple


@dataclass(frozen=True)
class Key:
    """One key of a section: accepted types, whether required, its default (MISSING: none)."""

    types: TypeSpec
    required: bool
    default: Any = MISSING

    def default_value(self) -> Any:
        """A fresh copy of the default (None where the key has none)."""
        return None if self.default is MISSING else copy.deepcopy(self.default)


def _section(cls):
    return dataclass(frozen=True, kw_only=True)(cls)


# ---------------------------------------------------------------------------------------------
# the core sections (taggerflow.config validates their semantics)

@_section
class Top:
    name: str
    seed: int
    inputs: dict
    classes: dict
    spectrum: dict
    resampling: dict
    features: dict
    train_sample: dict
    records: dict
    training: dict
    export: dict
    demo: dict | None = None        # generated inputs instead of inputs.datasets
    scaling: dict = field(default_factory=dict)
    evaluation: dict | None = None
    control: dict | None = None     # the adversary's control sample: taggerflow.control_sample


@_section
class Demo:
    datasets: dict
    tree: str = "candidates"
    family: str = "tau"             # tau (taggerflow/demo.py) | llp (taggerflow/demo_llp.py, with control)
    control: dict | None = None


@_section
class DemoDataset:
    # pt_scale, eta_width, class_fractions: required for the tau family; process, parameters: llp
    n_files: int
    entries_per_file: int
    pt_scale: float | None = None
    eta_width: float | None = None
    class_fractions: dict | None = None
    process: str | None = None
    parameters: dict | None = None


@_section
class DemoControl:
    shift: dict
    datasets: dict


@_section
class DemoControlShift:
    variable: str
    amount: float


@_section
class DemoControlDataset:
    n_files: int
    entries_per_file: int
    is_data: bool
    pt_scale: float | None = None


@_section
class Inputs:
    format: str
    tree: str | None = None         # None: the format's (taggerflow.readers)
    datasets: dict | None = None
    chunk_size: int = 100_000
    selection: str | None = None
    aliases: dict | None = None
    luminosity_invpb: float | None = None


@_section
class InputDataset:
    files: list
    format: str | None = None       # None: inputs.format
    # event weights and their normalisation: taggerflow/event_weights.py
    weight: str | None = None
    cross_section_pb: float | None = None
    sum_of_weights: str | dict | None = None
    # signal model parameters (e.g. {m_H: 125, m_S: 40}): efficiency maps
    parameters: dict | None = None


@_section
class Classes:
    truth_branch: str
    labels: dict


@_section
class Spectrum:
    pt_fine: dict
    abs_eta_fine: dict


@_section
class Axis:
    start: float
    stop: float
    n_bins: int


@_section
class Resampling:
    n_jobs: int
    pt_bins: list
    eta_bins: list
    class_ratio: dict
    enable_emptybin: bool = False
    mix_buffer: int = 10_000
    mix_streams: int = 8
    groups: list | None = None      # None: one group per dataset
    lastbin_takeall: bool = False
    lastbin_disbalance: float = 1.0
    refill_spectrum: bool = False
    pt_range: list | None = None
    abs_eta_range: list | None = None
    output_format: str = "root"
    compression_level: int | None = None   # None: the shard format's (taggerflow.shards)
    disabled_branches: list | None = None


@_section
class Features:
    candidate: dict
    collections: dict | None = None


@_section
class CandidateVariable:
    scaling: str
    expression: str | None = None   # None: the variable's name
    limits: list | None = None
    default: float = 0.0
    selection: str | None = None
    categories: list | None = None


@_section
class Collection:
    n_max: int
    variables: dict
    sort_by: str | None = None
    cone: dict | None = None


@_section
class Cone:
    coef: float
    min_pt: float
    min_radius: float
    outer_dR: float
    deta: str = "deta"
    dphi: str = "dphi"


@_section
class CollectionVariable:
    scaling: str
    expression: str | None = None   # None: the variable's name
    limits: list | dict | None = None   # a mapping: per cone
    default: float = 0.0
    selection: str | None = None
    categories: list | None = None


@_section
class Scaling:
    log_step: int = 1


@_section
class TrainSample:
    split: dict
    precision: str = "float32"
    compression: str | None = "gzip"
    chunk_rows: int = 1024
    concat_jet_tracks: bool | list = False
    additional_labels: list | dict | None = None
    constituent_labels: dict | None = None
    weights: bool = False


@_section
class Split:
    train: float
    validation: float
    test: float


@_section
class Records:
    chunk_size: int
    add_vars: list | None = None


@_section
class Training:
    batch_size: int
    epochs: int
    learning_rate: float
    model: dict
    variants: list | None = None    # each: a name and overrides; validated merged, as a full section
    early_stopping_patience: int = 5
    shuffle_buffer: int = 20_000
    class_weights: str | dict | None = field(default=None, metadata={"nullable": True})
    lr_schedule: dict | None = None
    tensorboard: bool = False
    mlflow: bool = True
    source: str = "records"         # the TFRecords (ToRecords) or the HDF5 files
    # None: where the files carry flattening weights
    use_sample_weights: bool | None = field(default=None, metadata={"nullable": True})
    event_weights: bool = False
    adversary: dict | None = None   # keys: taggerflow.adversary_config


@_section
class LRSchedule:
    type: str
    decay_steps: int | None = None  # None: the schedule's (taggerflow.training.learning_rate)
    decay_rate: float = 0.9
    alpha: float = 0.0


@_section
class Evaluation:
    signals: list
    working_points: list
    pt_bins: list | None = None
    eta_bins: list | None = None
    event_weights: bool = False


@_section
class Export:
    n_check: int
    tolerance: float
    sequence_names: dict | None = None


#: pattern -> section, for the core sections
CORE = {
    "": Top,
    "demo": Demo,
    "demo.datasets.*": DemoDataset,
    "demo.control": DemoControl,
    "demo.control.shift": DemoControlShift,
    "demo.control.datasets.*": DemoControlDataset,
    "inputs": Inputs,
    "inputs.datasets.*": InputDataset,
    "classes": Classes,
    "spectrum": Spectrum,
    "spectrum.pt_fine": Axis,
    "spectrum.abs_eta_fine": Axis,
    "resampling": Resampling,
    "features": Features,
    "features.candidate.*": CandidateVariable,
    "features.collections.*": Collection,
    "features.collections.*.cone": Cone,
    "features.collections.*.variables.*": CollectionVariable,
    "scaling": Scaling,
    "train_sample": TrainSample,
    "train_sample.split": Split,
    "records": Records,
    "training": Training,
    "training.lr_schedule": LRSchedule,
    "evaluation": Evaluation,
    "export": Export,
}


# ---------------------------------------------------------------------------------------------
# sections -> keys

_NONE = type(None)


def _accepted(annotation: Any) -> TypeSpec:
    """The isinstance() types of an annotation: ``float`` accepts int too; ``X | None`` adds null."""
    if annotation is Any:
        return (object,)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        out: tuple = ()
        for arg in typing.get_args(annotation):
            out += tuple(t for t in _accepted(arg) if t not in out)
        return out
    origin = typing.get_origin(annotation) or annotation
    if origin is float:
        return (int, float)
    if origin is None:
        return (_NONE,)
    return (origin,)


def yaml_key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def keys_of(section: type) -> dict[str, Key]:
    """{YAML key: Key} of a section dataclass, in declaration order."""
    hints = typing.get_type_hints(section)
    out = {}
    for f in dataclasses.fields(section):
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = MISSING
        types_ = _accepted(hints[f.name])
        if default is None and len(types_) > 1 and not f.metadata.get("nullable"):
            types_ = tuple(t for t in types_ if t is not _NONE)   # None stands for absent, not for null
        out[yaml_key(f)] = Key(types_[0] if len(types_) == 1 else types_, default is MISSING, default)
    return out


def from_legacy(pattern: str, spec: dict) -> type:
    """A section dataclass from the legacy form ``{key: (types, required[, default])}``: an optional
    key without a default gets None (absent)."""
    fields = []
    for key, entry in spec.items():
        types_, required = entry[0], entry[1]
        types_ = types_ if isinstance(types_, tuple) else (types_,)
        name = key if key.isidentifier() and not keyword.iskeyword(key) else f"{key}_".replace("-", "_")
        annotation = typing.Union[types_] if len(types_) > 1 else types_[0]
        if required:
            fields.append((name, annotation, field(metadata={"key": key})))
            continue
        default = entry[2] if len(entry) > 2 else None
        meta = {"key": key, "nullable": default is None and _NONE in types_}   # legacy: null listed
        if default is not None and not isinstance(default, (bool, int, float, str)):
            f = field(default_factory=lambda d=default: copy.deepcopy(d), metadata=meta)
        else:
            f = field(default=default, metadata=meta)
        if default is None and _NONE not in types_:
            annotation = typing.Union[types_ + (_NONE,)]
        fields.append((name, annotation, f))
    cls_name = "".join(p.capitalize() for p in pattern.replace("*", "each").replace("_", ".").split(".")) or "Section"
    return dataclasses.make_dataclass(cls_name, fields, frozen=True, kw_only=True)


# ---------------------------------------------------------------------------------------------
# the registry

_REGISTRY: dict[str, dict[str, Key]] | None = None
_CLASSES: dict[str, type] = {}


def _extension_sections() -> dict[str, dict]:
    """The legacy-form sections of the registered modules (imported here, when first needed)."""
    from taggerflow import formats, model_families
    from taggerflow.scaling import types as scaling_types

    out: dict = {}
    out.update(formats.schemas())
    out.update(model_families.schemas())   # training.model: the union of the families' keys
    for module in scaling_types.TYPES.values():
        out.update(getattr(module, "SCHEMA", {}))
    for name in ("taggerflow.adversary_config", "taggerflow.control_config"):
        import importlib

        out.update(getattr(importlib.import_module(name), "SCHEMA", {}))
    return out


def register(pattern: str, section: type | dict) -> None:
    """Add (or replace) the section of ``pattern``: a dataclass, or a legacy-form dict."""
    regs = sections()
    cls = section if isinstance(section, type) else from_legacy(pattern, section)
    _CLASSES[pattern] = cls
    regs[pattern] = keys_of(cls)
    parent, _, last = pattern.rpartition(".")
    if last != "*" and parent in regs and last not in regs[parent]:
        regs[parent][last] = Key((dict, _NONE), False, None)   # the module's section is optional


def sections() -> dict[str, dict[str, Key]]:
    """{pattern: {key: Key}} of every section, core and registered."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = {}
        for pattern, cls in CORE.items():
            _CLASSES[pattern] = cls
            _REGISTRY[pattern] = keys_of(cls)
        for pattern, spec in _extension_sections().items():
            register(pattern, spec)
    return _REGISTRY


def default(pattern: str, key: str) -> Any:
    """The default of one key (for code that builds a section's mapping itself)."""
    return sections()[pattern][key].default_value()


def section_class(pattern: str) -> type:
    sections()
    return _CLASSES[pattern]


# ---------------------------------------------------------------------------------------------
# resolution: defaults filled in

def expand(data: Any, parts: list[str], where: str = ""):
    """(key path, value) of every mapping ``parts`` (a pattern split at '.') matches in ``data``."""
    if not parts:
        yield where, data
        return
    if not isinstance(data, dict):
        return
    head, rest = parts[0], parts[1:]
    keys = list(data) if head == "*" else ([head] if head in data else [])
    for key in keys:
        yield from expand(data[key], rest, f"{where}.{key}" if where else str(key))


def fill_defaults(data: dict, root: str = "", normalise: bool = False) -> dict:
    """``data`` (the mapping at pattern ``root``, validated) with every absent key of every section
    below it set to its default (None where it has none), in place. ``normalise``: numbers of
    float keys as floats (``1`` and ``1.0`` are one value)."""
    regs = sections()
    prefix = root + "." if root else ""
    patterns = [p for p in regs if p == root or (p.startswith(prefix) if root else True)]
    # shallow patterns first: a section filled with a default mapping is then filled itself
    for pattern in sorted(patterns, key=lambda p: p.count(".") + (p != "")):
        rel = pattern[len(prefix):] if pattern != root else ""
        for _, value in list(expand(data, rel.split(".") if rel else [])):
            if not isinstance(value, dict):
                continue
            for key, spec in regs[pattern].items():
                if key not in value:
                    value[key] = spec.default_value()
                elif normalise and spec.types == (int, float) and isinstance(value[key], int) \
                        and not isinstance(value[key], bool):
                    value[key] = float(value[key])
    return data


def typed(pattern: str, mapping: dict):
    """The section dataclass instance of a resolved mapping (keys beyond the schema's: an error)."""
    cls = section_class(pattern)
    by_key = {yaml_key(f): f.name for f in dataclasses.fields(cls)}
    return cls(**{by_key[k]: v for k, v in mapping.items()})


# ---------------------------------------------------------------------------------------------
# checking a mapping against a section (the error type of every configuration problem)


class ConfigError(ValueError):
    """A configuration problem; the message names the file and the key (taggerflow.config)."""


def legacy_schema() -> dict:
    """The schema in the legacy form ``{top key: (types, required), "_sub": {pattern: {key: (types,
    required)}}}`` (for modules that check a section of their own against a core one)."""
    regs = sections()
    as_tuples = {p: {k: (key.types, key.required) for k, key in keys.items()} for p, keys in regs.items()}
    return {**as_tuples.pop(""), "_sub": as_tuples}


def _type_name(t: Any) -> str:
    if isinstance(t, tuple):
        return " or ".join(_type_name(x) for x in t)
    return {dict: "a mapping", list: "a list", str: "a string", int: "an integer", float: "a number",
            bool: "true/false", type(None): "null"}.get(t, t.__name__)


def check_section(data: Any, spec: dict, where: str, path: str) -> None:
    """ConfigError naming ``path`` and the key unless ``data`` is a mapping of ``spec``'s keys
    (each a :class:`Key` or a legacy ``(types, required[, default])``) with values of their types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {where or 'top level'}: expected a mapping, got {type(data).__name__}")
    for key in data:
        if key not in spec:
            allowed = ", ".join(sorted(spec))
            raise ConfigError(f"{path}: {join_key(where, key)}: unknown key (allowed: {allowed})")
    for key, entry in spec.items():
        types_, required = (entry.types, entry.required) if isinstance(entry, Key) else entry[:2]
        if key not in data:
            if required:
                raise ConfigError(f"{path}: {join_key(where, key)}: missing required key")
            continue
        value = data[key]
        ok = isinstance(value, types_) and not (isinstance(value, bool) and types_ in (int, (int, float)))
        if not ok:
            raise ConfigError(f"{path}: {join_key(where, key)}: expected {_type_name(types_)}, "
                              f"got {value!r}")


def join_key(where: str, key: str) -> str:
    return f"{where}.{key}" if where else str(key)
