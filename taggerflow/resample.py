"""ShuffleMergeSpectral: resample candidates to a flat pt-|eta| spectrum per class and a target
class ratio, mixing datasets, split over jobs (the TauMLTools algorithm, see shared/references).

Unlike the peers, nothing is lost silently: the split's remainder goes to the first jobs, no job
stops while a dataset still has entries, and each job's manifest counts read/accepted/rejected
candidates per input file and class (read = accepted + rejected + unlabelled).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import awkward as ak
import numpy as np
import uproot

from taggerflow.config import Config
from taggerflow.io import (Segment, SegmentReader, check_branches, collection_fields, input_branches,
                           labels_from_truth, open_tree, to_writable, writable_types)
from taggerflow.utils import atomic_path, job_seed, stable_hash64, write_json


class ResamplingError(ValueError):
    """The spectra do not allow the requested resampling; the message names dataset, class, bin."""


def split_entries(files: Sequence[tuple[str, int]], n_jobs: int) -> list[list[Segment]]:
    """Split the global entry range of an ordered file list into ``n_jobs`` contiguous parts.
    Sizes differ by at most one (the remainder goes to the first jobs); files may be cut part-way.
    Counts are Python ints (no 32-bit overflow)."""
    total = sum(int(n) for _, n in files)
    step, rem = divmod(total, n_jobs)
    bounds = [j * step + min(j, rem) for j in range(n_jobs + 1)]
    offsets = np.concatenate([[0], np.cumsum([int(n) for _, n in files], dtype=np.int64)]).tolist()
    jobs: list[list[Segment]] = []
    for j in range(n_jobs):
        lo, hi = bounds[j], bounds[j + 1]
        segs = []
        for (path, n), off in zip(files, offsets):
            a, b = max(lo, off), min(hi, off + int(n))
            if b > a:
                segs.append(Segment(path, a - off, b - off))
        jobs.append(segs)
    return jobs


def acceptance(coarse: dict[str, np.ndarray], classes: list[str], class_ratio: dict[str, float],
               enable_emptybin: bool, pt_bins: Sequence[float], eta_bins: Sequence[float]
               ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Acceptance probabilities.

    coarse: dataset -> (n_classes, n_pt, n_eta) counts in the coarse bins.
    Returns P: dataset -> (n_classes, n_pt, n_eta) in [0, 1], flattening each dataset's spectrum of
    each class (every bin yields about the count of its least populated bin), and p_class
    (n_classes,) so that the expected accepted counts follow class_ratio (-1: take all).
    """
    n_cls = len(classes)
    P: dict[str, np.ndarray] = {}
    for ds, counts in coarse.items():
        p = np.zeros(counts.shape, dtype=np.float64)
        for t, cls in enumerate(classes):
            n = counts[t].astype(np.float64)
            ratio = class_ratio.get(cls, 0)
            if ratio == -1:
                p[t] = 1.0
                continue
            if n.sum() == 0 or ratio == 0:
                continue
            empty = np.argwhere(n == 0)
            if len(empty) and not enable_emptybin:
                i, k = empty[0]
                raise ResamplingError(
                    f"dataset '{ds}', class '{cls}': empty bin pt [{pt_bins[i]}, {pt_bins[i + 1]}) x |eta| "
                    f"[{eta_bins[k]}, {eta_bins[k + 1]}) ({len(empty)} empty bins in all); use coarser "
                    f"resampling bins or set resampling.enable_emptybin: true")
            n_min = n[n > 0].min()
            p[t] = np.where(n > 0, n_min / np.maximum(n, 1), 0.0)
        P[ds] = p
    expected = np.zeros(n_cls)
    for ds, counts in coarse.items():
        expected += (counts * P[ds]).sum(axis=(1, 2))
    p_class = np.zeros(n_cls)
    for t, cls in enumerate(classes):
        r = class_ratio.get(cls, 0)
        if r == -1:
            p_class[t] = -1
        elif r > 0:
            if expected[t] == 0:
                raise ResamplingError(f"class '{cls}' has ratio {r} but no dataset provides candidates of it")
            p_class[t] = r / expected[t]
    flattened = p_class > 0
    if flattened.any():
        p_class[flattened] /= p_class[flattened].max()
    p_class[p_class == -1] = 1.0
    return P, p_class


def _bin_index(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Coarse bin of each value; -1 outside [edges[0], edges[-1])."""
    idx = np.searchsorted(np.asarray(edges, dtype=float), values, side="right") - 1
    idx[(values < edges[0]) | (values >= edges[-1])] = -1
    return idx


def run_job(cfg: Config, job: int, segments: dict[str, list[Segment]], P: dict[str, np.ndarray],
            p_class: np.ndarray, shard_path: str, manifest_path: str) -> dict:
    """Read this job's entry ranges of every dataset, accept, mix and write one shard + manifest.

    Mixing: the job proceeds in rounds; in each round every dataset contributes a number of
    candidates proportional to its entries in this job (so datasets are mixed at random weighted by
    their entries and all end in the same round), and the round's accepted candidates are permuted.
    """
    rs = cfg.raw["resampling"]
    pt_bins, eta_bins = rs["pt_bins"], rs["eta_bins"]
    classes = cfg.class_names
    rng = np.random.default_rng(job_seed(cfg.seed, "shuffle", job))
    datasets = [ds for ds in cfg.dataset_names if segments.get(ds)]
    sizes = {ds: sum(s.stop - s.start for s in segments[ds]) for ds in datasets}
    total = sum(sizes.values())
    buffer = int(rs.get("mix_buffer", 10_000))
    n_rounds = max(1, math.ceil(total / buffer))

    # branches: those of the first file, checked to exist in every file of the job
    first = next((segments[ds][0].path for ds in datasets), None)
    branches: list[str] = []
    coll_fields: dict[str, list[str]] = {}
    if first is not None:
        t0 = open_tree(first, cfg.tree)
        branches = input_branches(t0)
        coll_fields = collection_fields(t0, branches)
        for ds in datasets:
            for seg in segments[ds]:
                check_branches(open_tree(seg.path, cfg.tree), seg.path,
                               {b: f"the branches of {first}" for b in branches})
    readers = {ds: SegmentReader(segments[ds], cfg.tree, branches, block=max(cfg.chunk_size // max(len(datasets), 1), 1))
               for ds in datasets}
    ids = {ds: stable_hash64(ds) for ds in datasets}
    group_ids = {ds: stable_hash64(f"group:{ds}") for ds in datasets}

    manifest_files: dict[str, dict] = {}

    def file_entry(path: str, ds: str) -> dict:
        return manifest_files.setdefault(path, {"dataset": ds, "read": 0, "unlabelled": 0,
                                                "accepted": {c: 0 for c in classes},
                                                "rejected": {c: 0 for c in classes}})

    n_written = 0
    written_per_class = np.zeros(len(classes), dtype=np.int64)
    with atomic_path(shard_path, suffix=".root") as tmp:
        with uproot.recreate(tmp, compression=uproot.ZSTD(5)) as fout:
            tree_made = False
            for r in range(n_rounds):
                pieces = []
                for ds in datasets:
                    # entries of this dataset in rounds [0, r]: floor((r+1) * size / n_rounds)
                    k = (r + 1) * sizes[ds] // n_rounds - r * sizes[ds] // n_rounds
                    for path, chunk in readers[ds].take(k):
                        entry = file_entry(path, ds)
                        accepted = _accept(cfg, chunk, P[ds], p_class, pt_bins, eta_bins, rng, entry, classes)
                        sel = chunk[accepted["mask"]]
                        sel = ak.with_field(sel, accepted["labels"], "class_label")
                        sel = ak.with_field(sel, np.full(len(sel), ids[ds], dtype=np.int64), "dataset_id")
                        sel = ak.with_field(sel, np.full(len(sel), group_ids[ds], dtype=np.int64), "dataset_group_id")
                        pieces.append(sel)
                if not pieces:
                    continue
                merged = ak.concatenate(pieces) if len(pieces) > 1 else pieces[0]
                merged = merged[rng.permutation(len(merged))]
                if len(merged) == 0 and tree_made:
                    continue
                data = to_writable(merged, coll_fields)
                if not tree_made:
                    fout.mktree(cfg.tree, writable_types(data))  # a TTree (not an RNTuple)
                    tree_made = True
                    fout[cfg.tree].extend(data)
                else:
                    fout[cfg.tree].extend(data)
                n_written += len(merged)
                written_per_class += np.bincount(ak.to_numpy(merged["class_label"]), minlength=len(classes))
            for ds in datasets:
                if readers[ds].remaining:
                    raise RuntimeError(f"job {job}: dataset '{ds}' still has {readers[ds].remaining} "
                                       f"unread entries (internal error)")

    manifest = {
        "job": job,
        "seed_entropy": list(job_seed(cfg.seed, "shuffle", job).entropy),
        "n_rounds": n_rounds,
        "entries_written": n_written,
        "written_per_class": dict(zip(classes, written_per_class.tolist())),
        "dataset_ids": {ds: ids[ds] for ds in datasets},
        "dataset_group_ids": {ds: group_ids[ds] for ds in datasets},
        "segments": {ds: [[s.path, s.start, s.stop] for s in segments[ds]] for ds in datasets},
        "files": manifest_files,
        "class_probabilities": dict(zip(classes, p_class.tolist())),
    }
    write_json(manifest_path, manifest)
    return manifest


def _accept(cfg: Config, chunk: ak.Array, P: np.ndarray, p_class: np.ndarray, pt_bins, eta_bins,
            rng: np.random.Generator, entry: dict, classes: list[str]) -> dict:
    labels = labels_from_truth(ak.to_numpy(chunk[cfg.truth_branch]), cfg.truth_codes)
    ipt = _bin_index(ak.to_numpy(chunk["pt"]).astype(np.float64), pt_bins)
    ieta = _bin_index(np.abs(ak.to_numpy(chunk["eta"]).astype(np.float64)), eta_bins)
    ok = (labels >= 0) & (ipt >= 0) & (ieta >= 0)
    prob = np.zeros(len(chunk))
    prob[ok] = p_class[labels[ok]] * P[labels[ok], ipt[ok], ieta[ok]]
    u = rng.random(len(chunk))
    mask = ok & (u < prob)
    entry["read"] += len(chunk)
    entry["unlabelled"] += int(np.count_nonzero(labels < 0))
    acc = np.bincount(labels[mask], minlength=len(classes))
    lab = np.bincount(labels[labels >= 0], minlength=len(classes))
    for t, c in enumerate(classes):
        entry["accepted"][c] += int(acc[t])
        entry["rejected"][c] += int(lab[t] - acc[t])
    return {"mask": mask, "labels": labels[mask].astype(np.int32)}
