"""Feature scaling: per-variable moments computed in parallel jobs and merged exactly.

Moments are kept in float64 as (count, mean, M2) and merged with Chan et al.'s pairwise formula,
so the merged result equals a single pass over all data to rounding (the peers' sum/sum-of-squares
merge of rounded means loses a std of 0.5 around a mean of 50 entirely). NaN and inf values are
excluded from the moments and counted.

Cones. A constituent collection with a ``cone`` has its moments computed per cone: 'inner'
(dR <= r(pt)) and 'outer' (r < dR < outer_dR); constituents at dR >= outer_dR are in no cone and
are excluded (their number is reported as ``outside_cones``). Without a cone: 'global'.

One FeatureScaling job (:func:`feature_scaling_job`) streams its files chunk by chunk and returns
a JSON-able dict with

* ``moments``: {type: {var: {cone: {num, mean, m2, min, max, nan, inf, cut}}}} over all its files
  (``cut``: values left out by the variable's ``selection``);
* ``per_file``: per input file its entries, its own moments and its quantiles (below);
* ``snapshots``: the cumulative moments after every ``log_step`` files (and after the last one),
  for convergence studies;
* ``signature``: the variables, expressions, scaling types, limits and cones it was computed with
  (:func:`merge_jobs` refuses to merge jobs whose signatures or keys differ).

Per-file quantiles (median, min, max and the quantiles at the normal-CDF probabilities
Phi(+-1), Phi(+-2), Phi(+-3), Phi(+-5)) are computed in bounded memory per input (candidate, or
collection and cone) and file:

* **exact** while the file's rows of that input fit ``quantile_cap`` (default 32768): all values are
  kept and ``numpy.quantile`` (linear interpolation) is used;
* beyond the cap: the ``tail_size`` (default 4096) smallest and largest finite values of every
  variable are kept exactly, so every quantile whose interpolation ranks lie within the outermost
  ``tail_size`` ranks is still exact (Phi(+-3) up to 3 million values per file, Phi(+-5) up to
  10^10); the other quantiles come from a deterministic uniform sample without replacement of
  ``quantile_cap`` rows (bottom-k of a 64-bit hash of the row's index within the file: the sample
  does not depend on the chunk size, and the same file gives the same sample every time).
  The rank of such an estimate has a standard deviation of sqrt(p (1 - p) / cap) in probability:
  0.0028 at the median, 0.0020 at Phi(+-1), 0.00082 at Phi(+-2) for the default cap. Estimated
  quantiles are listed per variable in ``approximate``; min and max are always exact.

Memory per input and file is bounded by about (2 cap (n_vars + 1) + 4 tail_size n_vars) * 8 bytes
(7 MB for 10 variables with the defaults), whatever the file size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import awkward as ak
import numpy as np

from taggerflow.cones import cone_masks
from taggerflow.config import Config
from taggerflow.io import check_branches, evaluate, open_tree, read_range
from taggerflow.paths import portable_path
from taggerflow.utils import stable_hash64

GLOBAL_CONE = "global"
CANDIDATE = "candidate"
# name of the candidate inputs in the training files and in the exported umami / UPP dictionaries
EXPORT_CANDIDATE_NAME = "jets"
JOB_FORMAT = "taggerflow.feature_scaling/1"
DEFAULT_QUANTILE_CAP = 32768
DEFAULT_TAIL_SIZE = 4096


def _phi(x: float) -> float:
    """Standard normal CDF (erfc form: accurate in the far tails)."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


#: quantile name -> probability: the median and the normal-CDF probabilities Phi(+-1, 2, 3, 5)
QUANTILES: dict[str, float] = {"q_m5": _phi(-5), "q_m3": _phi(-3), "q_m2": _phi(-2), "q_m1": _phi(-1),
                               "median": 0.5,
                               "q_p1": _phi(1), "q_p2": _phi(2), "q_p3": _phi(3), "q_p5": _phi(5)}


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
    #: values left out by the variable's ``selection`` (neither counted in num nor in nan/inf)
    cut: int = 0

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
                       self.nan + other.nan, self.inf + other.inf, self.cut + other.cut)

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
                   -math.inf if d["max"] is None else float(d["max"]), int(d["nan"]), int(d["inf"]),
                   int(d.get("cut", 0)))


def variable_types(cfg: Config) -> dict[str, list]:
    """Variable type -> its variables: 'candidate' and one entry per constituent collection."""
    out = {CANDIDATE: list(cfg.candidate_variables)}
    for coll in cfg.collections:
        out[coll.name] = list(coll.variables)
    return out


def type_cones(cfg: Config) -> dict[str, tuple[str, ...]]:
    """Variable type -> its cones: ('global',) for the candidate and collections without a cone."""
    out = {CANDIDATE: (GLOBAL_CONE,)}
    for coll in cfg.collections:
        out[coll.name] = coll.cones
    return out


def input_name(type_name: str, cone: str) -> str:
    """Unambiguous name of one (type, cone): 'candidate', 'pfcand' or 'pfcand_inner'."""
    return type_name if cone == GLOBAL_CONE else f"{type_name}_{cone}"


def export_name(type_name: str, cone: str) -> str:
    """Name of one (type, cone) in the training files and exported dictionaries: 'jets' for the
    candidate, the sequence name ('pfcand', 'pfcand_inner') for a collection."""
    return EXPORT_CANDIDATE_NAME if type_name == CANDIDATE else input_name(type_name, cone)


# ---------------------------------------------------------------------------------------------
# vectorised moments of k variables at once
class _MomentBlock:
    """Moments of k variables (float64 arrays), updated with (k, m) blocks of values."""

    __slots__ = ("num", "mean", "m2", "min", "max", "nan", "inf", "cut")

    def __init__(self, k: int):
        self.num = np.zeros(k, dtype=np.int64)
        self.mean = np.zeros(k)
        self.m2 = np.zeros(k)
        self.min = np.full(k, np.inf)
        self.max = np.full(k, -np.inf)
        self.nan = np.zeros(k, dtype=np.int64)
        self.inf = np.zeros(k, dtype=np.int64)
        self.cut = np.zeros(k, dtype=np.int64)

    def add(self, x: np.ndarray, cut: np.ndarray | None = None) -> bool:
        """Add a (k, m) C-contiguous block; returns whether all its values were finite. ``cut``: per
        row, how many of its values were set to NaN because they fail the variable's selection
        (they are counted as cut, not as NaN)."""
        k, m = x.shape
        if cut is not None and cut.any():
            self.cut = self.cut + cut
            self.nan = self.nan - cut   # the NaNs added below include them
        if m == 0:
            return True
        total = x.sum(axis=1)  # rows are contiguous: pairwise summation
        if np.isfinite(total).all():  # (a NaN or inf anywhere makes its row's sum non-finite)
            n = np.full(k, m, dtype=np.int64)
            mean = total / m
            d = x - mean[:, None]
            m2 = np.einsum("ij,ij->i", d, d)
            self._merge(n, mean, m2, np.minimum.reduce(x, axis=1), np.maximum.reduce(x, axis=1), 0, 0)
            return True
        finite = np.isfinite(x)
        n = np.zeros(k, dtype=np.int64)
        mean, m2 = np.zeros(k), np.zeros(k)
        mn, mx = np.full(k, np.inf), np.full(k, -np.inf)
        nan, inf = np.zeros(k, dtype=np.int64), np.zeros(k, dtype=np.int64)
        for j in range(k):
            xj, fj = x[j], finite[j]
            bad = m - int(np.count_nonzero(fj))
            if bad:
                nan[j] = int(np.count_nonzero(np.isnan(xj)))
                inf[j] = bad - nan[j]
                xj = xj[fj]
            if len(xj):
                n[j] = len(xj)
                mean[j] = xj.sum() / len(xj)
                d = xj - mean[j]
                m2[j] = np.einsum("i,i->", d, d)
                mn[j], mx[j] = xj.min(), xj.max()
        self._merge(n, mean, m2, mn, mx, nan, inf)
        return False

    def merge_block(self, other: "_MomentBlock") -> None:
        self._merge(other.num, other.mean, other.m2, other.min, other.max, other.nan, other.inf)
        self.cut = self.cut + other.cut

    def _merge(self, n, mean, m2, mn, mx, nan, inf) -> None:
        # the same operations, in the same order, as Moments.merge (so both give identical bits)
        a = self.num.astype(np.float64)
        b = np.asarray(n).astype(np.float64)
        tot = self.num + n
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = mean - self.mean
            new_mean = self.mean + delta * b / tot
            new_m2 = self.m2 + m2 + delta * delta * a * b / tot
        new_mean = np.where(b == 0, self.mean, np.where(a == 0, mean, new_mean))
        new_m2 = np.where(b == 0, self.m2, np.where(a == 0, m2, new_m2))
        self.num, self.mean, self.m2 = tot, new_mean, new_m2
        self.min = np.minimum(self.min, mn)
        self.max = np.maximum(self.max, mx)
        self.nan = self.nan + nan
        self.inf = self.inf + inf

    def copy(self) -> "_MomentBlock":
        c = _MomentBlock(0)
        for name in self.__slots__:
            setattr(c, name, getattr(self, name).copy())
        return c

    def moments(self, j: int) -> Moments:
        return Moments(int(self.num[j]), float(self.mean[j]), float(self.m2[j]), float(self.min[j]),
                       float(self.max[j]), int(self.nan[j]), int(self.inf[j]), int(self.cut[j]))


# ---------------------------------------------------------------------------------------------
# bounded-memory per-file quantiles
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _row_priority(ids: np.ndarray, seed: int) -> np.ndarray:
    """A 64-bit hash (splitmix64 finaliser) of row indices: i.i.d.-uniform-like sampling priorities."""
    with np.errstate(over="ignore"):
        z = ids.astype(np.uint64) + np.uint64(seed)
        z ^= z >> np.uint64(30)
        z *= _M1
        z ^= z >> np.uint64(27)
        z *= _M2
        z ^= z >> np.uint64(31)
    return z


def _lerp(a: float, b: float, t: float) -> float:
    """numpy.quantile's interpolation (its 'linear' method), for bit-identical exact results."""
    d = b - a
    return b - d * (1 - t) if t >= 0.5 else a + d * t


class _QuantileSketch:
    """Per-file quantiles of k variables in bounded memory (see the module docstring).

    Exact mode: every row is kept until more than ``cap`` rows were seen. Then sampling mode:
    a bottom-``cap`` sample by row-index hash (amortised: compacted when ``cap`` new rows are
    pending), and per variable the smallest/largest finite values: ``lo[j]`` holds every value below
    ``lo_thr[j]`` (the tail-th smallest at the last compaction, compacted back to ``tail`` values
    when it reaches 2 tail), so its sorted content is exactly the file's lowest ranks; ``hi`` alike.
    """

    def __init__(self, k: int, cap: int, tail: int, seed: int):
        self.k, self.cap, self.tail, self.seed = k, max(1, int(cap)), max(2, int(tail)), seed & 0x7FFFFFFFFFFFFFFF
        self.blocks: list[np.ndarray] = []  # exact mode: every value
        self.ids: list[np.ndarray] = []
        self.buffered = 0
        self.sampling = False
        self.sample = np.empty((k, 0))
        self.priority = np.empty(0, dtype=np.uint64)
        self.threshold = np.uint64(0xFFFFFFFFFFFFFFFF)
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.n_pending = 0
        self.lo: list[list[np.ndarray]] = [[] for _ in range(k)]
        self.hi: list[list[np.ndarray]] = [[] for _ in range(k)]
        self.lo_size = [0] * k
        self.hi_size = [0] * k
        self.lo_thr = np.full(k, np.inf)
        self.hi_thr = np.full(k, -np.inf)

    def add(self, x: np.ndarray, ids: np.ndarray, all_finite: bool) -> None:
        """x: (k, m) values; ids: (m,) row indices within the file (int64)."""
        if x.shape[1] == 0:
            return
        if not self.sampling:
            self.blocks.append(x)
            self.ids.append(ids)
            self.buffered += x.shape[1]
            if self.buffered > self.cap:
                self._start_sampling()
            return
        pri = _row_priority(ids, self.seed)
        idx = np.flatnonzero(pri < self.threshold)
        if len(idx):
            self.pending.append((_take_columns(x, idx), pri[idx]))
            self.n_pending += len(idx)
            if self.n_pending >= self.cap:
                self._compact()
        self._update_tails(x, all_finite)

    def _start_sampling(self) -> None:
        x = np.concatenate(self.blocks, axis=1) if len(self.blocks) > 1 else self.blocks[0]
        ids = np.concatenate(self.ids) if len(self.ids) > 1 else self.ids[0]
        self.blocks, self.ids, self.sampling = [], [], True
        self.pending, self.n_pending = [(x, _row_priority(ids, self.seed))], x.shape[1]
        self._compact()
        self._init_tails(x)

    def _init_tails(self, x: np.ndarray) -> None:
        """Exact tails of the buffered block. A cheap threshold from a strided subsample selects a
        superset of the tail values, which is then partitioned (checked: falls back to the full set)."""
        t, m = self.tail, x.shape[1]
        step = 8
        for j in range(self.k):
            xj = x[j]
            if not np.isfinite(xj).all():
                xj = xj[np.isfinite(xj)]
            n = len(xj)
            if n <= 2 * t:
                self.lo[j], self.lo_size[j] = [xj.copy()], n
                self.hi[j], self.hi_size[j] = [xj.copy()], n
                if n >= t:
                    part = np.partition(xj, (t - 1, n - t))
                    self.lo[j], self.hi[j] = [part[:t].copy()], [part[n - t:].copy()]
                    self.lo_size[j] = self.hi_size[j] = t
                    self.lo_thr[j], self.hi_thr[j] = part[t - 1], part[n - t]
                continue
            sub = xj[::step]
            r = min(len(sub) - 1, int(t / step + 4 * math.sqrt(t / step)) + 1)
            part = np.partition(sub, (r, len(sub) - 1 - r))
            for side, thr in ((0, part[r]), (1, part[len(sub) - 1 - r])):
                cand = xj[xj <= thr] if side == 0 else xj[xj >= thr]
                if len(cand) < t:  # the subsample was not representative: use everything
                    cand = xj
                if side == 0:
                    sel = np.partition(cand, t - 1)[:t]
                    self.lo[j], self.lo_size[j], self.lo_thr[j] = [sel], t, sel.max()
                else:
                    sel = np.partition(cand, len(cand) - t)[len(cand) - t:]
                    self.hi[j], self.hi_size[j], self.hi_thr[j] = [sel], t, sel.min()

    def _compact(self) -> None:
        xs = [self.sample] + [p[0] for p in self.pending]
        ps = [self.priority] + [p[1] for p in self.pending]
        x, pri = np.concatenate(xs, axis=1), np.concatenate(ps)
        self.pending, self.n_pending = [], 0
        if len(pri) > self.cap:
            keep = np.argpartition(pri, self.cap - 1)[:self.cap]
            x, pri = _take_columns(x, keep), pri[keep]
            self.threshold = pri.max()
        self.sample, self.priority = x, pri

    def _update_tails(self, x: np.ndarray, all_finite: bool) -> None:
        t = self.tail
        for j in range(self.k):
            xj = x[j]
            for side in (0, 1):
                thr = self.lo_thr if side == 0 else self.hi_thr
                cand = xj[xj < thr[j]] if side == 0 else xj[xj > thr[j]]
                if not len(cand):
                    continue
                if not all_finite:
                    cand = cand[np.isfinite(cand)]
                parts, sizes = (self.lo, self.lo_size) if side == 0 else (self.hi, self.hi_size)
                parts[j].append(cand)
                sizes[j] += len(cand)
                if sizes[j] >= 2 * t or (sizes[j] >= t and np.isinf(thr[j])):
                    merged = np.concatenate(parts[j])
                    if side == 0:
                        merged = np.partition(merged, t - 1)[:t]
                        thr[j] = merged.max()
                    else:
                        merged = np.partition(merged, len(merged) - t)[len(merged) - t:]
                        thr[j] = merged.min()
                    parts[j], sizes[j] = [merged], t

    def result(self, j: int, m: Moments) -> dict:
        """Quantiles of variable j over the file (m: its moments in this file)."""
        out: dict = {"n": m.num, "nan": m.nan, "inf": m.inf,
                     "min": None if m.num == 0 else m.min, "max": None if m.num == 0 else m.max}
        if m.num == 0:
            out.update({name: None for name in QUANTILES})
            out.update(exact=True, approximate=[], sample_size=0)
            return out
        if not self.sampling:
            v = np.concatenate([b[j] for b in self.blocks]) if self.blocks else np.empty(0)
            v = v[np.isfinite(v)]
            q = np.quantile(v, np.array(list(QUANTILES.values())))
            out.update({name: float(x) for name, x in zip(QUANTILES, q)})
            out.update(exact=True, approximate=[], sample_size=len(v))
            return out
        if self.pending:
            self._compact()
        n = m.num
        # exactly the min(tail, n) lowest / highest values: what is exact does not depend on the chunking
        lo = np.sort(np.concatenate(self.lo[j]))[:self.tail] if self.lo[j] else np.empty(0)
        hi = np.sort(np.concatenate(self.hi[j]))[-self.tail:] if self.hi[j] else np.empty(0)

        def at_rank(r: int) -> float | None:
            if r < len(lo):
                return float(lo[r])
            if r >= n - len(hi):
                return float(hi[r - (n - len(hi))])
            return None

        approx = []
        for name, p in QUANTILES.items():
            h = n * p + (1.0 - p) - 1.0  # numpy's virtual index for its 'linear' method
            i = int(math.floor(h))
            f = h - i
            a = at_rank(i)
            b = at_rank(min(i + 1, n - 1)) if f > 0 else a
            if a is not None and b is not None:
                out[name] = _lerp(a, b, f)
            else:
                approx.append(name)
        sample = self.sample[j]
        sample = sample[np.isfinite(sample)]
        if approx:
            q = np.quantile(sample, np.array([QUANTILES[a] for a in approx])) if len(sample) else [None] * len(approx)
            out.update({name: None if x is None else float(x) for name, x in zip(approx, q)})
        out.update(exact=not approx, approximate=approx, sample_size=len(sample))
        return out


# ---------------------------------------------------------------------------------------------
# one chunk: the raw values of every input
@dataclass(frozen=True)
class _Input:
    type_name: str
    cone: str
    names: tuple[str, ...]

    @property
    def name(self) -> str:
        return input_name(self.type_name, self.cone)


def _inputs(cfg: Config) -> list[_Input]:
    out = [_Input(CANDIDATE, GLOBAL_CONE, tuple(v.name for v in cfg.candidate_variables))]
    for coll in cfg.collections:
        for cone in coll.cones:
            out.append(_Input(coll.name, cone, tuple(coll.variable_names)))
    return out


def scaling_branches(cfg: Config) -> dict[str, str]:
    """The input branches a FeatureScaling job reads -> the config key that needs them."""
    need: dict[str, str] = {}
    for var in cfg.candidate_variables:
        for n in var.all_names_used:
            need.setdefault(n, f"features.candidate.{var.name}")
    for coll in cfg.collections:
        key = f"features.collections.{coll.name}"
        for var in coll.variables:
            for n in var.all_names_used:
                branch = n[len("cand_"):] if n.startswith("cand_") else f"{coll.name}_{n}"
                need.setdefault(branch, f"{key}.variables.{var.name}")
        need.setdefault(f"{coll.name}_{_count_field(coll)}", key)
        if coll.cone is not None:
            need.setdefault("pt", f"{key}.cone")
            need.setdefault(f"{coll.name}_{coll.cone.deta}", f"{key}.cone")
            need.setdefault(f"{coll.name}_{coll.cone.dphi}", f"{key}.cone")
    return need


def _count_field(coll) -> str:
    """A constituent field of the collection whose list lengths give the constituent counts."""
    for var in coll.variables:
        for name in var.names_used:
            if not name.startswith("cand_"):
                return name
    if coll.sort_by:
        return coll.sort_field
    if coll.cone is not None:
        return coll.cone.deta
    raise ScalingError(f"collection '{coll.name}': no variable reads a constituent branch")


class _ChunkArrays:
    """numpy views of one chunk's branches, each converted once (through the layout: the
    high-level awkward field access costs more than the arithmetic on small chunks)."""

    def __init__(self, chunk: ak.Array):
        self.chunk = chunk
        layout = chunk.layout
        self.record = layout if isinstance(layout, ak.contents.RecordArray) else None
        self._flat: dict[str, np.ndarray] = {}
        self._jagged: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._repeated: dict[str, np.ndarray] = {}

    def _field(self, branch: str):
        if self.record is not None and branch in self.record.fields:
            return self.record.content(branch)
        return None

    def flat(self, branch: str) -> np.ndarray:
        a = self._flat.get(branch)
        if a is None:
            lay = self._field(branch)
            if isinstance(lay, ak.contents.NumpyArray) and lay.data.ndim == 1:
                a = np.asarray(lay.data)
            else:
                a = ak.to_numpy(self.chunk[branch])
            self._flat[branch] = a
        return a

    def jagged(self, branch: str) -> np.ndarray:
        """The content of all lists of a jagged branch, concatenated."""
        r = self._jagged.get(branch)
        if r is None:
            lay = self._field(branch)
            if isinstance(lay, ak.contents.ListOffsetArray) and isinstance(lay.content, ak.contents.NumpyArray) \
                    and lay.content.data.ndim == 1:
                off = np.asarray(lay.offsets)
                r = (np.asarray(lay.content.data)[off[0]:off[-1]], off)
            else:
                arr = self.chunk[branch]
                counts = ak.to_numpy(ak.num(arr, axis=1)).astype(np.int64)
                r = (ak.to_numpy(ak.flatten(arr, axis=1)), np.concatenate([[0], np.cumsum(counts)]))
            self._jagged[branch] = r
        return r[0]

    def counts(self, branch: str) -> np.ndarray:
        """List lengths of a jagged branch."""
        self.jagged(branch)
        off = self._jagged[branch][1]
        return np.diff(off)

    def repeated(self, branch: str, counts: np.ndarray) -> np.ndarray:
        # keyed by the counts too: each collection has its own (the cache holds them, so ids stay unique)
        key = (branch, id(counts))
        if key not in self._repeated:
            self._repeated[key] = (counts, np.repeat(self.flat(branch), counts))
        return self._repeated[key][1]


def _take_columns(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """x[:, idx] as a C-contiguous array (row by row: faster than a 2-d take)."""
    out = np.empty((x.shape[0], len(idx)), dtype=x.dtype)
    for j in range(x.shape[0]):
        np.take(x[j], idx, out=out[j])
    return out


def _evaluate_into(out: np.ndarray, var, ns: dict) -> None:
    if len(var.names_used) == 1 and var.expression.strip() == var.names_used[0]:
        out[:] = ns[var.names_used[0]]
    else:
        with np.errstate(all="ignore"):  # NaN/inf results are counted and reported, not warned about
            out[:] = np.asarray(evaluate(var.expression, ns))


def _apply_selection(x: np.ndarray, i: int, var, ns: dict, rejected: np.ndarray | None) -> np.ndarray | None:
    """Set the values of row i of the (k, m) block ``x`` failing ``var.selection`` (evaluated on
    ``ns``) to NaN and mark them in ``rejected`` ((k, m) bool, made on first use); returns it."""
    with np.errstate(all="ignore"):
        keep = np.asarray(evaluate(var.selection, ns))
    bad = ~np.broadcast_to(keep if keep.dtype == np.bool_ else keep != 0, x[i].shape)
    if bad.any():
        if rejected is None:
            rejected = np.zeros(x.shape, dtype=np.bool_)
        rejected[i] = bad
        x[i][bad] = np.nan
    return rejected


def _candidate_block(variables, arrs: _ChunkArrays, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(k, n) raw values of the candidate variables and the (k, n) mask of values cut by their
    selections (None when nothing is cut); cut values are NaN in the block."""
    x = np.empty((len(variables), n))
    rejected = None
    for i, var in enumerate(variables):
        _evaluate_into(x[i], var, {name: arrs.flat(name) for name in var.names_used})
        if var.selection:
            rejected = _apply_selection(x, i, var, {name: arrs.flat(name) for name in var.selection_names},
                                        rejected)
    return x, rejected


def _collection_block(coll, arrs: _ChunkArrays) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(k, sum counts) raw values of one collection's variables, the counts per candidate and the
    (k, sum counts) mask of values cut by the variables' selections (None when nothing is cut)."""
    counts = arrs.counts(f"{coll.name}_{_count_field(coll)}")
    m = int(counts.sum())
    x = np.empty((len(coll.variables), m))

    def namespace(names) -> dict:
        ns = {}
        for name in names:
            if name.startswith("cand_"):
                ns[name] = arrs.repeated(name[len("cand_"):], counts)
            else:
                data = arrs.jagged(f"{coll.name}_{name}")
                if len(data) != m:
                    raise ScalingError(f"collection '{coll.name}': branch {coll.name}_{name} has "
                                       f"{len(data)} values, expected {m} (not the same counter?)")
                ns[name] = data
        return ns

    rejected = None
    for i, var in enumerate(coll.variables):
        _evaluate_into(x[i], var, namespace(var.names_used))
        if var.selection:
            rejected = _apply_selection(x, i, var, namespace(var.selection_names), rejected)
    return x, counts, rejected


# ---------------------------------------------------------------------------------------------
# the FeatureScaling job
def job_signature(cfg: Config) -> dict:
    """What a job's moments depend on and what the merge needs to agree: per type and variable its
    expression, scaling type and limits per cone; per collection its cone (or null)."""
    cones = type_cones(cfg)
    variables: dict = {}
    for t, vs in variable_types(cfg).items():
        variables[t] = {}
        for v in vs:
            lims = {}
            for c in cones[t]:
                lim = v.limits_for(c)
                lims[c] = None if lim is None else [float(lim[0]), float(lim[1])]
            variables[t][v.name] = {"expression": v.expression, "scaling": v.scaling, "limits": lims,
                                    "selection": v.selection}
    coll_cones = {c.name: (None if c.cone is None else asdict(c.cone)) for c in cfg.collections}
    return {"variables": variables, "cones": coll_cones}


def _log_step(cfg: Config, log_step: int | None) -> int:
    if log_step is None:
        log_step = int((cfg.section("scaling") or {}).get("log_step", 1))
    if log_step < 1:
        raise ScalingError(f"log_step must be >= 1, got {log_step}")
    return int(log_step)


def _stats_json(inputs: list[_Input], blocks: list[_MomentBlock]) -> dict:
    out: dict = {}
    for inp, blk in zip(inputs, blocks):
        tv = out.setdefault(inp.type_name, {})
        for j, name in enumerate(inp.names):
            tv.setdefault(name, {})[inp.cone] = blk.moments(j).to_dict()
    return out


def _scan(cfg: Config, shard_paths: Iterable[str], quantiles: bool, log_step: int,
          quantile_cap: int, tail_size: int) -> dict:
    inputs = _inputs(cfg)
    index = {(i.type_name, i.cone): n for n, i in enumerate(inputs)}
    colls = cfg.collections
    cand_vars = cfg.candidate_variables
    need = scaling_branches(cfg)
    branches = sorted(need)
    total = [_MomentBlock(len(i.names)) for i in inputs]
    per_file, snapshots, files = [], [], []
    outside_total = {c.name: 0 for c in colls if c.cone is not None}
    for n_file, path in enumerate(shard_paths, 1):
        stored = portable_path(path, cfg.base_dir)   # as stored: no absolute path of the data directory
        files.append(stored)
        tree = open_tree(path, cfg.tree)
        check_branches(tree, path, need)
        entries = int(tree.num_entries)
        blocks = [_MomentBlock(len(i.names)) for i in inputs]
        sketches = [_QuantileSketch(len(i.names), quantile_cap, tail_size,
                                    stable_hash64(f"quantile-sample:{cfg.seed}:{i.name}")) for i in inputs] \
            if quantiles else None
        outside = {c: 0 for c in outside_total}
        cand_offset = 0
        coll_offset = {c.name: 0 for c in colls}
        for chunk in read_range(path, cfg.tree, branches, 0, entries, cfg.chunk_size):
            arrs = _ChunkArrays(chunk)
            n = len(chunk)
            x, rejected = _candidate_block(cand_vars, arrs, n)
            k = index[(CANDIDATE, GLOBAL_CONE)]
            finite = blocks[k].add(x, None if rejected is None else np.count_nonzero(rejected, axis=1))
            if sketches is not None:
                sketches[k].add(x, np.arange(cand_offset, cand_offset + n, dtype=np.int64), finite)
            cand_offset += n
            for coll in colls:
                x, counts, rejected = _collection_block(coll, arrs)
                m = x.shape[1]
                if coll.cone is None:
                    k = index[(coll.name, GLOBAL_CONE)]
                    finite = blocks[k].add(x, None if rejected is None else np.count_nonzero(rejected, axis=1))
                    if sketches is not None:
                        off = coll_offset[coll.name]
                        sketches[k].add(x, np.arange(off, off + m, dtype=np.int64), finite)
                else:
                    deta = arrs.jagged(f"{coll.name}_{coll.cone.deta}")
                    dphi = arrs.jagged(f"{coll.name}_{coll.cone.dphi}")
                    masks = cone_masks(cand_pt=arrs.flat("pt"), deta=deta, dphi=dphi, counts=counts,
                                       cone=coll.cone)
                    in_cones = 0
                    for cone in coll.cones:
                        idx = np.flatnonzero(masks[cone])
                        in_cones += len(idx)
                        xc = _take_columns(x, idx)
                        k = index[(coll.name, cone)]
                        finite = blocks[k].add(xc, None if rejected is None else
                                               np.count_nonzero(rejected[:, idx], axis=1))
                        if sketches is not None:
                            sketches[k].add(xc, idx + coll_offset[coll.name], finite)
                    outside[coll.name] += m - in_cones
                coll_offset[coll.name] += m
        for blk, tot in zip(blocks, total):
            tot.merge_block(blk)
        for c, v in outside.items():
            outside_total[c] += v
        if quantiles:
            q: dict = {}
            for inp, blk, sk in zip(inputs, blocks, sketches):
                tv = q.setdefault(inp.type_name, {})
                for j, name in enumerate(inp.names):
                    tv.setdefault(name, {})[inp.cone] = sk.result(j, blk.moments(j))
            per_file.append({"file": stored, "entries": entries, "outside_cones": outside,
                             "moments": _stats_json(inputs, blocks), "quantiles": q})
            del sketches
        if n_file % log_step == 0:
            snapshots.append({"n_files": n_file, "file": stored, "moments": _stats_json(inputs, total)})
    if files and (not snapshots or snapshots[-1]["n_files"] != len(files)):
        snapshots.append({"n_files": len(files), "file": files[-1], "moments": _stats_json(inputs, total)})
    return {"inputs": inputs, "total": total, "files": files, "per_file": per_file, "snapshots": snapshots,
            "outside_cones": outside_total}


def feature_scaling_job(cfg: Config, shard_paths: Sequence[str], log_step: int | None = None,
                        quantile_cap: int = DEFAULT_QUANTILE_CAP, tail_size: int = DEFAULT_TAIL_SIZE) -> dict:
    """One FeatureScaling job over ``shard_paths``, streamed in chunks of ``cfg.chunk_size``:
    moments, per-file quantiles and cumulative snapshots (every ``log_step`` files; default
    ``scaling.log_step`` of the config, else 1). Returns a JSON-able dict (module docstring)."""
    step = _log_step(cfg, log_step)
    r = _scan(cfg, list(shard_paths), True, step, quantile_cap, tail_size)
    return {
        "format": JOB_FORMAT,
        "files": r["files"],
        "signature": job_signature(cfg),
        "moments": _stats_json(r["inputs"], r["total"]),
        "outside_cones": r["outside_cones"],
        "per_file": r["per_file"],
        "snapshots": r["snapshots"],
        "log_step": step,
        "quantile_method": {"cap": int(quantile_cap), "tail_size": int(tail_size),
                            "probabilities": dict(QUANTILES), "interpolation": "linear (numpy default)"},
    }


def accumulate(cfg: Config, shard_paths: Iterable[str]) -> dict:
    """Moments of every variable over the given shards: {type: {var: {cone: Moments}}} (per cone
    for collections with a cone). No quantiles, no snapshots."""
    r = _scan(cfg, list(shard_paths), False, 1, DEFAULT_QUANTILE_CAP, DEFAULT_TAIL_SIZE)
    out: dict = {t: {v.name: {} for v in vs} for t, vs in variable_types(cfg).items()}
    for inp, blk in zip(r["inputs"], r["total"]):
        for j, name in enumerate(inp.names):
            out[inp.type_name][name][inp.cone] = blk.moments(j)
    return out


# ---------------------------------------------------------------------------------------------
# merging
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


def _signature_diff(a: dict, b: dict) -> list[str]:
    """Human-readable differences between two job signatures (first few)."""
    out = []
    va, vb = a.get("variables", {}), b.get("variables", {})
    for t in sorted(set(va) | set(vb)):
        for v in sorted(set(va.get(t, {})) | set(vb.get(t, {}))):
            ea, eb = va.get(t, {}).get(v), vb.get(t, {}).get(v)
            if ea is None or eb is None:
                out.append(f"{t}.{v}: {'missing' if eb is None else 'extra'}")
                continue
            for key in ("expression", "scaling", "limits", "selection"):
                if ea.get(key) != eb.get(key):
                    out.append(f"{t}.{v}.{key}: {ea.get(key)!r} vs {eb.get(key)!r}")
    ca, cb = a.get("cones", {}), b.get("cones", {})
    for c in sorted(set(ca) | set(cb)):
        if ca.get(c) != cb.get(c):
            out.append(f"cone of {c}: {ca.get(c)!r} vs {cb.get(c)!r}")
    return out or ["(signatures differ)"]


def merge_jobs(cfg: Config, job_results: Sequence[dict], sources: Sequence[str] | None = None,
               log_step: int | None = None) -> dict:
    """Merge FeatureScaling job results exactly (Chan). Checks that every job has the same variable
    keys and was computed with the same expressions, scaling types, limits and cones (each other's
    and the configuration's); errors name the job. Returns {'scaling': the scaling file content,
    'umami': umami scale dict, 'norm_dict': UPP norm dict, 'report': {flags, ...}, 'snapshots':
    cumulative moments every log_step files over all jobs (in job order), 'quantiles': per file}."""
    names = list(sources) if sources is not None else [f"job {i}" for i in range(len(job_results))]
    if not job_results:
        raise ScalingError("no job results to merge")
    step = _log_step(cfg, log_step)
    sigs = []
    for job, name in zip(job_results, names):
        sig = job.get("signature")
        if sig is None:
            raise ScalingError(f"{name}: no signature (variables, scaling types, limits) recorded; "
                               "not a FeatureScaling job result, or an old one: rerun FeatureScaling")
        sigs.append(sig)
    for sig, name in zip(sigs[1:], names[1:]):
        if sig != sigs[0]:
            raise ScalingError(f"{name}: computed with other variables, scaling types or limits than "
                               f"{names[0]}: {'; '.join(_signature_diff(sigs[0], sig)[:5])}")
    expected = job_signature(cfg)
    if sigs[0] != expected:
        raise ScalingError(f"{names[0]}: computed with other variables, scaling types or limits than the "
                           f"configuration {cfg.path}: {'; '.join(_signature_diff(expected, sigs[0])[:5])}")
    stats_list = [statistics_from_json(j["moments"]) for j in job_results]
    expected_keys = {f"{t}.{v}.{c}" for t, vs in variable_types(cfg).items() for v in (x.name for x in vs)
                     for c in type_cones(cfg)[t]}
    for s, name in zip(stats_list, names):
        if _keys(s) != expected_keys:
            diff = sorted(expected_keys ^ _keys(s))
            raise ScalingError(f"{name}: variables differ from the configuration's: {diff[:5]}")
    for job, name in zip(job_results, names):
        _check_job_moments(job, name)
    merged = merge_statistics(stats_list, names)
    scaling = scaling_parameters(cfg, merged)

    # convergence: cumulative moments over the files of all jobs, in order
    snapshots, quantiles = [], []
    running: dict | None = None
    n_files = 0
    files_seen: list[str] = []
    for job in job_results:
        for pf in job.get("per_file", []):
            n_files += 1
            files_seen.append(pf["file"])
            fm = statistics_from_json(pf["moments"])
            running = fm if running is None else merge_statistics([running, fm])
            if n_files % step == 0:
                snapshots.append({"n_files": n_files, "file": pf["file"], "moments": statistics_to_json(running)})
            quantiles.append({"file": pf["file"], "entries": pf.get("entries"), "quantiles": pf["quantiles"]})
    if running is None:  # jobs without per-file results: one point per job
        for job in job_results:
            fm = statistics_from_json(job["moments"])
            running = fm if running is None else merge_statistics([running, fm])
            n_files += len(job.get("files", [])) or 1
            snapshots.append({"n_files": n_files, "file": None, "moments": statistics_to_json(running)})
    elif not snapshots or snapshots[-1]["n_files"] != n_files:
        snapshots.append({"n_files": n_files, "file": files_seen[-1], "moments": statistics_to_json(running)})
    outside: dict = {}
    for job in job_results:
        for c, v in (job.get("outside_cones") or {}).items():
            outside[c] = outside.get(c, 0) + int(v)
    flags = suspicious_variables(cfg, scaling, quantiles)
    report = {"flags": flags, "n_jobs": len(job_results), "n_files": n_files, "sources": names,
              "outside_cones": outside, "log_step": step,
              "quantile_method": job_results[0].get("quantile_method")}
    return {"scaling": scaling, "umami": umami_scale_dict(cfg, scaling), "norm_dict": norm_dict(cfg, scaling),
            "report": report, "snapshots": snapshots, "quantiles": quantiles}


def _check_job_moments(job: dict, name: str) -> None:
    """Refuse non-finite or absurd moments (a corrupt shard or input: see taggerflow.integrity), naming
    the job, the shard, the variable and the cone: per shard first, then the job's total."""
    from taggerflow.integrity import check_moments

    for pf in job.get("per_file", []):
        check_moments(pf["moments"], f"{name}: shard {pf['file']}", ScalingError)
    check_moments(job["moments"], name, ScalingError)


def write_scaling_outputs(cfg: Config, job_paths: Sequence[str], out_dir: str, plots: bool = True) -> dict:
    """MergeScaling's core: read the job JSON files, merge them (:func:`merge_jobs`) and write into
    ``out_dir``: ``scaling_umami.json``, ``norm_dict.yaml``, ``scaling_report.json`` (flags,
    convergence snapshots, per-file quantiles), ``plots/*.png`` and, last, ``scaling.json``; every
    file is written atomically, so an existing scaling.json means a complete set. Returns the
    merge result with 'paths' added."""
    import os

    import yaml

    from taggerflow.utils import atomic_path, read_json, write_json

    jobs = [read_json(p) for p in job_paths]
    merged = merge_jobs(cfg, jobs, list(job_paths))
    paths = {"umami": os.path.join(out_dir, "scaling_umami.json"),
             "norm_dict": os.path.join(out_dir, "norm_dict.yaml"),
             "report": os.path.join(out_dir, "scaling_report.json"),
             "scaling": os.path.join(out_dir, "scaling.json")}
    write_json(paths["umami"], merged["umami"])
    with atomic_path(paths["norm_dict"], suffix=".yaml") as tmp:
        with open(tmp, "w") as f:
            yaml.safe_dump(merged["norm_dict"], f, sort_keys=False)
    write_json(paths["report"], {**merged["report"], "snapshots": merged["snapshots"],
                                 "quantiles": merged["quantiles"],
                                 "sources": [portable_path(p, cfg.base_dir) for p in job_paths]})
    if plots:
        from taggerflow.scaling_plots import plot_all

        paths["plots"] = plot_all(cfg, merged, os.path.join(out_dir, "plots"))
    write_json(paths["scaling"], merged["scaling"])
    return {**merged, "paths": paths}


# ---------------------------------------------------------------------------------------------
# the scaling file and its exports
def scaling_parameters(cfg: Config, stats: dict) -> dict:
    """The scaling file content: {type: {var: {cone: {mean, std, lim_min, lim_max, num, nan, inf, cut,
    min, max, raw_mean, raw_std, scaling, default}}}}. lim_min/lim_max are in scaled units; null
    means unbounded; min, max, raw_mean and raw_std describe the raw finite values (null when there
    is none; for 'normal' scaling raw_mean/raw_std equal mean/std)."""
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
                    a, b = var.limits_for(cone)
                    mean, std, lo, hi = (a + b) / 2, (b - a) / 2, -1.0, 1.0
                else:  # normal
                    if m.num < 2:
                        raise ScalingError(f"{key}: 'normal' scaling needs at least 2 finite values, "
                                           f"found {m.num} (nan: {m.nan}, inf: {m.inf})")
                    std = m.std
                    if not (math.isfinite(std) and math.isfinite(m.mean)):
                        raise ScalingError(f"{key}: mean {m.mean} or std {std} overflows float64 (values "
                                           f"between {m.min} and {m.max})")
                    if not std > 0:
                        raise ScalingError(f"{key}: 'normal' scaling of a constant variable (std = 0, "
                                           f"value {m.mean}); use no_scaling or categorical")
                    mean = m.mean
                    lim = var.limits_for(cone)
                    lo, hi = lim if lim is not None else (None, None)
                out[t][var.name][cone] = {"mean": mean, "std": std, "lim_min": lo, "lim_max": hi,
                                          "num": m.num, "nan": m.nan, "inf": m.inf, "cut": m.cut,
                                          "min": None if m.num == 0 else m.min,
                                          "max": None if m.num == 0 else m.max,
                                          "raw_mean": None if m.num == 0 else m.mean,
                                          "raw_std": None if m.num == 0 else m.std,
                                          "scaling": var.scaling, "default": var.default}
    return out


def umami_scale_dict(cfg: Config, scaling: dict) -> dict:
    """umami's scale dict: {input: [{name, shift, scale, default}, ...]} in variable order, with
    'jets' for the candidate and the sequence names ('pfcand', 'pfcand_inner', ...) for the
    collections. umami fills NaN with ``default`` *before* shifting, so default is given in raw
    units (mean + default * std); umami cannot clamp: the bounds stay in scaling.json."""
    out: dict = {}
    cones = type_cones(cfg)
    for t, variables in variable_types(cfg).items():
        for cone in cones[t]:
            name = export_name(t, cone)
            if name in out:
                raise ScalingError(f"export name '{name}' is used twice (rename the collection)")
            entries = []
            for var in variables:
                e = scaling[t][var.name][cone]
                entries.append({"name": var.name, "shift": float(e["mean"]), "scale": float(e["std"]),
                                "default": float(e["mean"] + e["default"] * e["std"])})
            out[name] = entries
    return out


def norm_dict(cfg: Config, scaling: dict) -> dict:
    """umami-preprocessing's norm dict (norm_dict.yaml): {input: {var: {mean, std}}}, with the same
    input names as :func:`umami_scale_dict`."""
    cones = type_cones(cfg)
    out: dict = {}
    for t, variables in variable_types(cfg).items():
        for cone in cones[t]:
            out[export_name(t, cone)] = {v.name: {"mean": float(scaling[t][v.name][cone]["mean"]),
                                                  "std": float(scaling[t][v.name][cone]["std"])}
                                         for v in variables}
    return out


# ---------------------------------------------------------------------------------------------
# suspicious variables
TINY_STD_RATIO = 1e-4      # std / |mean| below this: float32 inputs resolve the spread poorly
OUTLIER_SIGMAS = 20.0      # unbounded 'normal' variable with values this many sigmas away


def suspicious_variables(cfg: Config, scaling: dict, quantiles: Sequence[dict] = ()) -> list[dict]:
    """Flags: [{input, type, variable, cone, code, message}]. Codes:

    - ``nan_inf``: NaN or inf values were found (excluded from the moments, replaced by the default);
    - ``empty``: no finite value at all; ``constant``: a single distinct value (std 0);
    - ``tiny_std``: std < 1e-4 |mean| (the raw values' spread is lost in float32 precision);
    - ``clamp_low`` / ``clamp_high``: in some file the clamp bound lies inside the Phi(-3) / Phi(+3)
      quantile, i.e. the clamp cuts away more than Phi(-3) = 0.135 % of the data on that side;
    - ``outliers``: 'normal' scaling without limits and values beyond 20 sigma.
    """
    flags: list[dict] = []
    cones = type_cones(cfg)

    def flag(t, v, c, code, msg):
        flags.append({"input": input_name(t, c), "type": t, "variable": v, "cone": c, "code": code,
                      "message": f"{input_name(t, c)}.{v}: {msg}"})

    for t, variables in variable_types(cfg).items():
        for var in variables:
            for c in cones[t]:
                e = scaling[t][var.name][c]
                if e["nan"] or e["inf"]:
                    flag(t, var.name, c, "nan_inf", f"{e['nan']} NaN and {e['inf']} inf values (excluded "
                         f"from the moments, set to the default {e['default']} when scaled)")
                if e["num"] == 0:
                    flag(t, var.name, c, "empty", "no finite value")
                    continue
                lo_raw, hi_raw = e.get("min"), e.get("max")
                if lo_raw is not None and lo_raw == hi_raw:
                    flag(t, var.name, c, "constant", f"all {e['num']} values equal {lo_raw}")
                    continue
                raw_mean, raw_std = e.get("raw_mean"), e.get("raw_std")
                if var.scaling != "categorical" and raw_std is not None and raw_mean is not None and \
                        raw_std < TINY_STD_RATIO * abs(raw_mean):
                    flag(t, var.name, c, "tiny_std", f"std {raw_std:.3g} is tiny relative to |mean| "
                         f"{abs(raw_mean):.6g} (ratio {raw_std / abs(raw_mean):.2g} < {TINY_STD_RATIO:g})")
                mean, std = e["mean"], e["std"]
                for side, lim, qname, code in (("low", e["lim_min"], "q_m3", "clamp_low"),
                                               ("high", e["lim_max"], "q_p3", "clamp_high")):
                    if lim is None:
                        continue
                    bound = mean + lim * std
                    bad = []
                    for pf in quantiles:
                        q = pf["quantiles"].get(t, {}).get(var.name, {}).get(c, {}).get(qname)
                        if q is None:
                            continue
                        if (side == "low" and q < bound) or (side == "high" and q > bound):
                            bad.append((pf["file"], (q - mean) / std))
                    if bad:
                        worst = min(z for _, z in bad) if side == "low" else max(z for _, z in bad)
                        flag(t, var.name, c, code, f"the clamp at {lim:g} (raw {bound:.6g}) cuts away more "
                             f"than Phi({'-' if side == 'low' else '+'}3) of the data in {len(bad)} of "
                             f"{len(quantiles)} files (Phi({'-' if side == 'low' else '+'}3) quantile at "
                             f"{worst:.3g} in scaled units)")
                if var.scaling == "normal" and e["lim_min"] is None and lo_raw is not None and \
                        (mean - lo_raw) / std > OUTLIER_SIGMAS:
                    flag(t, var.name, c, "outliers", f"unbounded, minimum at {(lo_raw - mean) / std:.3g} sigma")
                if var.scaling == "normal" and e["lim_max"] is None and hi_raw is not None and \
                        (hi_raw - mean) / std > OUTLIER_SIGMAS:
                    flag(t, var.name, c, "outliers", f"unbounded, maximum at {(hi_raw - mean) / std:.3g} sigma")
    return flags


# ---------------------------------------------------------------------------------------------
# applying the scaling: the input recipe
#: The one input recipe, per variable: clamp to the bounds, THEN replace what is still non-finite by
#: the default. So +inf goes to the upper bound and -inf to the lower one where the variable has
#: that bound (an overflow is an extreme value, and the bound is where training puts every value
#: beyond it); NaN, and an inf on an unbounded side, become the default. Training applies it to
#: scaled values (bounds lim_min/lim_max, default), deployment to raw values (raw_min/raw_max,
#: raw_default): (x - mean) / std maps NaN to NaN and +-inf to +-inf, so both give the same model
#: input up to the rounding of mean + lim * std.
SCALED_INPUT_RECIPE = ("per variable: scaled = (raw - mean) / std, clamped to [lim_min, lim_max] (null = "
                       "unbounded), then a value still non-finite (NaN, or +-inf on an unbounded side) -> default; "
                       "so +inf -> lim_max and -inf -> lim_min where bounded")
RAW_INPUT_RECIPE = ("per variable: clamp the raw value to its raw bounds [min, max] (null = unbounded), then a value "
                    "still non-finite (NaN, or +-inf on an unbounded side) -> its raw default; so +inf -> the raw max "
                    "and -inf -> the raw min where bounded")


def clamp_then_default(y: np.ndarray, lo, hi, default) -> np.ndarray:
    """The input recipe on ``y`` (a float64 array, one variable per last-axis column), in place:
    clamp to [lo, hi] (+-inf = unbounded), then every value still non-finite -> ``default``. Used on
    scaled values by the training files and on raw values by the export checks."""
    np.clip(y, lo, hi, out=y)
    bad = ~np.isfinite(y)
    if bad.any():
        y[bad] = np.broadcast_to(np.asarray(default, dtype=np.float64), y.shape)[bad]
    return y


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


def raw_recipe_arrays(scaling: dict, type_name: str, variables: list[str], cone: str = GLOBAL_CONE
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The recipe's bounds and default in raw units: raw_min = mean + lim_min * std, raw_max =
    mean + lim_max * std (±inf = unbounded), raw_default = mean + default * std."""
    mean, std, lo, hi, default = scaling_arrays(scaling, type_name, variables, cone)
    return mean + lo * std, mean + hi * std, mean + default * std


def apply_raw_recipe(x: np.ndarray, raw_min, raw_max, raw_default) -> np.ndarray:
    """The input recipe on raw values (a float64 copy): what C++ does before lwtnn."""
    return clamp_then_default(np.array(x, dtype=np.float64), raw_min, raw_max, raw_default)


def apply_scaling(x: np.ndarray, mean, std, lo, hi, default, inplace: bool = False) -> np.ndarray:
    """(x - mean) / std, then the input recipe (:func:`clamp_then_default`).
    float64 arithmetic, in one work array (``inplace``: ``x`` itself when it is a float64 array);
    the same values, bit for bit, as the expression written out."""
    if inplace and isinstance(x, np.ndarray) and x.dtype == np.float64:
        y = x
    else:
        y = np.array(x, dtype=np.float64)
    y -= mean
    y /= std
    return clamp_then_default(y, lo, hi, default)
