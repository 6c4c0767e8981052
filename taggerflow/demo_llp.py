"""Synthetic LLP (CalRatio-like) ntuples: displaced-jet signal, QCD and BIB, plus a control region.

The ``llp`` demo family (``demo.family: llp``). One TTree entry per jet, flat jet branches, three
constituent collections of different length distributions (``clus_*``/``nclus`` calorimeter clusters,
``trk_*``/``ntrk`` tracks, ``mseg_*``/``nmseg`` muon segments) and the truth branch ``llp_class``
(:data:`TRUTH_CODES`).

* signal ``H -> S S``: the scalar's decay radius is exponential with a mean that grows with the boost
  m_H / (2 m_S), so light scalars decay further out; decays inside the hadronic calorimeter give a
  large ``log_ratio`` (log10 E_had/E_em), beyond the inner detector few, slightly displaced tracks,
  beyond the HCal muon segments; slightly late ``time``; jet pt follows m_H / 2, heavier scalars
  give wider jets and more clusters;
* QCD: prompt jets, exponential pt, many tracks, ``log_ratio`` around 0; 40% look displaced
  (hadronic, narrow, few tracks): the overlap with the signal (signal-vs-QCD AUC ~0.95);
* BIB (beam-induced background): muons along the beam line give many muon segments (a third of
  them few), early ``time``, almost no tracks, high ``log_ratio`` too.

The clusters' EM fractions follow a per-jet smeared ``log_ratio``, so they carry only part of its
information and a tagger relies on ``log_ratio`` itself.

Control-region files (:func:`generate_control_file`) are QCD-like; the "data" file differs from the
MC one only in one candidate variable, shifted by a configured amount (``log_ratio`` in
configs/llp.yaml: the clusters keep the unshifted EM fractions), so an adversary has something to
remove. Output is a deterministic function of the arguments (same bytes per seed).
Importable without law or TensorFlow.
"""

from __future__ import annotations

import math
import os
import zlib

import awkward as ak
import numpy as np
import uproot

from taggerflow.io import reproducible_root
from taggerflow.utils import atomic_path

__all__ = ["TRUTH_CODES", "PROCESSES", "CANDIDATE_BRANCHES", "COLLECTIONS", "generate_llp_file",
           "generate_control_file", "mean_decay_radius"]

#: llp_class values per class.
TRUTH_CODES = {"qcd": 0, "signal": 1, "bib": 2}
PROCESSES = tuple(TRUTH_CODES)
EVENT_STRIDE = 10**9

CANDIDATE_BRANCHES: dict[str, np.dtype] = {
    "event": np.dtype(np.uint64), "run": np.dtype(np.int32),
    "pt": np.dtype(np.float32), "eta": np.dtype(np.float32), "phi": np.dtype(np.float32),
    "log_ratio": np.dtype(np.float32), "width": np.dtype(np.float32), "time": np.dtype(np.float32),
    "decay_radius": np.dtype(np.float32), "llp_class": np.dtype(np.int32),
}
#: Constituent collections: name -> field dtypes (branches <name>_<field>, counter n<name>).
COLLECTIONS: dict[str, dict[str, np.dtype]] = {
    "clus": {"pt": np.dtype(np.float32), "deta": np.dtype(np.float32), "dphi": np.dtype(np.float32),
             "frac_em": np.dtype(np.float32), "time": np.dtype(np.float32)},
    "trk": {"pt": np.dtype(np.float32), "deta": np.dtype(np.float32), "dphi": np.dtype(np.float32),
            "d0": np.dtype(np.float32), "z0": np.dtype(np.float32)},
    "mseg": {"deta": np.dtype(np.float32), "dphi": np.dtype(np.float32), "t0": np.dtype(np.float32),
             "chi2": np.dtype(np.float32)},
}
PT_MIN, PT_MAX, ETA_MAX = 40.0, 1000.0, 2.5
_R_ECAL, _R_HCAL_END = 1.5, 4.0  # metres: the HCal spans [1.5, 4.0)
_R_ID = 0.3                       # decays beyond this leave no tracks from the primary vertex


def mean_decay_radius(m_h: float, m_s: float) -> float:
    """Mean transverse decay radius (m) of the scalar: 0.6 m times its boost m_H / (2 m_S)."""
    return 0.6 * m_h / (2.0 * m_s)


def _check(dataset, n_entries, seed, file_index, tree, chunk_size):
    def is_int(x):
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool)
    if not isinstance(dataset, str) or not dataset:
        raise ValueError(f"dataset must be a non-empty string, got {dataset!r}")
    if not isinstance(tree, str) or not tree:
        raise ValueError(f"tree must be a non-empty string, got {tree!r}")
    for name, v, lo in (("n_entries", n_entries, 0), ("seed", seed, 0), ("file_index", file_index, 0),
                        ("chunk_size", chunk_size, 1)):
        if not is_int(v) or v < lo or (name == "n_entries" and v >= EVENT_STRIDE):
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")


def _sequence(rng, counts, fields, make):
    """Record array of jagged constituents: make(owner index, position) -> {field: flat array}."""
    offsets = np.concatenate([[0], np.cumsum(counts)])
    owner = np.repeat(np.arange(len(counts)), counts)
    pos = np.arange(int(offsets[-1])) - offsets[:-1][owner]
    flat = make(owner, pos)
    return ak.unflatten(ak.zip({f: np.asarray(flat[f], dtype=dt) for f, dt in fields.items()}), counts)


def _generate_chunk(rng, n, process, m_h, m_s, pt_scale):
    code = TRUTH_CODES[process]
    eta = rng.uniform(-ETA_MAX, ETA_MAX, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    # the classes overlap (signal vs QCD AUC ~0.95): displaced-looking QCD is common and resembles the
    # signal in every variable, which each separate only partly
    if process == "signal":
        pt = rng.normal(0.45 * m_h, 0.12 * m_h, n)
        radius = rng.exponential(mean_decay_radius(m_h, m_s), n)
        in_hcal = (radius >= _R_ECAL) & (radius < _R_HCAL_END)
        log_ratio = np.where(in_hcal, rng.normal(1.4, 0.5, n), rng.normal(0.6, 0.6, n))
        width = np.clip(rng.normal(0.04 + 0.0005 * m_s, 0.035, n), 0.002, 0.4)
        time = rng.normal(0.1 + 0.15 * np.minimum(radius, 5.0), 0.6, n)
        n_clus = rng.poisson(6 + 0.05 * m_s, n)
        n_trk = np.where(radius > _R_ID, rng.poisson(1.0, n), rng.poisson(4.0, n))
        n_mseg = np.where(radius > _R_HCAL_END, rng.poisson(4.0, n), rng.poisson(0.3, n))
        d0_scale = np.where(radius > _R_ID, 0.02, 0.0)
    elif process == "qcd":
        pt = PT_MIN + rng.exponential(pt_scale, n)
        radius = np.zeros(n)
        # 40% of the jets look displaced: hadronic, narrow and with few, slightly displaced tracks
        llp_like = rng.random(n) < 0.4
        log_ratio = np.where(llp_like, rng.normal(0.3, 0.5, n), rng.normal(-0.2, 0.5, n))
        width = np.clip(rng.normal(np.where(llp_like, 0.06, 0.10), 0.04, n), 0.002, 0.4)
        time = rng.normal(0.0, 0.6, n)
        n_clus = rng.poisson(np.where(llp_like, 8, 12), n)
        n_trk = rng.poisson(np.where(llp_like, 1.8, 9.0), n)
        n_mseg = rng.poisson(0.3, n)
        d0_scale = np.where(llp_like, 0.01, 0.0)
    else:  # bib
        pt = PT_MIN + rng.exponential(0.7 * pt_scale, n)
        radius = np.zeros(n)
        log_ratio = rng.normal(0.8, 0.6, n)
        width = np.clip(rng.normal(0.04, 0.03, n), 0.002, 0.4)
        time = rng.normal(-0.8, 1.0, n)  # early: the muon arrives ahead of the collision products
        n_clus = rng.poisson(5, n)
        n_trk = rng.poisson(0.4, n)
        # a third of the muons miss the muon chambers' segment finding: few segments, signal-like
        n_mseg = np.where(rng.random(n) < 0.3, rng.poisson(0.5, n), 1 + rng.poisson(6.0, n))
        d0_scale = np.zeros(n)
    pt = np.clip(pt, PT_MIN, np.nextafter(PT_MAX, 0.0))
    n_clus = np.maximum(n_clus, 1)

    # the clusters' EM fractions follow a per-jet smeared log_ratio: they carry part of its information
    # only, so that a tagger relies on log_ratio itself (the control region's data/MC difference)
    cluster_log_ratio = log_ratio + rng.normal(0.0, 0.6, n)

    def clusters(owner, pos):
        k = len(owner)
        em = 1.0 / (1.0 + 10.0 ** cluster_log_ratio[owner])
        return {"pt": 0.5 * pt[owner] * np.exp(-0.3 * pos) * rng.uniform(0.5, 1.0, k),
                "deta": rng.normal(0.0, width[owner]), "dphi": rng.normal(0.0, width[owner]),
                "frac_em": np.clip(em + rng.normal(0.0, 0.05, k), 0.0, 1.0),
                "time": time[owner] + rng.normal(0.0, 0.3, k)}

    def tracks(owner, pos):
        k = len(owner)
        return {"pt": 1.0 + rng.exponential(0.05 * pt[owner]), "deta": rng.normal(0.0, 1.5 * width[owner]),
                "dphi": rng.normal(0.0, 1.5 * width[owner]),
                "d0": rng.normal(0.0, 0.02, k) + rng.exponential(1.0, k) * d0_scale[owner],
                "z0": rng.normal(0.0, 0.1, k)}

    def segments(owner, pos):
        k = len(owner)
        return {"deta": rng.normal(0.0, 0.3, k), "dphi": rng.normal(0.0, np.where(code == 2, 0.05, 0.3), k),
                "t0": time[owner] + rng.normal(0.0, 2.0, k), "chi2": rng.gamma(2.0, 1.5, k)}

    seqs = {"clus": _sequence(rng, n_clus, COLLECTIONS["clus"], clusters),
            "trk": _sequence(rng, n_trk, COLLECTIONS["trk"], tracks),
            "mseg": _sequence(rng, n_mseg, COLLECTIONS["mseg"], segments)}
    cand = {"pt": pt, "eta": eta, "phi": phi, "log_ratio": log_ratio, "width": width, "time": time,
            "decay_radius": radius, "llp_class": np.full(n, code)}
    return {k: np.asarray(v, dtype=CANDIDATE_BRANCHES[k]) for k, v in cand.items()}, seqs


def _branch_types():
    types: dict[str, object] = dict(CANDIDATE_BRANCHES)
    for name, fields in COLLECTIONS.items():
        types[name] = "var * {" + ", ".join(f"{f}: {dt.name}" for f, dt in fields.items()) + "}"
    return types


def _write(path, dataset, n_entries, seed, file_index, tree, chunk_size, make_chunk, title):
    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    root_seq = np.random.SeedSequence(entropy=[int(seed), zlib.crc32(dataset.encode()), int(file_index)])
    n_chunks = -(-n_entries // chunk_size)
    with atomic_path(path, folder=True) as tmp_path, reproducible_root(f"llp:{dataset}:{file_index}:{seed}") as opts, \
            uproot.recreate(tmp_path, compression=uproot.ZSTD(5), **opts) as f:
        ttree = f.mktree(tree, _branch_types(), title=title)
        for i, seq in enumerate(root_seq.spawn(n_chunks)):
            n = min(chunk_size, n_entries - i * chunk_size)
            rng = np.random.default_rng(seq)
            cand, seqs = make_chunk(rng, n)
            start = i * chunk_size
            event = np.uint64(file_index) * np.uint64(EVENT_STRIDE) + np.arange(start, start + n, dtype=np.uint64)
            ttree.extend({"event": event, "run": np.ones(n, dtype=np.int32), **cand, **seqs})


def generate_llp_file(path, dataset: str, n_entries: int, process: str, seed: int, parameters=None,
                      pt_scale: float = 60.0, file_index: int = 0, tree: str = "candidates",
                      chunk_size: int = 50_000) -> dict[str, int]:
    """Write one LLP ntuple of a single process; return {process: n_entries}.

    ``parameters`` ({"m_H": ..., "m_S": ...}, GeV) is required for ``process == "signal"`` with
    0 < 2 m_S < m_H. One jet per event; event = file_index * 10**9 + running index.
    """
    _check(dataset, n_entries, seed, file_index, tree, chunk_size)
    if process not in TRUTH_CODES:
        raise ValueError(f"{dataset}: unknown process {process!r} (known: {', '.join(PROCESSES)})")
    m_h = m_s = 0.0
    if process == "signal":
        try:
            m_h, m_s = float(parameters["m_H"]), float(parameters["m_S"])
        except (TypeError, KeyError, ValueError):
            raise ValueError(f"{dataset}: signal needs parameters {{m_H: number, m_S: number}}, got {parameters!r}") from None
        if not (math.isfinite(m_h) and math.isfinite(m_s) and 0 < 2 * m_s < m_h):
            raise ValueError(f"{dataset}: needs 0 < 2 m_S < m_H, got m_H={m_h:g}, m_S={m_s:g}")
    if not isinstance(pt_scale, (int, float)) or not math.isfinite(pt_scale) or pt_scale <= 0:
        raise ValueError(f"{dataset}: pt_scale must be a finite positive number, got {pt_scale!r}")
    _write(path, dataset, n_entries, seed, file_index, tree, chunk_size,
           lambda rng, n: _generate_chunk(rng, n, process, m_h, m_s, float(pt_scale)),
           f"taggerflow LLP demo ({dataset})")
    return {process: n_entries}


def generate_control_file(path, dataset: str, n_entries: int, is_data: bool, shift_variable: str,
                          shift: float, seed: int, pt_scale: float = 60.0, file_index: int = 0,
                          tree: str = "candidates", chunk_size: int = 50_000) -> dict[str, int]:
    """Write a QCD-like control-region file; for ``is_data`` the candidate variable ``shift_variable``
    is shifted by ``shift`` (the one data/MC difference). The random stream does not depend on
    ``is_data``: with shift 0 a data and an MC file of the same name and seed are identical."""
    _check(dataset, n_entries, seed, file_index, tree, chunk_size)
    allowed = [k for k, dt in CANDIDATE_BRANCHES.items() if dt.kind == "f" and k != "decay_radius"]
    if shift_variable not in allowed:
        raise ValueError(f"{dataset}: shift variable {shift_variable!r} is not one of {', '.join(allowed)}")
    if not isinstance(shift, (int, float)) or isinstance(shift, bool) or not math.isfinite(shift):
        raise ValueError(f"{dataset}: shift must be a finite number, got {shift!r}")

    def chunk(rng, n):
        cand, seqs = _generate_chunk(rng, n, "qcd", 0.0, 0.0, float(pt_scale))
        if is_data:
            shifted = cand[shift_variable] + np.float32(shift)
            if shift_variable == "pt":
                shifted = np.clip(shifted, np.float32(PT_MIN), np.nextafter(np.float32(PT_MAX), np.float32(0)))
            cand[shift_variable] = shifted.astype(np.float32)
        return cand, seqs

    _write(path, dataset, n_entries, seed, file_index, tree, chunk_size, chunk,
           f"taggerflow LLP control region ({dataset}, {'data' if is_data else 'MC'})")
    return {"qcd": n_entries}


def validate_demo_section(demo: dict, classes) -> None:
    """Semantic checks of a ``demo`` section with ``family: llp`` (the schema checked the types);
    raises ValueError("<config key>: <reason>")."""
    if demo.get("family") != "llp":
        raise ValueError(f"demo.family: unknown demo family {demo.get('family')!r} (known: tau, llp)")
    for ds, spec in demo["datasets"].items():
        key = f"demo.datasets.{ds}"
        if spec["n_files"] < 1 or spec["entries_per_file"] < 1:
            raise ValueError(f"{key}: n_files and entries_per_file must be >= 1")
        extra = [k for k in ("eta_width", "class_fractions") if k in spec]
        if extra:
            raise ValueError(f"{key}.{extra[0]}: not a key of the llp family (process, parameters, pt_scale)")
        process = spec.get("process")
        if process not in TRUTH_CODES:
            raise ValueError(f"{key}.process: expected one of {', '.join(PROCESSES)}, got {process!r}")
        if process not in classes:
            raise ValueError(f"{key}.process: '{process}' has no label in classes.labels")
        params = spec.get("parameters")
        if process == "signal":
            if not params or set(params) != {"m_H", "m_S"}:
                raise ValueError(f"{key}.parameters: a signal dataset needs exactly m_H and m_S, got {params!r}")
            if not 0 < 2 * params["m_S"] < params["m_H"]:
                raise ValueError(f"{key}.parameters: needs 0 < 2 m_S < m_H")
        elif params is not None:
            raise ValueError(f"{key}.parameters: only signal datasets have model parameters")
    control = demo.get("control")
    if control is not None:
        var = control["shift"]["variable"]
        allowed = [k for k, dt in CANDIDATE_BRANCHES.items() if dt.kind == "f" and k != "decay_radius"]
        if var not in allowed:
            raise ValueError(f"demo.control.shift.variable: {var!r} is not one of {', '.join(allowed)}")
        flags = [spec["is_data"] for spec in control["datasets"].values()]
        if True not in flags or False not in flags:
            raise ValueError("demo.control.datasets: needs at least one data (is_data: true) and one MC dataset")
        for ds, spec in control["datasets"].items():
            if ds in demo["datasets"]:
                raise ValueError(f"demo.control.datasets.{ds}: also a name in demo.datasets")
            if spec["n_files"] < 1 or spec["entries_per_file"] < 1:
                raise ValueError(f"demo.control.datasets.{ds}: n_files and entries_per_file must be >= 1")
