"""Synthetic tau-identification ntuples for the taggerflow demo.

The demo pipeline needs inputs that look like real CMS-style tau candidate
ntuples without shipping any data: one TTree entry per reconstructed candidate,
flat candidate-level branches, one jagged collection of particle-flow
constituents (``pfcand_*`` plus the counter ``npfcand``) and a truth branch
``gen_match`` (genPartFlav-like codes, see :data:`TRUTH_CODES`).

The features depend on the true class so that a small network separates
tau / e / mu / jet clearly but not perfectly:

* every candidate gets a *style* that decides how its constituents, isolation
  and mass look.  Normally the style is the true class, but ~15 % of jets look
  like taus (narrow, few constituents, low isolation), ~5 % of taus look like
  jets and a few leptons are reconstructed like hadronic taus;
* quantities a fake cannot imitate (impact-parameter displacement of taus,
  the electromagnetic fraction of electrons, muon stations) follow the true
  class, so the overlap is only partial;
* the pt spectrum falls exponentially with a class-dependent slope (jets
  softer, leptons harder) so that the pt-eta resampling step has work to do.

Everything is vectorised with numpy (one pass per chunk, constituents built as
flat arrays and unflattened with awkward) and written chunk by chunk with
uproot, so memory stays bounded for big files.  The file is written under a
temporary name in the target directory and moved into place only when complete.

This module must stay importable without law or TensorFlow.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Mapping

import awkward as ak
import numpy as np
import uproot

from taggerflow.io import reproducible_root
from taggerflow.utils import atomic_path

__all__ = ["TRUTH_CODES", "CLASS_NAMES", "CANDIDATE_BRANCHES", "PFCAND_FIELDS", "generate_demo_file"]

#: gen_match values per class (CMS genPartFlav-like): 1/3 prompt/tau->e, 2/4 prompt/tau->mu,
#: 5 hadronic tau, 0 jet (unmatched).
TRUTH_CODES = {"tau": 5, "e": (1, 3), "mu": (2, 4), "jet": 0}

#: Class names in a fixed order; internal class index = position in this tuple.
CLASS_NAMES: tuple[str, ...] = tuple(TRUTH_CODES)
_TAU, _E, _MU, _JET = range(4)
# Extra feature style: a jet that fakes a tau (tau-like shapes, but jet-like displacement).
_FAKE = 4

#: Flat candidate branches and their dtypes.
CANDIDATE_BRANCHES: dict[str, np.dtype] = {
    "event": np.dtype(np.uint64),
    "run": np.dtype(np.int32),
    "pt": np.dtype(np.float32),
    "eta": np.dtype(np.float32),
    "phi": np.dtype(np.float32),
    "mass": np.dtype(np.float32),
    "charge": np.dtype(np.int32),
    "decay_mode": np.dtype(np.int32),
    "iso_charged": np.dtype(np.float32),
    "iso_neutral": np.dtype(np.float32),
    "lead_pt_frac": np.dtype(np.float32),
    "em_fraction": np.dtype(np.float32),
    "n_muon_stations": np.dtype(np.int32),
    "ip_sig": np.dtype(np.float32),
    "gen_match": np.dtype(np.int32),
}

#: Fields of the ``pfcand`` collection (branches ``pfcand_<field>``, counter ``npfcand``).
PFCAND_FIELDS: dict[str, np.dtype] = {
    "pt": np.dtype(np.float32),
    "deta": np.dtype(np.float32),
    "dphi": np.dtype(np.float32),
    "d0": np.dtype(np.float32),
    "d0_sig": np.dtype(np.float32),
    "dz": np.dtype(np.float32),
    "dz_sig": np.dtype(np.float32),
    "charge": np.dtype(np.int32),
    "ptype": np.dtype(np.int32),
}

# Constituent particle types.
PTYPE_CHARGED_HADRON, PTYPE_PHOTON, PTYPE_NEUTRAL_HADRON, PTYPE_ELECTRON, PTYPE_MUON = range(5)

PT_MIN = 20.0
PT_MAX = 1000.0
ETA_MAX = 2.3
EVENT_STRIDE = 10**9  # event = file_index * EVENT_STRIDE + running index: unique per file

_DECAY_MODES = np.array([0, 1, 10, 11], dtype=np.int32)
# Reconstructed decay-mode probabilities per true class (rows: tau, e, mu, jet).
_DM_PROBS = np.array([
    [0.25, 0.45, 0.20, 0.10],  # taus: roughly the HPS mix
    [0.45, 0.45, 0.05, 0.05],  # electrons: mostly 1-prong (+ brems photons)
    [0.75, 0.15, 0.07, 0.03],  # muons: mostly 1-prong
    [0.20, 0.30, 0.30, 0.20],  # jets: spread over all modes
])
# pt slope relative to pt_scale per class: jets softer, leptons harder.
_PT_SCALE_FACTOR = np.array([1.0, 1.15, 1.25, 0.75])
# eta width relative to eta_width per class: jets a bit more forward.
_ETA_WIDTH_FACTOR = np.array([1.0, 1.0, 0.95, 1.1])
# Probability that a candidate of class c gets a non-native feature style.
_P_TAU_LOOKS_LIKE_JET = 0.05
_P_JET_LOOKS_LIKE_TAU = 0.15
_P_LEPTON_LOOKS_LIKE_TAU = 0.04
_P_EMPTY = 0.005  # candidates with no constituents, so downstream code meets empty lists
_EVENT_MULT_PROBS = np.array([0.5, 0.3, 0.2])  # 1, 2 or 3 candidates per event

# Gamma shape of constituent pt weights per [style, ptype]: larger = takes more of the pt.
_W_SHAPE = np.array([
    # ch    ph    nh    e     mu
    [4.0, 1.5, 0.8, 1.0, 1.0],   # tau: leading charged pion dominates
    [0.5, 1.0, 0.5, 10.0, 1.0],  # e: the electron carries almost everything
    [0.5, 0.5, 0.5, 1.0, 20.0],  # mu: the muon carries almost everything
    [1.0, 0.8, 1.2, 1.0, 1.0],   # jet: democratic sharing
    [2.5, 1.2, 1.0, 1.0, 1.0],   # tau-like jet: between the two
])
# Beta(a, b) of the summed constituent pt fraction per style (jets lose pt outside the cone).
_SUMFRAC_AB = np.array([[18.0, 2.0], [25.0, 1.5], [40.0, 1.0], [6.0, 3.0], [10.0, 2.5]])


def _validate_fractions(class_fractions: Mapping[str, float]) -> np.ndarray:
    """Return class probabilities in CLASS_NAMES order; raise ValueError naming the bad key."""
    if not isinstance(class_fractions, Mapping) or not class_fractions:
        raise ValueError(f"class_fractions must be a non-empty mapping, got {class_fractions!r}")
    probs = np.zeros(len(CLASS_NAMES))
    for key, value in class_fractions.items():
        if key not in TRUTH_CODES:
            raise ValueError(f"class_fractions: unknown class {key!r} (known: {', '.join(CLASS_NAMES)})")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"class_fractions[{key!r}] is not a number: {value!r}") from None
        if not math.isfinite(value) or value < 0.0:
            raise ValueError(f"class_fractions[{key!r}] must be finite and >= 0, got {value!r}")
        probs[CLASS_NAMES.index(key)] = value
    total = probs.sum()
    if abs(total - 1.0) > 1e-6:
        detail = ", ".join(f"{k}={float(v):g}" for k, v in class_fractions.items())
        raise ValueError(f"class_fractions must sum to 1, got {total:.6g} ({detail})")
    return probs / total


def _validate_args(dataset: str, n_entries: int, pt_scale: float, eta_width: float, seed: int,
                   file_index: int, tree: str, chunk_size: int) -> None:
    def is_int(x: object) -> bool:
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

    if not isinstance(dataset, str) or not dataset:
        raise ValueError(f"dataset must be a non-empty string, got {dataset!r}")
    if not isinstance(tree, str) or not tree:
        raise ValueError(f"tree must be a non-empty string, got {tree!r}")
    if not is_int(n_entries) or n_entries < 0 or n_entries >= EVENT_STRIDE:
        raise ValueError(f"n_entries must be an integer in [0, {EVENT_STRIDE}), got {n_entries!r}")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not is_int(file_index) or file_index < 0:
        raise ValueError(f"file_index must be a non-negative integer, got {file_index!r}")
    if not is_int(chunk_size) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    for name, value in (("pt_scale", pt_scale), ("eta_width", eta_width)):
        if not isinstance(value, (int, float, np.number)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a finite positive number, got {value!r}")


def _truncated_exponential(rng: np.random.Generator, scale: np.ndarray, upper: float) -> np.ndarray:
    """Exponential(scale) truncated to [0, upper) by inverse CDF (no rejection loop, no spike)."""
    u = rng.random(scale.shape)
    return -scale * np.log1p(-u * -np.expm1(-upper / scale))


def _truncated_normal(rng: np.random.Generator, sigma: np.ndarray, limit: float) -> np.ndarray:
    """Normal(0, sigma) truncated to |x| < limit by vectorised rejection (few passes)."""
    x = rng.normal(0.0, sigma)
    bad = np.abs(x) >= limit
    while bad.any():
        x[bad] = rng.normal(0.0, sigma[bad])
        bad = np.abs(x) >= limit
    return x


def _zero_or_exp(rng: np.random.Generator, p_zero: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Isolation-like sums: exactly zero with probability p_zero, else exponential(scale)."""
    return np.where(rng.random(scale.shape) < p_zero, 0.0, rng.exponential(scale))


def _generate_chunk(rng: np.random.Generator, n: int, probs: np.ndarray, pt_scale: float,
                    eta_width: float) -> tuple[dict[str, np.ndarray], ak.Array]:
    """Candidate branches (without event/run) and the pfcand record array for n candidates."""
    cls = rng.choice(len(CLASS_NAMES), size=n, p=probs)

    # Feature style: usually the true class; some fakes/look-alikes blur the classes.
    r = rng.random(n)
    style = cls.copy()
    style[(cls == _TAU) & (r < _P_TAU_LOOKS_LIKE_JET)] = _JET
    style[(cls == _JET) & (r < _P_JET_LOOKS_LIKE_TAU)] = _FAKE
    style[((cls == _E) | (cls == _MU)) & (r < _P_LEPTON_LOOKS_LIKE_TAU)] = _TAU
    tau_like = (style == _TAU) | (style == _FAKE)
    is_jet_style = style == _JET

    gen_match = np.zeros(n, dtype=np.int32)
    gen_match[cls == _TAU] = TRUTH_CODES["tau"]
    for c, (prompt, from_tau) in ((_E, TRUTH_CODES["e"]), (_MU, TRUTH_CODES["mu"])):
        m = cls == c
        gen_match[m] = np.where(rng.random(m.sum()) < 0.9, prompt, from_tau)

    # Kinematics.
    pt = PT_MIN + _truncated_exponential(rng, pt_scale * _PT_SCALE_FACTOR[cls], PT_MAX - PT_MIN)
    eta = _truncated_normal(rng, eta_width * _ETA_WIDTH_FACTOR[cls], ETA_MAX)
    phi = rng.uniform(-np.pi, np.pi, n)
    charge = np.where(rng.random(n) < 0.5, -1, 1).astype(np.int32)

    # Reconstructed decay mode: cumulative-probability lookup per true class (vectorised choice).
    cdf = np.cumsum(_DM_PROBS, axis=1)[cls]
    dm_idx = np.minimum((rng.random(n)[:, None] > cdf).sum(axis=1), 3)
    decay_mode = _DECAY_MODES[dm_idx]
    has_pi0 = (decay_mode == 1) | (decay_mode == 11)
    three_prong = decay_mode >= 10

    # Mass: resonances of the decay mode for tau-like, small for leptons, pt-scaled for jets.
    mass = np.empty(n)
    dm_mean = np.array([0.1396, 0.80, 1.10, 1.20])[dm_idx]
    dm_width = np.array([0.01, 0.20, 0.18, 0.25])[dm_idx]
    mass_tau = dm_mean + dm_width * rng.normal(size=n) + np.where(style == _FAKE, 0.25, 0.0)
    mass_jet = rng.gamma(2.0, 0.02 * pt + 0.4)
    mass[:] = np.where(tau_like, np.clip(mass_tau, 0.13, 2.5), np.minimum(mass_jet, 0.3 * pt))
    mass[style == _E] = 0.000511 + np.abs(rng.normal(0.0, 0.10, (style == _E).sum()))
    mass[style == _MU] = 0.1057 + np.abs(rng.normal(0.0, 0.03, (style == _MU).sum()))

    # Isolation sums (GeV): small for tau/e/mu, large and pt-dependent for jets; fakes in between.
    p0_ch = np.array([0.55, 0.65, 0.65, 0.0, 0.35])[style]
    p0_ne = np.array([0.40, 0.55, 0.55, 0.0, 0.30])[style]
    sc_ch = np.array([1.5, 1.0, 1.0, 0.0, 3.0])[style]
    sc_ne = np.array([2.0, 1.2, 1.2, 0.0, 3.0])[style]
    iso_charged = np.where(is_jet_style, rng.gamma(2.0, 0.08 * pt + 1.5), _zero_or_exp(rng, p0_ch, np.maximum(sc_ch, 1e-3)))
    iso_neutral = np.where(is_jet_style, rng.gamma(2.0, 0.05 * pt + 1.0), _zero_or_exp(rng, p0_ne, np.maximum(sc_ne, 1e-3)))

    # EM fraction: electrons high whatever they look like; otherwise by style.
    em_a = np.where(tau_like, np.where(has_pi0, 3.0, 1.2), np.array([1.0, 18.0, 1.0, 3.0, 1.0])[style])
    em_b = np.where(tau_like, np.where(has_pi0, 4.0, 8.0), np.array([1.0, 2.0, 30.0, 5.0, 1.0])[style])
    em_a = np.where(cls == _E, 18.0, em_a)
    em_b = np.where(cls == _E, 2.0, em_b)
    em_fraction = rng.beta(em_a, em_b)

    # Muon stations: true muons 2-4 (rarely 1); punch-through for a few jets/taus.
    n_muon_stations = np.zeros(n, dtype=np.int32)
    u = rng.random(n)
    mu = cls == _MU
    n_muon_stations[mu] = np.where(u[mu] < 0.03, 1, 2 + rng.integers(0, 3, mu.sum()))
    punch = ((cls == _JET) & (u < 0.02)) | ((cls == _TAU) & (u < 0.005))
    n_muon_stations[punch] = rng.integers(1, 3, punch.sum())

    # Candidate impact-parameter significance: taus displaced (true class), some heavy-flavour jets.
    # (lifetime-signed: displaced tracks mostly get a positive sign).
    sign = np.where(rng.random(n) < 0.85, 1.0, -1.0)
    ip_sig = rng.normal(0.0, 1.0, n)
    ip_sig += np.where(cls == _TAU, sign * rng.exponential(1.5, n), 0.0)
    ip_sig += np.where((cls == _JET) & (rng.random(n) < 0.08), sign * rng.exponential(3.0, n), 0.0)

    # ---- constituent multiplicities per type (lepton, charged hadron, photon, neutral hadron) ----
    n_lep = np.where((style == _E) | (style == _MU), 1, 0)
    n_ch = np.zeros(n, dtype=np.int64)
    n_ph = np.zeros(n, dtype=np.int64)
    n_nh = np.zeros(n, dtype=np.int64)
    # tau-like: 1 or 3 prongs from the decay mode plus 0-4 neutrals (more with a pi0).
    n_ch[tau_like] = np.where(three_prong[tau_like], 3, 1)
    ph = np.where(has_pi0, 1 + rng.poisson(0.8, n), rng.poisson(0.15, n))
    nh = rng.poisson(np.where(has_pi0, 0.15, 0.1))
    ph = np.minimum(ph, 4)
    nh = np.minimum(nh, 4 - ph)
    n_ph[tau_like], n_nh[tau_like] = ph[tau_like], nh[tau_like]
    # electrons: one electron + a few brems photons (+ rarely a track).
    e_s = style == _E
    n_ph[e_s] = np.minimum(rng.poisson(1.2, e_s.sum()), 4)
    n_ch[e_s] = rng.random(e_s.sum()) < 0.1
    # muons: one muon + 0-2 others.
    mu_s = style == _MU
    ch_m = rng.poisson(0.25, mu_s.sum())
    n_ch[mu_s] = np.minimum(ch_m, 2)
    n_ph[mu_s] = np.minimum(rng.poisson(0.25, mu_s.sum()), 2 - n_ch[mu_s])
    # jets: Poisson 8-15 (harder jets have more), split over hadron types.
    j_s = is_jet_style
    lam = np.clip(6.0 + pt[j_s] / 10.0, 8.0, 15.0)
    split = rng.multinomial(rng.poisson(lam), [0.6, 0.28, 0.12])
    n_ch[j_s], n_ph[j_s], n_nh[j_s] = split[:, 0], split[:, 1], split[:, 2]
    # A few candidates without any constituents.
    empty = rng.random(n) < _P_EMPTY
    for arr in (n_lep, n_ch, n_ph, n_nh):
        arr[empty] = 0
    counts = n_lep + n_ch + n_ph + n_nh

    # ---- flat constituent arrays (length = sum(counts)) ----
    total = int(counts.sum())
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    ci = np.repeat(np.arange(n), counts)          # owning candidate of every constituent
    j = np.arange(total) - offsets[:-1][ci]       # position inside its candidate
    c1 = n_lep[ci]
    c2 = c1 + n_ch[ci]
    c3 = c2 + n_ph[ci]
    st = style[ci]
    lep_type = np.where(st == _E, PTYPE_ELECTRON, PTYPE_MUON)
    ptype = np.where(j < c1, lep_type,
                     np.where(j < c2, PTYPE_CHARGED_HADRON, np.where(j < c3, PTYPE_PHOTON, PTYPE_NEUTRAL_HADRON)))
    is_charged = (ptype == PTYPE_CHARGED_HADRON) | (ptype >= PTYPE_ELECTRON)

    # pt sharing: gamma weights normalised per candidate to a style-dependent total fraction <= 1.
    w = rng.gamma(_W_SHAPE[st, ptype])
    wsum = np.bincount(ci, weights=w, minlength=n)
    sumfrac = rng.beta(_SUMFRAC_AB[style, 0], _SUMFRAC_AB[style, 1])
    frac = w / wsum[ci] * sumfrac[ci]
    c_pt = frac * pt[ci]
    lead = np.zeros(n)
    nonempty = counts > 0
    if total:
        lead[nonempty] = np.maximum.reduceat(frac, offsets[:-1][nonempty])
    lead_pt_frac = np.clip(lead * (1.0 + 0.03 * rng.normal(size=n)), 0.0, 1.0)

    # Charge: tau prongs sum to the candidate charge (+,+,- for 3 prongs), leptons carry it, jets random.
    k = j - c1
    prong_q = np.where(k < 2, charge[ci], -charge[ci])
    rand_q = np.where(rng.random(total) < 0.5, -1, 1)
    c_charge = np.where(ptype >= PTYPE_ELECTRON, charge[ci],
                        np.where((st == _TAU) | (st == _FAKE), prong_q, rand_q))
    c_charge = np.where(is_charged, c_charge, 0).astype(np.int32)

    # Angular spread around the axis: tau cone shrinks with pt, jets broad, softer constituents wider.
    cpt = pt[ci]
    sig = np.select(
        [st == _TAU, st == _FAKE, st == _JET, st == _E, st == _MU],
        [np.clip(1.5 / cpt, 0.01, 0.08), np.clip(2.5 / cpt, 0.015, 0.12), np.clip(0.12 + 2.0 / cpt, 0.08, 0.25),
         np.full(total, 0.02), np.full(total, 0.15)])
    sig = sig * np.clip(np.sqrt(0.1 / np.maximum(frac, 1e-6)), 0.5, 3.0)
    sig_eta, sig_phi = sig.copy(), sig.copy()
    lep = ptype >= PTYPE_ELECTRON
    sig_eta[lep] = sig_phi[lep] = 0.003
    brems = (st == _E) & (ptype == PTYPE_PHOTON)  # electron brems spreads in phi only
    sig_eta[brems], sig_phi[brems] = 0.01, 0.06
    deta = rng.normal(0.0, sig_eta)
    dphi = rng.normal(0.0, sig_phi)

    # Track impact parameters (cm), only for charged constituents; tau prongs displaced (c*tau ~ 87 um),
    # a few jet tracks from heavy flavour / V0s, and pileup tracks far away in z.
    trk_pt = np.maximum(c_pt, 0.3)
    sig_d0 = 0.0015 + 0.006 / trk_pt
    sig_dz = 0.002 + 0.012 / trk_pt
    true_tau = cls[ci] == _TAU
    true_jet = cls[ci] == _JET
    rsign = np.where(rng.random(total) < 0.5, -1.0, 1.0)
    u = rng.random(total)
    d0_true = np.where(true_tau, rsign * rng.exponential(0.006, total),
                       np.where(true_jet & (u < 0.08), rsign * rng.exponential(0.03, total), 0.0))
    dz_true = np.where(true_tau, -rsign * rng.exponential(0.008, total),
                       np.where(true_jet & (u > 0.92), rng.normal(0.0, 4.0, total), 0.0))
    d0 = np.where(is_charged, d0_true + rng.normal(0.0, sig_d0), 0.0)
    dz = np.where(is_charged, dz_true + rng.normal(0.0, sig_dz), 0.0)
    d0_sig = np.where(is_charged, d0 / sig_d0, 0.0)
    dz_sig = np.where(is_charged, dz / sig_dz, 0.0)

    flat = {
        "pt": c_pt, "deta": deta, "dphi": dphi, "d0": d0, "d0_sig": d0_sig, "dz": dz, "dz_sig": dz_sig,
        "charge": c_charge, "ptype": ptype,
    }
    pfcand = ak.unflatten(
        ak.zip({name: np.asarray(flat[name], dtype=dt) for name, dt in PFCAND_FIELDS.items()}),
        counts)

    # Cap strictly below PT_MAX also after the float32 cast.
    pt32 = np.minimum(pt.astype(np.float32), np.nextafter(np.float32(PT_MAX), np.float32(0)))
    cand = {
        "pt": pt32, "eta": eta, "phi": phi, "mass": mass, "charge": charge, "decay_mode": decay_mode,
        "iso_charged": iso_charged, "iso_neutral": iso_neutral, "lead_pt_frac": lead_pt_frac,
        "em_fraction": em_fraction, "n_muon_stations": n_muon_stations, "ip_sig": ip_sig,
        "gen_match": gen_match,
    }
    cand = {name: np.asarray(v, dtype=CANDIDATE_BRANCHES[name]) for name, v in cand.items()}
    # phi must stay in [-pi, pi) after the float32 cast too.
    cand["phi"] = np.where(cand["phi"] >= np.float32(np.pi), np.float32(-np.pi), cand["phi"]).astype(np.float32)
    return cand, pfcand


def _event_numbers(rng: np.random.Generator, n: int, first: int) -> tuple[np.ndarray, int]:
    """Running event indices for n candidates (1-3 per event); returns them and the next free index."""
    mult = rng.choice(np.arange(1, 4), size=n, p=_EVENT_MULT_PROBS)
    idx = np.repeat(np.arange(n), mult)[:n]  # consecutive candidates share an event
    return first + idx, first + int(idx[-1]) + 1 if n else first


def _branch_types() -> dict[str, object]:
    types: dict[str, object] = dict(CANDIDATE_BRANCHES)
    fields = ", ".join(f"{name}: {dt.name}" for name, dt in PFCAND_FIELDS.items())
    types["pfcand"] = f"var * {{{fields}}}"  # uproot makes pfcand_<field> branches + counter npfcand
    return types


def generate_demo_file(path: str, dataset: str, n_entries: int, class_fractions: dict[str, float],
                       pt_scale: float, eta_width: float, seed: int, file_index: int = 0,
                       tree: str = "candidates", chunk_size: int = 50_000) -> dict[str, int]:
    """Write one ntuple file; return the number of candidates written per class name.

    The returned dict has every class of :data:`TRUTH_CODES` (zero where absent).
    The output is a deterministic function of all arguments: the random stream is
    seeded from ``(seed, dataset, file_index)`` and one child generator is spawned
    per chunk (results therefore depend on ``chunk_size`` too).  Event numbers are
    ``file_index * 10**9 + running index`` (1-3 consecutive candidates per event).
    All arguments are validated before any file is created; on any error the
    temporary file is removed and ``path`` is left untouched.
    """
    probs = _validate_fractions(class_fractions)
    _validate_args(dataset, n_entries, pt_scale, eta_width, seed, file_index, tree, chunk_size)
    pt_scale, eta_width = float(pt_scale), float(eta_width)

    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)

    n_chunks = -(-n_entries // chunk_size)
    # Mixing dataset and file_index into the entropy keeps files independent even if a caller reuses seeds.
    root_seq = np.random.SeedSequence(entropy=[int(seed), zlib.crc32(dataset.encode()), int(file_index)])
    chunk_seqs = root_seq.spawn(n_chunks)

    counts = dict.fromkeys(CLASS_NAMES, 0)
    gm_to_class = {code: name for name, codes in TRUTH_CODES.items()
                   for code in (codes if isinstance(codes, tuple) else (codes,))}
    next_event = 0
    # written under its final name in a temporary folder, without wall-clock data: the same seed gives
    # the same bytes, and a killed job leaves no file under the final name
    with atomic_path(path, folder=True) as tmp_path, reproducible_root(f"demo:{dataset}:{file_index}:{seed}") as opts, \
            uproot.recreate(tmp_path, compression=uproot.ZSTD(5), **opts) as f:
        ttree = f.mktree(tree, _branch_types(), title=f"taggerflow demo candidates ({dataset})")
        for i, seq in enumerate(chunk_seqs):
            n = min(chunk_size, n_entries - i * chunk_size)
            rng = np.random.default_rng(seq)
            cand, pfcand = _generate_chunk(rng, n, probs, pt_scale, eta_width)
            idx, next_event = _event_numbers(rng, n, next_event)
            data: dict[str, object] = {
                "event": (np.uint64(file_index) * np.uint64(EVENT_STRIDE) + idx.astype(np.uint64)),
                "run": np.ones(n, dtype=np.int32),
                **cand,
                "pfcand": pfcand,
            }
            ttree.extend(data)
            codes, n_code = np.unique(cand["gen_match"], return_counts=True)
            for code, m in zip(codes.tolist(), n_code.tolist()):
                counts[gm_to_class[code]] += m
    return counts
