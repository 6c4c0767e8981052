"""Feature scaling: per-variable moments computed in parallel jobs and merged exactly.

Moments are kept in float64 as (count, mean, M2) and merged with Chan et al.'s pairwise formula,
so the merged result equals a single pass over all data to rounding (the peers' sum/sum-of-squares
merge of rounded means loses a std of 0.5 around a mean of 50 entirely). NaN and inf values are
excluded from the moments and counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from taggerflow.config import Config
from taggerflow.io import candidate_features, collection_features, open_tree, read_range

GLOBAL_CONE = "global"


class ScalingError(ValueError):
    """Scaling cannot be computed or applied; names the variable (type.variable.cone)."""


@dataclass
class Moments:
    num: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    nan: int = 0
    inf: int = 0

    @classmethod
    def of(cls, x: np.ndarray) -> "Moments":
        x = np.asarray(x, dtype=np.float64).ravel()
        nan = int(np.count_nonzero(np.isnan(x)))
        inf = int(np.count_nonzero(np.isinf(x)))
        if nan or inf:
            x = x[np.isfinite(x)]
        if len(x) == 0:
            return cls(nan=nan, inf=inf)
        mean = float(x.mean())
        d = x - mean
        return cls(num=len(x), mean=mean, m2=float(np.dot(d, d)), min=float(x.min()), max=float(x.max()),
                   nan=nan, inf=inf)

    def merge(self, other: "Moments") -> "Moments":
        """Chan's parallel update: exact up to float64 rounding, order-independent in exact arithmetic."""
        n = self.num + other.num
        if other.num == 0:
            mean, m2 = self.mean, self.m2
        elif self.num == 0:
            mean, m2 = other.mean, other.m2
        else:
            delta = other.mean - self.mean
            mean = self.mean + delta * other.num / n
            m2 = self.m2 + other.m2 + delta * delta * self.num * other.num / n
        return Moments(n, mean, m2, min(self.min, other.min), max(self.max, other.max),
                       self.nan + other.nan, self.inf + other.inf)

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.num) if self.num > 0 else float("nan")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["min"] = None if math.isinf(self.min) else self.min
        d["max"] = None if math.isinf(self.max) else self.max
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Moments":
        return cls(int(d["num"]), float(d["mean"]), float(d["m2"]),
                   math.inf if d["min"] is None else float(d["min"]),
                   -math.inf if d["max"] is None else float(d["max"]), int(d["nan"]), int(d["inf"]))


def variable_types(cfg: Config) -> dict[str, list]:
    """Variable type -> its variables: 'candidate' and one entry per constituent collection."""
    out = {"candidate": list(cfg.candidate_variables)}
    for coll in cfg.collections:
        out[coll.name] = list(coll.variables)
    return out


def accumulate(cfg: Config, shard_paths: Iterable[str]) -> dict:
    """Moments of every variable over the given shards: {type: {var: {cone: Moments}}}."""
    acc = {t: {v.name: {GLOBAL_CONE: Moments()} for v in vs} for t, vs in variable_types(cfg).items()}
    for path in shard_paths:
        t = open_tree(path, cfg.tree)
        branches = sorted({b for b in cfg.required_branches() if b in t.keys()})
        for chunk in read_range(path, cfg.tree, branches, 0, t.num_entries, cfg.chunk_size):
            x = candidate_features(chunk, cfg.candidate_variables)
            for i, var in enumerate(cfg.candidate_variables):
                m = acc["candidate"][var.name]
                m[GLOBAL_CONE] = m[GLOBAL_CONE].merge(Moments.of(x[:, i]))
            for coll in cfg.collections:
                flat, _ = collection_features(chunk, coll)
                for i, var in enumerate(coll.variables):
                    m = acc[coll.name][var.name]
                    m[GLOBAL_CONE] = m[GLOBAL_CONE].merge(Moments.of(flat[:, i]))
    return acc


def statistics_to_json(stats: dict) -> dict:
    return {t: {v: {c: m.to_dict() for c, m in cones.items()} for v, cones in vs.items()} for t, vs in stats.items()}


def statistics_from_json(d: dict) -> dict:
    return {t: {v: {c: Moments.from_dict(m) for c, m in cones.items()} for v, cones in vs.items()} for t, vs in d.items()}


def merge_statistics(jobs: list[dict], sources: list[str] | None = None) -> dict:
    """Merge job results ({type: {var: {cone: Moments}}}); all jobs must have the same keys."""
    if not jobs:
        raise ScalingError("no job results to merge")
    ref = _keys(jobs[0])
    for i, job in enumerate(jobs[1:], 1):
        if _keys(job) != ref:
            name = sources[i] if sources else f"job {i}"
            diff = sorted(ref ^ _keys(job))
            raise ScalingError(f"{name}: variables differ from the first job's: {diff[:5]}")
    out = {}
    for t, vs in jobs[0].items():
        out[t] = {}
        for v, cones in vs.items():
            out[t][v] = {}
            for c in cones:
                m = Moments()
                for job in jobs:
                    m = m.merge(job[t][v][c])
                out[t][v][c] = m
    return out


def _keys(stats: dict) -> set[str]:
    return {f"{t}.{v}.{c}" for t, vs in stats.items() for v, cones in vs.items() for c in cones}


def scaling_parameters(cfg: Config, stats: dict) -> dict:
    """The scaling file content: {type: {var: {cone: {mean, std, lim_min, lim_max, num, nan, inf}}}}.
    lim_min/lim_max are in scaled units; null means unbounded."""
    out: dict = {}
    for t, variables in variable_types(cfg).items():
        out[t] = {}
        for var in variables:
            out[t][var.name] = {}
            for cone, m in stats[t][var.name].items():
                key = f"{t}.{var.name}.{cone}"
                if var.scaling in ("no_scaling", "categorical"):
                    mean, std, lo, hi = 0.0, 1.0, None, None
                elif var.scaling == "linear":
                    a, b = var.limits
                    mean, std, lo, hi = (a + b) / 2, (b - a) / 2, -1.0, 1.0
                else:  # normal
                    if m.num < 2:
                        raise ScalingError(f"{key}: 'normal' scaling needs at least 2 finite values, "
                                           f"found {m.num} (nan: {m.nan}, inf: {m.inf})")
                    std = m.std
                    if not std > 0:
                        raise ScalingError(f"{key}: 'normal' scaling of a constant variable (std = 0, "
                                           f"value {m.mean}); use no_scaling or categorical")
                    mean = m.mean
                    lo, hi = var.limits if var.limits is not None else (None, None)
                out[t][var.name][cone] = {"mean": mean, "std": std, "lim_min": lo, "lim_max": hi,
                                          "num": m.num, "nan": m.nan, "inf": m.inf,
                                          "scaling": var.scaling, "default": var.default}
    return out


def scaling_arrays(scaling: dict, type_name: str, variables: list[str], cone: str = GLOBAL_CONE
                   ) -> tuple[np.ndarray, ...]:
    """mean, std, lim_min, lim_max, default arrays in the given variable order (±inf = unbounded)."""
    try:
        entries = [scaling[type_name][v][cone] for v in variables]
    except KeyError as e:
        raise ScalingError(f"scaling file has no entry for {type_name}.{e.args[0]}") from None
    mean = np.array([e["mean"] for e in entries], dtype=np.float64)
    std = np.array([e["std"] for e in entries], dtype=np.float64)
    lo = np.array([-np.inf if e["lim_min"] is None else e["lim_min"] for e in entries], dtype=np.float64)
    hi = np.array([np.inf if e["lim_max"] is None else e["lim_max"] for e in entries], dtype=np.float64)
    default = np.array([e.get("default", 0.0) for e in entries], dtype=np.float64)
    return mean, std, lo, hi, default


def apply_scaling(x: np.ndarray, mean, std, lo, hi, default) -> np.ndarray:
    """(x - mean) / std, clamped to [lo, hi]; NaN (and inf left unbounded by the limits) -> default."""
    y = (np.asarray(x, dtype=np.float64) - mean) / std
    y = np.clip(y, lo, hi)
    return np.where(np.isfinite(y), y, default)
