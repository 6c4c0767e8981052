"""Bounded-memory per-file quantiles (see :mod:`taggerflow.scaling`'s docstring for the method and
its accuracy)."""

from __future__ import annotations

import math

import numpy as np

from taggerflow.scaling.moments import Moments

DEFAULT_QUANTILE_CAP = 32768
DEFAULT_TAIL_SIZE = 4096


def _phi(x: float) -> float:
    """Standard normal CDF (erfc form: accurate in the far tails)."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


#: quantile name -> probability: the median and the normal-CDF probabilities Phi(+-1, 2, 3, 5)
QUANTILES: dict[str, float] = {"q_m5": _phi(-5), "q_m3": _phi(-3), "q_m2": _phi(-2), "q_m1": _phi(-1),
                               "median": 0.5,
                               "q_p1": _phi(1), "q_p2": _phi(2), "q_p3": _phi(3), "q_p5": _phi(5)}


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


def _take_columns(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """x[:, idx] as a C-contiguous array (row by row: faster than a 2-d take)."""
    out = np.empty((x.shape[0], len(idx)), dtype=x.dtype)
    for j in range(x.shape[0]):
        np.take(x[j], idx, out=out[j])
    return out
