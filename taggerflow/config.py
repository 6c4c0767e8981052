"""Configuration: load a YAML file, validate every key, and expose what the stages need.

The schema lives here and only here. Errors name the file and the key path, e.g.
``configs/default.yaml: features.candidate.pt.scaling: unknown scaling type 'norm'``.
"""

from __future__ import annotations

import copy
import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from taggerflow import formats as format_modules
from taggerflow import model_families, schema
from taggerflow.expressions import EXPRESSION_FUNCTIONS, expression_names  # noqa: F401  (config.expression_names)
from taggerflow.scaling import types as scaling_types
from taggerflow.scaling.types import one_hot
from taggerflow.adversary_config import validate_adversary_section
from taggerflow.control_config import validate_control_section
# ConfigError and the legacy-form section check live in taggerflow.schema, so that the modules that
# check a section of their own (taggerflow.control_config) need not import this one
from taggerflow.schema import ConfigError, check_section as _check_section, join_key as _join  # noqa: F401
from taggerflow.utils import config_hash

SCALING_TYPES = scaling_types.NAMES
PRECISIONS = ("float16", "float32")
COMPRESSIONS = (None, "gzip", "lzf")
MODEL_TYPES = model_families.NAMES
LR_SCHEDULES = ("constant", "exponential", "cosine")
TRAINING_SOURCES = ("records", "h5")  # training.source: the TFRecords (ToRecords) or the HDF5 files


def _validate_structure(raw: dict, path: str) -> None:
    _check_tree(raw, "", "", path)
    # each training variant is a full training section once merged with the base one; the base is
    # valid, so what fails comes from the variant and is named under training.variants[i]
    for i, merged in enumerate(_merged_variants(raw, path)):
        _check_tree(merged, "training", f"training.variants[{i}]", path, exclude=("variants",))


def _check_tree(data: dict, root: str, where: str, path: str, exclude: tuple[str, ...] = ()) -> None:
    """Check ``data``, the mapping at pattern ``root``, against every section at and below it; key
    paths are reported under ``where``. '*' in a pattern matches every key of a mapping."""
    regs = schema.sections()
    prefix = root + "." if root else ""
    for pattern, keys in regs.items():
        if pattern == root:
            _check_section(data, {k: v for k, v in keys.items() if k not in exclude}, where, path)
        elif pattern.startswith(prefix):
            for at, value in schema.expand(data, pattern[len(prefix):].split(".")):
                _check_section(value, keys, _join(where, at), path)


def _merged_variants(raw: dict, path: str) -> list[dict]:
    """The training variants, each the base ``training`` section with its overrides (no 'name')."""
    base = {k: v for k, v in raw["training"].items() if k != "variants"}
    variants = raw["training"].get("variants") or [{"name": "default"}]
    out = []
    for i, var in enumerate(variants):
        if not isinstance(var, dict) or "name" not in var:
            raise ConfigError(f"{path}: training.variants[{i}]: needs a 'name'")
        out.append(_deep_merge(copy.deepcopy(base), {k: v for k, v in var.items() if k != "name"}))
    return out


# ---------------------------------------------------------------------------------------------
GLOBAL_CONE = "global"
CONES = ("inner", "outer")


@dataclass(frozen=True)
class Variable:
    """One input variable: its name, the expression computing it, and how it is scaled.
    ``limits`` maps a cone name ('global', or 'inner'/'outer' for a collection with a cone) to
    (low, high) or None (unbounded)."""

    name: str
    expression: str
    scaling: str
    limits: dict
    default: float
    names_used: tuple[str, ...]
    #: an expression over the same fields: values where it is false are left out of the scaling
    #: statistics (counted as ``cut``), e.g. to keep sentinel values such as -999 out of the mean/std
    selection: str | None = None
    selection_names: tuple[str, ...] = ()
    #: for a one_hot indicator (taggerflow.scaling.types.one_hot): (configured variable, code expression, code)
    one_hot: tuple | None = None

    @property
    def all_names_used(self) -> tuple[str, ...]:
        """The fields read by the expression and the selection."""
        return self.names_used + tuple(n for n in self.selection_names if n not in self.names_used)

    def limits_for(self, cone: str = GLOBAL_CONE) -> tuple[float, float] | None:
        if cone in self.limits:
            return self.limits[cone]
        return self.limits.get(GLOBAL_CONE)


@dataclass(frozen=True)
class Cone:
    """Signal cone r = max(coef / max(pt, min_pt), min_radius); inner: dR <= r; outer:
    r < dR < outer_dR. dR from the constituent variables ``deta``/``dphi`` (relative to the candidate)."""

    coef: float
    min_pt: float
    min_radius: float
    outer_dR: float
    deta: str = "deta"
    dphi: str = "dphi"


_ABS_SORT = re.compile(r"\s*abs\(\s*(\w+)\s*\)\s*")


@dataclass(frozen=True)
class Collection:
    name: str
    n_max: int
    sort_by: str | None
    variables: tuple[Variable, ...]
    cone: Cone | None = None

    @property
    def variable_names(self) -> list[str]:
        return [v.name for v in self.variables]

    @property
    def cones(self) -> tuple[str, ...]:
        return CONES if self.cone is not None else (GLOBAL_CONE,)

    @property
    def sort_field(self) -> str | None:
        """The constituent field ``sort_by`` orders by (``abs(d0_sig)`` -> ``d0_sig``)."""
        m = _ABS_SORT.fullmatch(self.sort_by or "")
        return m.group(1) if m else self.sort_by

    @property
    def sort_abs(self) -> bool:
        """Whether constituents are ordered by the absolute value of ``sort_field``."""
        return bool(_ABS_SORT.fullmatch(self.sort_by or ""))

    def sequence_name(self, cone: str) -> str:
        """Name of the model input (and training-file group) of this collection in one cone."""
        return self.name if cone == GLOBAL_CONE else f"{self.name}_{cone}"


def _is_glob(pattern: str) -> bool:
    """Whether a file pattern has glob characters (in a URL: in its path, not its ``?`` query)."""
    if "://" in pattern:
        rest = pattern.split("://", 1)[1]
        pattern = rest.split("/", 1)[-1].split("?", 1)[0]
    return any(ch in pattern for ch in "*?[")


def _split_location(path: str) -> tuple[str, str]:
    """(server, path) of a URL ``root://host//dir/f.root`` -> ('root://host', '/dir/f.root'); ('', path)
    for a local path."""
    if "://" not in path:
        return "", os.path.abspath(path)
    scheme, rest = path.split("://", 1)
    host, _, p = rest.partition("/")
    return f"{scheme}://{host}", "/" + p.split("?", 1)[0].lstrip("/")


def _common_dir(files: list[str]) -> tuple[str, str] | None:
    """(server, the deepest directory holding all of ``files``): local paths, or URLs of one server."""
    locations = [_split_location(f) for f in files]
    if not locations or len({server for server, _ in locations}) != 1:
        return None
    return locations[0][0], os.path.commonpath([os.path.dirname(p) for _, p in locations])


def _relative_to(path: str, root: tuple[str, str]) -> str | None:
    server, directory = root
    s, p = _split_location(path)
    if s != server or not p.startswith(directory.rstrip("/") + "/"):
        return None
    return os.path.relpath(p, directory).replace(os.sep, "/")


@dataclass
class Config:
    """A validated configuration. ``raw`` is the YAML content; the properties are derived views."""

    raw: dict
    path: str
    base_dir: Path = field(init=False)
    _dataset_files: dict[str, list[str]] | None = field(default=None, init=False, repr=False, compare=False)
    _dataset_roots: dict[str, tuple[str, str] | None] | None = field(default=None, init=False, repr=False, compare=False)
    _resolved: dict | None = field(default=None, init=False, repr=False, compare=False)
    _normalised: dict | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.base_dir = Path(self.path).resolve().parent

    # -- identity ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.raw["name"]

    @property
    def seed(self) -> int:
        return int(self.raw["seed"])

    def section(self, key: str) -> Any:
        return self.raw.get(key)

    @property
    def resolved(self) -> dict:
        """The configuration with every default filled in (taggerflow.schema): absent keys hold
        their default, None where a key has none; ``training.variants`` holds every variant as a
        full training section (with its 'name'). Read-only: shared by all tasks."""
        if self._resolved is None:
            self._resolved = _resolve(self.raw, normalise=False)
        return self._resolved

    def settings(self, pattern: str, *keys: str):
        """The typed section (taggerflow.schema dataclass) at ``pattern``, e.g.
        ``cfg.settings("resampling").lastbin_disbalance``; ``keys`` fill the '*' of the pattern
        (``cfg.settings("features.candidate.*", "pt")``)."""
        node = self.resolved
        names = iter(keys)
        for part in pattern.split(".") if pattern else []:
            node = node[next(names) if part == "*" else part]
        return schema.typed(pattern, node)

    def sections_hash(self, sections: tuple[str, ...]) -> str:
        """Hash of the resolved sections a task depends on (defaults filled in, numbers of float
        keys as floats): a changed section gives a new output path; writing a default out does not."""
        if self._normalised is None:
            self._normalised = _resolve(self.raw, normalise=True)
        return config_hash({s: self._normalised.get(s) for s in sorted(set(sections))})

    # -- inputs ----------------------------------------------------------------------------
    @property
    def is_demo(self) -> bool:
        return "demo" in self.raw

    @property
    def tree(self) -> str:
        return self.resolved["inputs"]["tree"] or "candidates"   # the candidate tree (and shards') name

    @property
    def chunk_size(self) -> int:
        return int(self.resolved["inputs"]["chunk_size"])

    @property
    def dataset_names(self) -> list[str]:
        src = self.raw["demo"]["datasets"] if self.is_demo else self.raw["inputs"]["datasets"]
        return list(src)

    def dataset_files(self) -> dict[str, list[str]]:
        """Input files per dataset (non-demo configs), globs expanded relative to the config: as
        expanded when the configuration was loaded (:func:`load_config`), else expanded now."""
        if self._dataset_files is None:
            self._dataset_files = self._expand_dataset_files()
        return {name: list(files) for name, files in self._dataset_files.items()}

    def _expand_dataset_files(self) -> dict[str, list[str]]:
        out = {}
        for name, spec in self.raw["inputs"]["datasets"].items():
            files: list[str] = []
            for pattern in spec["files"]:
                pattern = os.path.expandvars(os.path.expanduser(str(pattern)))
                if "://" in pattern:
                    if not _is_glob(pattern):
                        files.append(pattern)
                        continue
                    from taggerflow.xrootd_store import glob_urls

                    try:
                        matched = glob_urls(pattern)
                    except Exception as e:  # the server's listing failed: unreachable, no such directory
                        raise ConfigError(f"{self.path}: inputs.datasets.{name}.files: cannot list "
                                          f"'{pattern}' ({type(e).__name__}: {str(e).strip()})") from None
                    if not matched:
                        raise ConfigError(f"{self.path}: inputs.datasets.{name}.files: "
                                          f"no file matches '{pattern}'")
                    files.extend(matched)
                    continue
                if not os.path.isabs(pattern):
                    pattern = str(self.base_dir / pattern)
                matched = sorted(glob.glob(pattern))
                if not matched:
                    raise ConfigError(f"{self.path}: inputs.datasets.{name}.files: "
                                      f"no file matches '{pattern}'")
                files.extend(matched)
            out[name] = files
        return out

    def stored_input_path(self, path: str, dataset: str | None) -> str:
        """How outputs record the input file ``path`` of ``dataset``: ``<dataset>/<path relative to
        the dataset's root>``, the root being the deepest directory holding all of the dataset's
        files, so that the same files read from another directory, another mount or an XRootD
        server (``root://host//...``) give the same bytes; a file below the data directory (the
        demo inputs) as :func:`taggerflow.paths.portable_path` stores it."""
        from taggerflow.paths import DATA_PREFIX, portable_path

        stored = portable_path(path, self.base_dir)
        if self.is_demo or stored.startswith(DATA_PREFIX) or dataset not in self.dataset_names:
            return stored
        if self._dataset_roots is None:
            self._dataset_roots = {ds: _common_dir(files) for ds, files in self.dataset_files().items()}
        root = self._dataset_roots.get(dataset)
        rel = _relative_to(path, root) if root is not None else None
        return stored if rel is None else f"{dataset}/{rel}"

    def resolve_stored_input(self, stored: str) -> str:
        """The file an output's ``stored`` input path (:meth:`stored_input_path`) names, with this
        configuration's inputs (where they are read from now)."""
        from taggerflow.paths import resolve_path

        dataset, _, rel = stored.partition("/")
        if not self.is_demo and dataset in self.dataset_names and rel:
            for path in self.dataset_files()[dataset]:
                if self.stored_input_path(path, dataset) == stored:
                    return path
        return resolve_path(stored, self.base_dir)

    # -- classes ---------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return list(self.raw["classes"]["labels"])

    @property
    def truth_branch(self) -> str:
        return self.raw["classes"]["truth_branch"]

    @property
    def truth_codes(self) -> dict[str, list[int]]:
        return {k: [int(x) for x in v] for k, v in self.raw["classes"]["labels"].items()}

    # -- features --------------------------------------------------------------------------
    @property
    def candidate_variables(self) -> tuple[Variable, ...]:
        return _variables(self.raw["features"]["candidate"])

    @property
    def collections(self) -> tuple[Collection, ...]:
        out = []
        for name, spec in (self.raw["features"].get("collections") or {}).items():
            variables = _variables(spec["variables"])
            cone = Cone(**{k: (float(v) if k not in ("deta", "dphi") else v) for k, v in spec["cone"].items()}) \
                if spec.get("cone") else None
            out.append(Collection(name, int(spec["n_max"]), spec.get("sort_by"), variables, cone))
        return tuple(out)

    def sequences(self) -> list[tuple[str, Collection, str]]:
        """The constituent inputs of the model: (input name, collection, cone). A collection with a
        cone gives two inputs, '<name>_inner' and '<name>_outer', each scaled with its cone's values."""
        return [(c.sequence_name(cone), c, cone) for c in self.collections for cone in c.cones]

    def required_branches(self) -> dict[str, str]:
        """Input branch -> the config key that needs it (for error messages)."""
        need: dict[str, str] = {"pt": "spectrum", "eta": "spectrum", "event": "train_sample.split",
                                self.truth_branch: "classes.truth_branch"}
        for var in self.candidate_variables:
            for n in var.all_names_used:
                need.setdefault(n, f"features.candidate.{var.name}")
        for coll in self.collections:
            for var in coll.variables:
                for n in var.all_names_used:
                    branch = n[len("cand_"):] if n.startswith("cand_") else f"{coll.name}_{n}"
                    need.setdefault(branch, f"features.collections.{coll.name}.variables.{var.name}")
            if coll.sort_by:
                need.setdefault(f"{coll.name}_{coll.sort_field}", f"features.collections.{coll.name}.sort_by")
            if coll.cone is not None:
                for field in (coll.cone.deta, coll.cone.dphi):
                    need.setdefault(f"{coll.name}_{field}", f"features.collections.{coll.name}.cone")
        return need

    # -- training --------------------------------------------------------------------------
    def training_variants(self) -> list[dict]:
        """The training configurations as written (base `training` with each variant's overrides;
        :meth:`resolved` has them with the defaults filled in)."""
        variants = self.raw["training"].get("variants") or [{"name": "default"}]
        return [{**merged, "name": var["name"]}
                for var, merged in zip(variants, _merged_variants(self.raw, self.path))]

    def resolved_variants(self) -> list[dict]:
        """:meth:`training_variants` with every default of the training section filled in."""
        return copy.deepcopy(self.resolved["training"]["variants"])


def _resolve(raw: dict, normalise: bool) -> dict:
    """``raw`` with the defaults filled in (taggerflow.schema.fill_defaults), the training variants
    as full training sections."""
    out = schema.fill_defaults(copy.deepcopy(raw), normalise=normalise)
    variants = raw["training"].get("variants") or [{"name": "default"}]
    merged = [schema.fill_defaults(m, "training", normalise=normalise)
              for m in _merged_variants(raw, "<resolved>")]
    out["training"]["variants"] = [{**m, "variants": None, "name": v["name"]} for v, m in zip(variants, merged)]
    return out


def resolve_training(variant: dict) -> dict:
    """A training section or variant (a mapping, validated or built in code) with the defaults of
    taggerflow.schema filled in, as a copy."""
    return schema.fill_defaults(copy.deepcopy(variant), "training")


def _deep_merge(base: dict, override: dict) -> dict:
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_merge(base[k], v)
        else:
            base[k] = v
    return base


def _variables(specs: dict) -> tuple[Variable, ...]:
    """The model's variables of a features section: a one_hot variable gives one per category."""
    out: list[Variable] = []
    for name, spec in specs.items():
        out += one_hot.expand(name, spec, _variable) if spec["scaling"] == one_hot.SCALING else [_variable(name, spec)]
    return tuple(out)


def _variable(name: str, spec: dict, one_hot: tuple | None = None) -> Variable:
    expr = spec.get("expression", name)
    raw = spec.get("limits")
    if isinstance(raw, dict):
        limits = {cone: (tuple(float(x) for x in lim) if lim is not None else None) for cone, lim in raw.items()}
    else:
        limits = {GLOBAL_CONE: tuple(float(x) for x in raw) if raw is not None else None}
    sel = spec.get("selection")
    return Variable(name=name, expression=expr, scaling=spec["scaling"], limits=limits,
                    default=float(spec.get("default", schema.default("features.candidate.*", "default"))), names_used=expression_names(expr),
                    selection=sel, selection_names=expression_names(sel) if sel else (), one_hot=one_hot)


# ---------------------------------------------------------------------------------------------
def _validate_semantics(cfg: Config) -> None:
    p, raw = cfg.path, cfg.raw

    def err(key: str, msg: str) -> ConfigError:
        return ConfigError(f"{p}: {key}: {msg}")

    if not cfg.is_demo and not raw["inputs"].get("datasets"):
        raise err("inputs.datasets", "needed when there is no 'demo' section")
    _validate_inputs(cfg, err)

    classes = cfg.class_names
    if len(classes) < 2:
        raise err("classes.labels", "at least two classes are needed")
    seen: dict[int, str] = {}
    for name, codes in raw["classes"]["labels"].items():
        if not isinstance(codes, list) or not codes or not all(isinstance(c, int) for c in codes):
            raise err(f"classes.labels.{name}", "expected a non-empty list of integer truth values")
        for c in codes:
            if c in seen:
                raise err(f"classes.labels.{name}", f"truth value {c} is also used by class '{seen[c]}'")
            seen[c] = name

    _validate_signal_parameters(raw, err)
    if cfg.is_demo and cfg.resolved["demo"]["family"] != "tau":
        from taggerflow.demo_llp import validate_demo_section

        try:
            validate_demo_section(raw["demo"], classes)
        except ValueError as exc:
            raise err(*str(exc).split(": ", 1)) from None
    elif cfg.is_demo:
        for ds, spec in raw["demo"]["datasets"].items():
            missing = [k for k in ("pt_scale", "eta_width", "class_fractions") if k not in spec]
            if missing or "control" in raw["demo"]:
                raise err(f"demo.datasets.{ds}" if missing else "demo.control",
                          f"missing {', '.join(missing)}" if missing else "only for demo.family: llp")
            for cls in spec["class_fractions"]:
                if cls not in classes:
                    raise err(f"demo.datasets.{ds}.class_fractions.{cls}", "class without a label in classes.labels")
            if spec["n_files"] < 1 or spec["entries_per_file"] < 1:
                raise err(f"demo.datasets.{ds}", "n_files and entries_per_file must be >= 1")

    for axis in ("pt_fine", "abs_eta_fine"):
        a = raw["spectrum"][axis]
        if a["n_bins"] < 1 or a["stop"] <= a["start"]:
            raise err(f"spectrum.{axis}", "needs n_bins >= 1 and stop > start")

    rs = raw["resampling"]
    if rs["n_jobs"] < 1:
        raise err("resampling.n_jobs", "must be >= 1")
    for key, fine in (("pt_bins", "pt_fine"), ("eta_bins", "abs_eta_fine")):
        edges = rs[key]
        if len(edges) < 2 or any(not isinstance(e, (int, float)) for e in edges) or \
                any(b <= a for a, b in zip(edges, edges[1:])):
            raise err(f"resampling.{key}", "expected at least two increasing numbers")
        f = raw["spectrum"][fine]
        width = (f["stop"] - f["start"]) / f["n_bins"]
        for e in edges:
            k = (e - f["start"]) / width
            if abs(k - round(k)) > 1e-6 or not (-1e-9 <= k <= f["n_bins"] + 1e-9):
                raise err(f"resampling.{key}", f"edge {e} does not lie on an edge of spectrum.{fine}")
    for cls, r in rs["class_ratio"].items():
        if cls not in classes:
            raise err(f"resampling.class_ratio.{cls}", "class without a label in classes.labels")
        if not isinstance(r, (int, float)) or isinstance(r, bool) or (r < 0 and r != -1):
            raise err(f"resampling.class_ratio.{cls}", "expected a number >= 0, or -1 (take all)")
    _validate_resampling(cfg, err)

    # the deployment contract: C++ must reproduce Keras' scores to 1e-5 at worst
    tol = raw["export"]["tolerance"]
    if not 0 < tol <= 1e-5:
        raise err("export.tolerance", f"expected 0 < tolerance <= 1e-05 (the lwtnn agreement required for "
                                      f"deployment), got {tol}")
    if raw["export"]["n_check"] < 1:
        raise err("export.n_check", f"expected at least 1 candidate, got {raw['export']['n_check']}")

    def check_var(key: str, spec: dict, name: str, cones: tuple[str, ...] = (GLOBAL_CONE,)) -> None:
        if spec["scaling"] not in SCALING_TYPES:
            raise err(f"{key}.scaling", f"unknown scaling type '{spec['scaling']}' "
                                        f"(allowed: {', '.join(SCALING_TYPES)})")
        (one_hot.check if spec["scaling"] == one_hot.SCALING else one_hot.check_not_one_hot)(key, spec, err)
        lim = spec.get("limits")
        if isinstance(lim, dict):
            if cones == (GLOBAL_CONE,):
                raise err(f"{key}.limits", "limits per cone need a 'cone' in the collection")
            for cone in lim:
                if cone not in cones:
                    raise err(f"{key}.limits.{cone}", f"unknown cone (allowed: {', '.join(cones)})")
            missing = [c for c in cones if c not in lim]
            if missing:
                raise err(f"{key}.limits", f"no limits for cone(s) {', '.join(missing)}")
            per_cone = {f"{key}.limits.{c}": v for c, v in lim.items()}
        else:
            per_cone = {f"{key}.limits": lim}
        for where, lim in per_cone.items():
            if lim is not None:
                if spec["scaling"] not in ("linear", "normal"):
                    raise err(where, f"limits make no sense for scaling '{spec['scaling']}'")
                if not isinstance(lim, list) or len(lim) != 2 or \
                        not all(isinstance(x, (int, float)) for x in lim) or lim[1] <= lim[0]:
                    raise err(where, "expected [low, high] with low < high")
            elif spec["scaling"] == "linear":
                raise err(where, "linear scaling needs limits [a, b]")
        try:
            expression_names(spec.get("expression", name))
        except (SyntaxError, ValueError) as e:
            raise err(f"{key}.expression", f"invalid expression: {e}") from None
        if "selection" in spec:
            try:
                expression_names(spec["selection"])
            except (SyntaxError, ValueError) as e:
                raise err(f"{key}.selection", f"invalid expression: {e}") from None

    for name, spec in raw["features"]["candidate"].items():
        check_var(f"features.candidate.{name}", spec, name)
    for cname, cspec in (raw["features"].get("collections") or {}).items():
        if cspec["n_max"] < 1:
            raise err(f"features.collections.{cname}.n_max", "must be >= 1")
        sort_by = cspec.get("sort_by")
        if sort_by is not None and not (re.fullmatch(r"\w+", sort_by) or _ABS_SORT.fullmatch(sort_by)):
            raise err(f"features.collections.{cname}.sort_by",
                      f"'{sort_by}': expected a field of the collection, or abs(<field>)")
        cone = cspec.get("cone")
        if cone is not None:
            if not (cone["outer_dR"] > 0 and cone["min_radius"] >= 0 and cone["min_pt"] > 0
                    and cone["min_radius"] < cone["outer_dR"]):
                raise err(f"features.collections.{cname}.cone",
                          "needs min_pt > 0 and 0 <= min_radius < outer_dR")
        for name, spec in cspec["variables"].items():
            check_var(f"features.collections.{cname}.variables.{name}", spec, name,
                      CONES if cone is not None else (GLOBAL_CONE,))
    for key, variables in [("features.candidate", cfg.candidate_variables)] + \
            [(f"features.collections.{c.name}.variables", c.variables) for c in cfg.collections]:
        names = [v.name for v in variables]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise err(key, f"variable '{twice[0]}' is defined twice (a one_hot indicator has the name of "
                           f"another variable: rename one)")
    if cfg.resolved["scaling"]["log_step"] < 1:
        raise err("scaling.log_step", "must be >= 1")

    ts = cfg.resolved["train_sample"]
    split = ts["split"]
    if any(v < 0 for v in split.values()) or abs(sum(split.values()) - 1) > 1e-9 or split["train"] <= 0:
        raise err("train_sample.split", "fractions must be >= 0, sum to 1, with train > 0")
    if ts["precision"] not in PRECISIONS:
        raise err("train_sample.precision", f"expected one of {PRECISIONS}")
    if ts["compression"] not in COMPRESSIONS:
        raise err("train_sample.compression", "expected null, gzip or lzf")
    if ts["chunk_rows"] < 1:
        raise err("train_sample.chunk_rows", "must be >= 1")
    cand_names = [v.name for v in cfg.candidate_variables]   # one_hot: the indicators' names
    coll_specs = raw["features"].get("collections") or {}
    concat = ts["concat_jet_tracks"]
    if isinstance(concat, list):
        for v in concat:
            if v not in cand_names:
                raise err("train_sample.concat_jet_tracks", f"'{v}' is not a candidate variable "
                                                            f"(features.candidate: {', '.join(cand_names)})")
        if len(set(concat)) != len(concat):
            raise err("train_sample.concat_jet_tracks", "variables must be unique")
    if concat:
        if not coll_specs:
            raise err("train_sample.concat_jet_tracks", "needs at least one collection in features.collections")
        for cname, cspec in coll_specs.items():
            clash = [v for v in (cand_names if concat is True else concat) if v in cspec["variables"]]
            if clash:
                raise err("train_sample.concat_jet_tracks", f"candidate variable(s) {clash} have the name of "
                                                            f"variables of collection '{cname}': rename one")
    extra = ts.get("additional_labels") or []
    pairs = list(extra.items()) if isinstance(extra, dict) else [(x, x) for x in extra]
    for name, expr in pairs:
        if not isinstance(name, str) or not isinstance(expr, str) or not name or not expr:
            raise err("train_sample.additional_labels", f"expected branch names or expressions (strings), "
                                                        f"got {name!r}: {expr!r}")
        try:
            expression_names(expr)
        except (SyntaxError, ValueError) as e:
            raise err(f"train_sample.additional_labels.{name}", f"invalid expression: {e}") from None
    if len({n for n, _ in pairs}) != len(pairs):
        raise err("train_sample.additional_labels", "names must be unique")
    for cname, fields in (ts.get("constituent_labels") or {}).items():
        if cname not in coll_specs:
            raise err(f"train_sample.constituent_labels.{cname}", "not a collection in features.collections")
        if not isinstance(fields, list) or not fields or \
                not all(isinstance(x, str) and x.isidentifier() for x in fields) or len(set(fields)) != len(fields):
            raise err(f"train_sample.constituent_labels.{cname}",
                      "expected a non-empty list of distinct constituent branch names (fields of the collection)")
    if raw["records"]["chunk_size"] < 1:
        raise err("records.chunk_size", "must be >= 1")
    for v in raw["records"].get("add_vars") or []:
        if v not in cand_names:
            raise err("records.add_vars", f"'{v}' is not a candidate variable (features.candidate: "
                                          f"{', '.join(cand_names)})")

    for i, variant in enumerate(cfg.resolved_variants()):
        # name the key where the value comes from: the variant's override or the base section
        overrides = (raw["training"].get("variants") or [{}])[i]
        where = f"training.variants[{i}]" if "model" in overrides or "epochs" in overrides or \
            "batch_size" in overrides else "training"
        model_families.validate(variant["model"], cfg, lambda key, msg: err(f"{where}.model.{key}", msg))
        if variant["epochs"] < 1 or variant["batch_size"] < 1:
            raise err(where, "epochs and batch_size must be >= 1")
        cw = variant.get("class_weights")
        if isinstance(cw, str) and cw != "balanced":
            raise err(f"{where}.class_weights", "expected 'balanced', null or {class: weight}")
        if isinstance(cw, dict):
            for cls, w in cw.items():
                if cls not in classes:
                    raise err(f"{where}.class_weights.{cls}", "class without a label in classes.labels")
                if not isinstance(w, (int, float)) or w < 0:
                    raise err(f"{where}.class_weights.{cls}", "expected a number >= 0")
        def key_of(k: str) -> str:  # the variant's override, or the base section
            return f"training.variants[{i}].{k}" if k in overrides else f"training.{k}"

        if variant["source"] not in TRAINING_SOURCES:
            raise err(key_of("source"), f"unknown source {variant['source']!r} (allowed: "
                                        f"{', '.join(TRAINING_SOURCES)})")
        usw = variant.get("use_sample_weights")
        if usw is not None and not isinstance(usw, bool):
            raise err(key_of("use_sample_weights"), f"expected true, false or null (auto), got {usw!r}")
        if usw is True and not ts["weights"]:
            raise err(key_of("use_sample_weights"), "true needs train_sample.weights: true (the flattening "
                                                    "weights in jets/weights)")
        if variant.get("event_weights") and not _has_event_weights(cfg):
            raise err(key_of("event_weights"), _NO_EVENT_WEIGHTS)
        if variant.get("adversary") is not None:
            problem = validate_adversary_section(variant["adversary"], key_of("adversary"), classes, cand_names)
            if problem:
                raise err(*problem)
        sched = variant.get("lr_schedule")
        if sched is not None and sched["type"] not in LR_SCHEDULES:
            raise err(f"{where}.lr_schedule.type", f"unknown schedule '{sched['type']}' (allowed: {LR_SCHEDULES})")
    names = [v["name"] for v in cfg.training_variants()]
    if len(set(names)) != len(names):
        raise err("training.variants", "variant names must be unique")
    ev = raw.get("evaluation")
    if ev is not None:
        for i, sig in enumerate(ev["signals"]):
            if sig not in classes:
                raise err(f"evaluation.signals[{i}]", f"'{sig}' is not a class in classes.labels")
        for i, wp in enumerate(ev["working_points"]):
            if not isinstance(wp, (int, float)) or not 0 < wp <= 1:
                raise err(f"evaluation.working_points[{i}]", "expected a signal efficiency in (0, 1]")
        if ev.get("event_weights") and not _has_event_weights(cfg):
            raise err("evaluation.event_weights", _NO_EVENT_WEIGHTS)
        for key in ("pt_bins", "eta_bins"):
            edges = ev.get(key)
            if edges is not None and (len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:]))):
                raise err(f"evaluation.{key}", "expected at least two increasing numbers")
    sequences = [n for n, _, _ in cfg.sequences()]
    for seq in (raw["export"].get("sequence_names") or {}):
        if seq not in sequences:
            raise err(f"export.sequence_names.{seq}", f"not a constituent input (inputs: {', '.join(sequences)})")
    validate_control_section(cfg, err)


_NO_EVENT_WEIGHTS = ("true needs event weights in the training files: inputs.datasets.<ds>.weight "
                     "(and/or cross_section_pb)")


def _has_event_weights(cfg: Config) -> bool:
    from taggerflow.event_weights import weights_configured

    return weights_configured(cfg)


INPUT_FORMATS = format_modules.NAMES
OUTPUT_FORMATS = ("root", "hdf5")


def _validate_signal_parameters(raw: dict, err) -> None:
    """Per-dataset signal parameters (inputs.datasets.*.parameters, demo.datasets.*.parameters):
    numbers, the same keys for every dataset that has them (taggerflow/signal_scan.py)."""
    from taggerflow.signal_scan import validate_parameters

    for where in ("inputs.datasets", "demo.datasets"):
        section, name = raw, where.split(".")
        for part in name:
            section = section.get(part) if isinstance(section, dict) else None
        params = {ds: spec["parameters"] for ds, spec in (section or {}).items() if "parameters" in spec}
        try:
            validate_parameters(params, where)
        except ValueError as exc:
            raise err(*str(exc).split(": ", 1)) from None


def _validate_inputs(cfg: Config, err) -> None:
    """inputs: formats and their sections (taggerflow/formats/), selection and aliases (expressions), URLs."""
    inp = cfg.raw["inputs"]
    format_modules.validate(cfg, err)   # formats known, each format's section (taggerflow/formats/)
    for ds, spec in (inp.get("datasets") or {}).items():
        for pattern in spec["files"]:
            if not isinstance(pattern, str):
                raise err(f"inputs.datasets.{ds}.files", f"expected path strings, got {pattern!r}")
            if "://" in pattern and not pattern.startswith(("root://", "xroot://")) and _is_glob(pattern):
                raise err(f"inputs.datasets.{ds}.files", f"'{pattern}': globs are expanded on root:// URLs "
                          "only (through the server's listing); list the files")
    if inp.get("selection") is not None:
        try:
            expression_names(inp["selection"])
        except (SyntaxError, ValueError) as e:
            raise err("inputs.selection", f"invalid expression: {e}") from None
    for name, expr in (inp.get("aliases") or {}).items():
        if not isinstance(name, str) or not name.isidentifier() or name in EXPRESSION_FUNCTIONS:
            raise err(f"inputs.aliases.{name}", "alias names must be identifiers (and not function names)")
        if not isinstance(expr, str):
            raise err(f"inputs.aliases.{name}", f"expected an expression string, got {expr!r}")
        try:
            expression_names(expr)
        except (SyntaxError, ValueError) as e:
            raise err(f"inputs.aliases.{name}", f"invalid expression: {e}") from None
    if "chunk_size" in inp and inp["chunk_size"] < 1:
        raise err("inputs.chunk_size", "must be >= 1")
    from taggerflow.event_weights import validate as validate_event_weights

    validate_event_weights(cfg, err)


def _validate_resampling(cfg: Config, err) -> None:
    """resampling: groups, takeall options, ranges, mixing and output options."""
    import fnmatch
    import re

    rs, classes = cfg.raw["resampling"], cfg.class_names
    groups = rs.get("groups")
    if groups is not None:
        if not groups:
            raise err("resampling.groups", "expected at least one group (or leave the key out: one group per dataset)")
        names = set()
        for i, g in enumerate(groups):
            where = f"resampling.groups[{i}]"
            if not isinstance(g, dict):
                raise err(where, "expected {name, dataset, file, classes}")
            for key in g:
                if key not in ("name", "dataset", "file", "classes"):
                    raise err(f"{where}.{key}", "unknown key (allowed: classes, dataset, file, name)")
            for key in ("name", "dataset", "file", "classes"):
                if key not in g:
                    raise err(f"{where}.{key}", "missing required key")
            if not isinstance(g["name"], str) or not re.fullmatch(r"[A-Za-z0-9_]+", g["name"]):
                raise err(f"{where}.name", "expected a name of letters, digits and _")
            if g["name"] in names:
                raise err(f"{where}.name", f"group '{g['name']}' is defined twice")
            names.add(g["name"])
            for key in ("dataset", "file"):
                try:
                    re.compile(str(g[key]))
                except re.error as e:
                    raise err(f"{where}.{key}", f"invalid regular expression: {e}") from None
            if not isinstance(g["classes"], list) or not g["classes"]:
                raise err(f"{where}.classes", "expected a non-empty list of classes")
            for c in g["classes"]:
                if c not in classes:
                    raise err(f"{where}.classes", f"'{c}' is not a class in classes.labels")
        provided = {c for g in groups for c in g["classes"]}
        for cls, r in rs["class_ratio"].items():
            if r != 0 and cls not in provided:
                raise err(f"resampling.class_ratio.{cls}", f"no group in resampling.groups provides class '{cls}'")
    if rs.get("lastbin_takeall") and len(rs["pt_bins"]) < 3:
        raise err("resampling.lastbin_takeall", "needs at least two pt bins (the last one is taken whole)")
    if cfg.settings("resampling").lastbin_disbalance <= 0:
        raise err("resampling.lastbin_disbalance", "must be > 0")
    for key, edges in (("pt_range", rs["pt_bins"]), ("abs_eta_range", rs["eta_bins"])):
        rng = rs.get(key)
        if rng is None:
            continue
        if len(rng) != 2 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in rng) \
                or rng[1] <= rng[0]:
            raise err(f"resampling.{key}", "expected [low, high] with low < high")
        if rng[0] < edges[0] or rng[1] > edges[-1]:
            raise err(f"resampling.{key}", f"must lie within the bins [{edges[0]}, {edges[-1]}]")
    res = cfg.resolved["resampling"]
    for key in ("mix_buffer", "mix_streams"):
        if res[key] < 1:
            raise err(f"resampling.{key}", "must be >= 1")
    if res["output_format"] not in OUTPUT_FORMATS:
        raise err("resampling.output_format", f"expected one of {', '.join(OUTPUT_FORMATS)}")
    if "compression_level" in rs:
        lo, hi = (1, 22) if res["output_format"] == "root" else (0, 9)
        if not lo <= rs["compression_level"] <= hi:
            raise err("resampling.compression_level", f"expected {lo} to {hi} for "
                      f"{res['output_format']} shards (ZSTD for root, gzip for hdf5), "
                      f"got {rs['compression_level']}")
    try:
        required = cfg.required_branches() if rs.get("disabled_branches") else {}
    except (SyntaxError, ValueError):
        required = {}  # an invalid feature expression: reported, with its key, by the feature checks
    for pat in rs.get("disabled_branches") or []:
        if not isinstance(pat, str):
            raise err("resampling.disabled_branches", f"expected branch names or patterns, got {pat!r}")
        for b, key in required.items():
            if fnmatch.fnmatchcase(b, pat):
                raise err("resampling.disabled_branches", f"'{pat}' disables branch '{b}', needed by {key}")


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate a configuration file; raises ConfigError naming file and key."""
    path = str(path)
    if not os.path.exists(path):
        raise ConfigError(f"{path}: configuration file not found")
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    _validate_structure(raw, path)
    cfg = Config(raw=raw, path=path)
    _validate_semantics(cfg)
    # input globs are expanded (and an empty one reported) now, not when a task first needs them;
    # except inside a batch job (law sets LAW_JOB_HOME): the submitting side checked them, and a job
    # that never reads the inputs (a training on a GPU node) must not need to see them
    if not cfg.is_demo and not os.environ.get("LAW_JOB_HOME"):
        cfg.dataset_files()
    return cfg


def config_from_dict(raw: dict, path: str = "<dict>") -> Config:
    """Validate an in-memory configuration (tests, programmatic use)."""
    raw = copy.deepcopy(raw)
    _validate_structure(raw, path)
    cfg = Config(raw=raw, path=path)
    _validate_semantics(cfg)
    return cfg
