"""Moments (count, mean, M2, min, max, NaN, inf, cut) in float64, merged exactly with Chan et al.'s
pairwise formula (:class:`Moments`), and their vectorised form for k variables at once."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


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
