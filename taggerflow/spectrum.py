"""Spectrum: fine pt-|eta| histograms per class of one input file (any input format), its entry count."""

from __future__ import annotations

import awkward as ak
import hist
import numpy as np
import uproot

from taggerflow.config import Config
from taggerflow.io import atomic_output, labels_from_truth, reproducible_root
from taggerflow.readers import input_spec, iter_prepared, open_source
from taggerflow.utils import atomic_path


def fine_edges(cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    s = cfg.raw["spectrum"]
    pt, eta = s["pt_fine"], s["abs_eta_fine"]
    return (np.linspace(pt["start"], pt["stop"], pt["n_bins"] + 1),
            np.linspace(eta["start"], eta["stop"], eta["n_bins"] + 1))


def _new_hist(cfg: Config) -> hist.Hist:
    s = cfg.raw["spectrum"]
    pt, eta = s["pt_fine"], s["abs_eta_fine"]
    return hist.Hist(hist.axis.Regular(pt["n_bins"], pt["start"], pt["stop"], name="pt", label="pt [GeV]"),
                     hist.axis.Regular(eta["n_bins"], eta["start"], eta["stop"], name="abs_eta", label="|eta|"),
                     storage=hist.storage.Int64())


def file_spectrum(cfg: Config, path: str, dataset: str | None = None) -> dict:
    """Histogram one file (any input format, after the config's aliases and selection).

    Returns the per-class histograms (with flow bins, so every labelled candidate is counted), the
    entry count of the file (tree entries: what the jobs split), the candidates read, those removed by
    ``inputs.selection`` and those without a class. Checks first that every branch the config needs
    exists, so a missing branch fails here, naming the file, the branch and the config key."""
    spec = input_spec(cfg, dataset)
    src = open_source(spec, path)
    try:
        src.check_fields(cfg.required_branches(), spec.alias_names)
        if hasattr(src, "check_integrity"):  # the branches read here (the shuffle job checks all)
            src.check_integrity(sorted(spec.raw_fields_for(["pt", "eta", cfg.truth_branch]) & set(src.fields())))
        counts = _count(cfg, spec, src, 0, src.num_entries)
        entries = src.num_entries
    finally:
        src.close()
    hists = {}
    for i, c in enumerate(cfg.class_names):
        h = _new_hist(cfg)
        h.view(flow=True)[...] = counts["counts_flow"][i]
        hists[c] = h
    return {"entries": entries, "candidates": counts["candidates"], "deselected": counts["deselected"],
            "unlabelled": counts["unlabelled"], "hists": hists, "dataset": dataset or "", "path": path}


def flow_index(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index with flow bins on regular ``edges`` (= np.searchsorted(edges, x, 'right'), exact at
    the edges), computed arithmetically and corrected against the edges: a few vector operations."""
    n = len(edges) - 1
    x = np.asarray(x, dtype=np.float64)
    idx = np.floor((x - edges[0]) * (n / (edges[-1] - edges[0]))).astype(np.int64) + 1 \
        if np.isfinite(x).all() else np.searchsorted(edges, x, side="right")
    np.clip(idx, 0, n + 1, out=idx)
    low = np.take(edges, np.clip(idx - 1, 0, n))   # lower edge of the bin (idx >= 1)
    high = np.take(edges, np.clip(idx, 0, n))      # upper edge of the bin (idx <= n)
    idx -= ((idx >= 1) & (x < low))
    idx += ((idx <= n) & (x >= high))
    return idx


def _count(cfg: Config, spec, src, start: int, stop: int) -> dict:
    """Fine counts (n_classes, n_pt+2, n_eta+2) of entries [start, stop) of an open source."""
    pt_e, eta_e = fine_edges(cfg)
    n_cls = len(cfg.class_names)
    shape = (n_cls, len(pt_e) + 1, len(eta_e) + 1)
    flat = np.zeros(int(np.prod(shape)), dtype=np.int64)
    read = selected = unlabelled = 0
    truth = cfg.truth_branch
    for chunk, n in iter_prepared(spec, src, start, stop, ["pt", "eta", truth], cfg.chunk_size):
        read += n
        selected += len(chunk)
        labels = labels_from_truth(ak.to_numpy(chunk[truth]), cfg.truth_codes)
        ok = labels >= 0
        unlabelled += int(len(labels) - np.count_nonzero(ok))
        pt = ak.to_numpy(chunk["pt"])[ok]
        aeta = np.abs(ak.to_numpy(chunk["eta"])[ok])
        ipt = flow_index(pt, pt_e)     # 0: underflow, n+1: overflow (and NaN)
        ieta = flow_index(aeta, eta_e)
        idx = (labels[ok].astype(np.int64) * shape[1] + ipt) * shape[2] + ieta
        flat += np.bincount(idx, minlength=flat.size)
    return {"counts_flow": flat.reshape(shape), "candidates": read, "deselected": read - selected,
            "unlabelled": unlabelled}


def write_spectrum(result: dict, npz_path: str, root_path: str, classes: list[str]) -> None:
    """Save as numpy (counts with flow bins, edges) and as ROOT TH2D per class (uproot)."""
    hists = result["hists"]
    first = hists[classes[0]]
    counts = np.stack([hists[c].values(flow=True) for c in classes]).astype(np.int64)
    with atomic_path(npz_path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, counts_flow=counts, pt_edges=first.axes[0].edges, abs_eta_edges=first.axes[1].edges,
                     entries=np.int64(result["entries"]), unlabelled=np.int64(result["unlabelled"]),
                     candidates=np.int64(result.get("candidates", result["entries"])),
                     deselected=np.int64(result.get("deselected", 0)),
                     dataset=np.array(result.get("dataset", "")), path=np.array(result.get("path", "")),
                     classes=np.array(classes))
    with atomic_output(root_path) as tmp, reproducible_root(f"spectrum:{result.get('path', '')}") as opts:
        with uproot.recreate(tmp, **opts) as f:
            for c in classes:
                # ROOT's TH2 holds floating-point (or 32-bit) counts: write a Double copy
                h = hist.Hist(*hists[c].axes, storage=hist.storage.Double())
                h.view(flow=True)[...] = hists[c].view(flow=True)
                f[f"spectrum_{c}"] = h


def load_spectrum(npz_path: str) -> dict:
    with np.load(npz_path) as d:
        return {k: d[k] for k in d.files}


def coarse_counts(counts_flow: np.ndarray, fine_pt: np.ndarray, fine_eta: np.ndarray,
                  pt_bins: list[float], eta_bins: list[float]) -> np.ndarray:
    """Rebin (n_classes, n_pt+2, n_eta+2) fine counts with flow into the coarse bins (no flow):
    the coarse edges lie on fine edges (validated with the config)."""
    inner = counts_flow[:, 1:-1, 1:-1]
    ipt = np.searchsorted(fine_pt, np.asarray(pt_bins, dtype=float) - 1e-9 * np.abs(pt_bins))
    ieta = np.searchsorted(fine_eta, np.asarray(eta_bins, dtype=float) - 1e-9)
    ipt = np.clip(ipt, 0, len(fine_pt) - 1)
    ieta = np.clip(ieta, 0, len(fine_eta) - 1)
    csum = np.zeros((inner.shape[0], inner.shape[1] + 1, inner.shape[2] + 1), dtype=np.int64)
    csum[:, 1:, 1:] = inner.cumsum(1).cumsum(2)
    a = csum[:, ipt[1:]][:, :, ieta[1:]] - csum[:, ipt[:-1]][:, :, ieta[1:]]
    b = csum[:, ipt[1:]][:, :, ieta[:-1]] - csum[:, ipt[:-1]][:, :, ieta[:-1]]
    return a - b
