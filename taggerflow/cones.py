"""Cones around a candidate: which constituents are in the signal (inner) or isolation (outer) cone.

Signal-cone radius r = max(coef / max(pt, min_pt), min_radius) (the tau signal cone shrinks with
pt); inner: dR <= r; outer: r < dR < outer_dR; constituents at dR >= outer_dR are in no cone.
dR = hypot(deta, dphi) with dphi wrapped into [-pi, pi).
"""

from __future__ import annotations

import numpy as np

from taggerflow.config import Cone


def wrap_phi(dphi: np.ndarray) -> np.ndarray:
    """Wrap an angle difference into [-pi, pi)."""
    return (np.asarray(dphi, dtype=np.float64) + np.pi) % (2 * np.pi) - np.pi


def signal_radius(cand_pt: np.ndarray, cone: Cone) -> np.ndarray:
    pt = np.asarray(cand_pt, dtype=np.float64)
    return np.maximum(cone.coef / np.maximum(pt, cone.min_pt), cone.min_radius)


def cone_masks(cand_pt: np.ndarray, deta: np.ndarray, dphi: np.ndarray, counts: np.ndarray,
               cone: Cone) -> dict[str, np.ndarray]:
    """Masks over the flattened constituents (length sum(counts)): {'inner': ..., 'outer': ...}."""
    r = np.repeat(signal_radius(cand_pt, cone), np.asarray(counts, dtype=np.int64))
    dr = np.hypot(np.asarray(deta, dtype=np.float64), wrap_phi(dphi))
    inner = dr <= r
    outer = (dr > r) & (dr < cone.outer_dR)
    return {"inner": inner, "outer": outer}
