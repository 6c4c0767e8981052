"""Spectrum: fine pt-|eta| histograms per class of one input file, and its entry count."""

from __future__ import annotations

import hist
import numpy as np
import uproot

from taggerflow.config import Config
from taggerflow.io import check_branches, labels_from_truth, open_tree, read_range
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


def file_spectrum(cfg: Config, path: str) -> dict:
    """Histogram one file. Returns the per-class histograms (with flow bins, so every labelled
    candidate is counted) plus the entry count and the number of candidates without a class."""
    t = open_tree(path, cfg.tree)
    check_branches(t, path, cfg.required_branches())
    hists = {c: _new_hist(cfg) for c in cfg.class_names}
    unlabelled = 0
    entries = int(t.num_entries)
    for chunk in read_range(path, cfg.tree, ["pt", "eta", cfg.truth_branch], 0, entries, cfg.chunk_size):
        pt = chunk["pt"].to_numpy()
        abs_eta = np.abs(chunk["eta"].to_numpy())
        labels = labels_from_truth(chunk[cfg.truth_branch].to_numpy(), cfg.truth_codes)
        unlabelled += int(np.count_nonzero(labels < 0))
        for i, c in enumerate(cfg.class_names):
            sel = labels == i
            hists[c].fill(pt=pt[sel], abs_eta=abs_eta[sel])
    return {"entries": entries, "unlabelled": unlabelled, "hists": hists}


def write_spectrum(result: dict, npz_path: str, root_path: str, classes: list[str]) -> None:
    """Save as numpy (counts with flow bins, edges) and as ROOT TH2D per class (uproot)."""
    hists = result["hists"]
    first = hists[classes[0]]
    counts = np.stack([hists[c].values(flow=True) for c in classes]).astype(np.int64)
    with atomic_path(npz_path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, counts_flow=counts, pt_edges=first.axes[0].edges, abs_eta_edges=first.axes[1].edges,
                     entries=np.int64(result["entries"]), unlabelled=np.int64(result["unlabelled"]),
                     classes=np.array(classes))
    with atomic_path(root_path, suffix=".root") as tmp:
        with uproot.recreate(tmp) as f:
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
