"""ShuffleMergeSpectral: resample candidates to a flat pt-|eta| spectrum per class and a target
class ratio, mixing data groups, split over jobs (the TauMLTools algorithm, see shared/references).

Data groups (``resampling.groups``: name, dataset regex, file regex, classes; default: one group per
dataset with every class): a file belongs to the group whose dataset regex fully matches its dataset
name (the dataset directory) and whose file regex fully matches its file name; a group contributes
only its listed classes. Per group and class, N(b) counts candidates in the coarse bins and

* ``lastbin_takeall`` false: P(b) = N_min / N(b) (every bin yields about N_min candidates);
* ``lastbin_takeall`` true: below the last pt bin P(b) = s N_min / N(b) with
  s = min(1, D N_hi / (n_low N_min)) (D = ``lastbin_disbalance``, N_hi the count of the last pt bin,
  n_low the number of bins below it): the low-pt region yields at most D times N_hi; candidates of
  the last pt bin are always kept;
* an empty bin is an error unless ``enable_emptybin`` (then P = 0 there);
* class probabilities p_t = r_t / E_t (E_t = sum over groups and bins of N P) divided by the largest;
  r = -1 keeps every candidate of the class (P = 1, p = 1);
* ``refill_spectrum``: each job counts N from its own slice (a first pass) instead of the spectra.

Candidates outside ``pt_range`` x ``abs_eta_range`` (default: the outer bin edges) are rejected.

Unlike the peers, nothing is lost silently: per group the split's remainder goes to the first jobs;
every block of every group is read, so an exhausted group never ends a job; each job's manifest counts
read / accepted / rejected / unlabelled / deselected candidates per input file and class
(read = accepted + rejected + unlabelled + deselected; summed over jobs = the spectrum's counts).

Mixing (within and across groups): each group's slice is cut into blocks aligned to the files'
compression clusters; the blocks of all groups are taken in a random order (so groups are drawn in
proportion to their entries) into ``mix_streams`` streams that are consumed side by side (each round
reads ``mix_buffer`` candidates, shared among the streams in proportion to what they have left), and
the accepted candidates of each round are permuted before they are written. Consecutive output candidates therefore come from several files at once, and memory is
bounded by mix_streams blocks whatever the input size. One seed per job, derived from the global
seed; shards are byte-identical for the same configuration (see taggerflow.shards).
"""

from __future__ import annotations

import json
import math
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import awkward as ak
import hist
import numpy as np

from taggerflow.config import Config
from taggerflow.event_weights import WEIGHT_FIELD
from taggerflow.io import InputError, Segment, labels_from_truth
from taggerflow.integrity import write_shard_checksum
from taggerflow.readers import (available_fields, input_spec, match_any, open_source, read_prepared,
                                split_location)
from taggerflow.shards import SUFFIX, Columns, shard_writer
from taggerflow.utils import atomic_path, job_seed, stable_hash64, write_json

ADDED_BRANCHES = ("class_label", "dataset_id", "dataset_group_id")


class ResamplingError(ValueError):
    """The spectra do not allow the requested resampling; the message names group, class, bin."""


# ---------------------------------------------------------------------------------------------
# groups and ids
@dataclass(frozen=True)
class Group:
    name: str
    dataset: str
    file: str
    classes: tuple[str, ...]

    @property
    def id(self) -> int:
        return group_id(self.name)


def dataset_id(name: str) -> int:
    return stable_hash64(name)


def group_id(name: str) -> int:
    return stable_hash64(f"group:{name}")


def config_groups(cfg: Config) -> list[Group]:
    """The data groups of the config; without ``resampling.groups``, one group per dataset."""
    specs = cfg.raw["resampling"].get("groups")
    if not specs:
        return [Group(ds, re.escape(ds), ".*", tuple(cfg.class_names)) for ds in cfg.dataset_names]
    return [Group(g["name"], g["dataset"], g["file"], tuple(g["classes"])) for g in specs]


def assign_groups(cfg: Config, files: Sequence[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """{group: [(dataset, path), ...]} in input order. A file matching no group or several is an error."""
    groups = config_groups(cfg)
    out: dict[str, list[tuple[str, str]]] = {g.name: [] for g in groups}
    for ds, path in files:
        _, name = split_location(path)
        hits = [g.name for g in groups if re.fullmatch(g.dataset, ds) and re.fullmatch(g.file, name)]
        if not hits:
            raise ResamplingError(f"{path} (dataset '{ds}'): matches no group of resampling.groups (a file "
                                  f"belongs to a group when the dataset and file regexes fully match)")
        if len(hits) > 1:
            raise ResamplingError(f"{path} (dataset '{ds}'): matches several groups ({', '.join(hits)})")
        out[hits[0]].append((ds, path))
    return out


def id_maps(cfg: Config) -> dict[str, dict[str, int]]:
    """Stable 64-bit ids (blake2b of the name) of every dataset and group of the config."""
    ds = {d: dataset_id(d) for d in cfg.dataset_names}
    gr = {g.name: g.id for g in config_groups(cfg)}
    for kind, m in (("dataset", ds), ("group", gr)):
        if len(set(m.values())) != len(m):
            raise ResamplingError(f"two {kind} names have the same 64-bit id: rename one")
    return {"dataset_ids": ds, "dataset_group_ids": gr}


# ---------------------------------------------------------------------------------------------
def split_entries(files: Sequence[tuple], n_jobs: int) -> list[list[Segment]]:
    """Split the global entry range of an ordered file list into ``n_jobs`` contiguous parts.
    Items are (path, entries) or (path, entries, dataset). Sizes differ by at most one (the remainder
    goes to the first jobs); files may be cut part-way. Counts are Python ints (no 32-bit overflow)."""
    sizes = [int(f[1]) for f in files]
    total = sum(sizes)
    step, rem = divmod(total, n_jobs)
    bounds = [j * step + min(j, rem) for j in range(n_jobs + 1)]
    offsets = [0]
    for n in sizes:
        offsets.append(offsets[-1] + n)
    jobs: list[list[Segment]] = []
    for j in range(n_jobs):
        lo, hi = bounds[j], bounds[j + 1]
        segs = []
        for f, off, n in zip(files, offsets, sizes):
            a, b = max(lo, off), min(hi, off + n)
            if b > a:
                segs.append(Segment(f[0], a - off, b - off, f[2] if len(f) > 2 else ""))
        jobs.append(segs)
    return jobs


def acceptance(coarse: dict[str, np.ndarray], classes: list[str], class_ratio: dict[str, float],
               enable_emptybin: bool, pt_bins: Sequence[float], eta_bins: Sequence[float], *,
               group_classes: dict[str, Sequence[str]] | None = None, lastbin_takeall: bool = False,
               lastbin_disbalance: float | None = None,
               inputs: dict[str, list[tuple[str, str, int, np.ndarray]]] | None = None
               ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Acceptance probabilities (the TauMLTools semantics, see the module docstring).

    coarse: group -> (n_classes, n_pt, n_eta) counts N in the coarse bins; group_classes: the classes
    each group contributes (default: all). Returns P: group -> (n_classes, n_pt, n_eta) in [0, 1] and
    p_class (n_classes,), so that the expected accepted counts follow class_ratio (-1: take all).
    inputs: group -> its files as (dataset, path, entries, per-class counts in the bins), only to
    name, when a class has no candidate, the files that gave none (an empty file, a wrong dataset).
    """
    def empty_note(cls: str, in_groups) -> str:
        return _empty_inputs_note(inputs, classes.index(cls), cls, in_groups)

    if lastbin_takeall and lastbin_disbalance is None:
        # no second default here: resampling.lastbin_disbalance's is in taggerflow/schema.py
        raise ValueError("acceptance: lastbin_takeall needs lastbin_disbalance (resampling.lastbin_disbalance)")
    n_cls = len(classes)
    gcls = {g: set(group_classes[g]) if group_classes is not None else set(classes) for g in coarse}
    for cls, r in class_ratio.items():
        if r != 0 and not any(cls in s for s in gcls.values()):
            raise ResamplingError(f"class '{cls}' is in resampling.class_ratio ({r}) but no group provides it "
                                  f"(groups: {', '.join(f'{g}: {sorted(s)}' for g, s in gcls.items())})")
    P: dict[str, np.ndarray] = {}
    for g, counts in coarse.items():
        counts = np.asarray(counts)
        p = np.zeros(counts.shape, dtype=np.float64)
        for t, cls in enumerate(classes):
            ratio = class_ratio.get(cls, 0)
            if cls not in gcls[g] or ratio == 0:
                continue
            if ratio == -1:
                p[t] = 1.0
                continue
            n = counts[t].astype(np.float64)
            low = n[:-1] if lastbin_takeall else n
            if group_classes is None and n.sum() == 0:
                continue  # default groups (one per dataset): a dataset need not have every class
            if n.sum() == 0 and not enable_emptybin:
                raise ResamplingError(f"group '{g}' has no candidate of class '{cls}' (in resampling.groups) "
                                      f"in the resampling bins{empty_note(cls, [g])}")
            empty = np.argwhere(low == 0)
            if len(empty) and not enable_emptybin:
                i, k = empty[0]
                raise ResamplingError(
                    f"group '{g}', class '{cls}': empty bin pt [{pt_bins[i]}, {pt_bins[i + 1]}) x |eta| "
                    f"[{eta_bins[k]}, {eta_bins[k + 1]}) ({len(empty)} empty bins in all); use coarser "
                    f"resampling bins or set resampling.enable_emptybin: true")
            if not (low > 0).any():
                continue  # every bin empty and allowed: the group gives nothing of this class
            n_min = low[low > 0].min()
            flat = np.where(low > 0, n_min / np.maximum(low, 1), 0.0)
            if lastbin_takeall:
                n_hi = n[-1].sum()
                if n_hi == 0:
                    raise ResamplingError(
                        f"group '{g}', class '{cls}': the last pt bin [{pt_bins[-2]}, {pt_bins[-1]}) is empty, "
                        f"so lastbin_takeall has nothing to balance against (disbalance scale 0)")
                n_low_bins = low.size
                s = min(1.0, lastbin_disbalance * n_hi / (n_low_bins * n_min))
                p[t, :-1] = s * flat
                p[t, -1] = 1.0
            else:
                p[t] = flat
        P[g] = p
    expected = np.zeros(n_cls)
    for g, counts in coarse.items():
        expected += (np.asarray(counts) * P[g]).sum(axis=(1, 2))
    p_class = np.zeros(n_cls)
    for t, cls in enumerate(classes):
        r = class_ratio.get(cls, 0)
        if r == -1:
            if expected[t] == 0:
                raise ResamplingError(f"class '{cls}' has ratio -1 (take all) but no group has candidates of it"
                                      f"{empty_note(cls, [g for g in coarse if cls in gcls[g]])}")
            p_class[t] = -1
        elif r > 0:
            if expected[t] == 0:
                raise ResamplingError(f"class '{cls}' has ratio {r} but no group provides candidates of it"
                                      f"{empty_note(cls, [g for g in coarse if cls in gcls[g]])}")
            p_class[t] = r / expected[t]
    flattened = p_class > 0
    if flattened.any():
        p_class[flattened] /= p_class[flattened].max()
    p_class[p_class == -1] = 1.0
    return P, p_class


def _empty_inputs_note(inputs, t: int, cls: str, groups: Sequence[str], limit: int = 5) -> str:
    """'; no 'tau' candidate in: dataset 'dy' file a.root (empty file: 0 entries), ...' for the
    files of ``groups`` without a candidate of class ``cls`` (index ``t``) in the bins."""
    if not inputs:
        return ""
    none = [(ds, path, entries) for g in groups for ds, path, entries, per_class in inputs.get(g, [])
            if int(np.asarray(per_class)[t]) == 0]
    if not none:
        return ""
    text = ", ".join(f"dataset '{ds}' file {path} " + ("(empty file: 0 entries)" if entries == 0 else
                                                       f"({entries} entries, none of class '{cls}')")
                     for ds, path, entries in none[:limit])
    more = f" and {len(none) - limit} more files" if len(none) > limit else ""
    return f"; no '{cls}' candidate in: {text}{more}"


def _bin_index(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Coarse bin of each value; -1 outside [edges[0], edges[-1])."""
    idx = np.searchsorted(np.asarray(edges, dtype=float), values, side="right") - 1
    idx[(values < edges[0]) | (values >= edges[-1]) | np.isnan(values)] = -1
    return idx


# ---------------------------------------------------------------------------------------------
# planning from the spectra
@dataclass
class JobPlan:
    """Everything one job needs: its segments per group, the group classes, N, P and p_class."""

    segments: dict[str, list[Segment]]
    group_classes: dict[str, list[str]] | None
    N: dict[str, np.ndarray]
    P: dict[str, np.ndarray] | None
    p_class: np.ndarray | None
    files: dict[str, dict] = field(default_factory=dict)


def spectrum_summary(cfg: Config, spectrum: dict) -> dict:
    """What plan_job needs of one file's spectrum: dataset, path, entries and its counts in the
    coarse resampling bins (``coarse``), without the fine counts (so that a job holding the summaries
    of every input file needs little memory per file)."""
    from taggerflow.spectrum import coarse_counts

    rs = cfg.raw["resampling"]
    coarse = coarse_counts(np.asarray(spectrum["counts_flow"]), np.asarray(spectrum["pt_edges"]),
                           np.asarray(spectrum["abs_eta_edges"]), rs["pt_bins"], rs["eta_bins"])
    return {"dataset": spectrum["dataset"], "path": spectrum["path"], "entries": int(spectrum["entries"]),
            "coarse": np.ascontiguousarray(coarse, dtype=np.int64)}


def plan_job(cfg: Config, spectra: Sequence[dict], job: int, n_jobs: int) -> JobPlan:
    """Plan job ``job`` of ``n_jobs`` from per-file spectra (dicts with dataset, path, entries and
    counts_flow/pt_edges/abs_eta_edges as written by Spectrum, or their :func:`spectrum_summary`),
    in input order."""
    rs = cfg.resolved["resampling"]   # defaults: taggerflow.schema
    groups = {g.name: g for g in config_groups(cfg)}
    assigned = assign_groups(cfg, [(s["dataset"], s["path"]) for s in spectra])
    by_path = {s["path"]: s for s in spectra}
    N: dict[str, np.ndarray] = {}
    segments: dict[str, list[Segment]] = {}
    inputs: dict[str, list] = {}   # named in acceptance's errors when a class has no candidate
    n_cls = len(cfg.class_names)
    shape = (n_cls, len(rs["pt_bins"]) - 1, len(rs["eta_bins"]) - 1)
    for g, members in assigned.items():
        N[g] = np.zeros(shape, dtype=np.int64)
        files = []
        keep = np.isin(cfg.class_names, groups[g].classes)
        inputs[g] = []
        for ds, path in members:
            s = by_path[path]
            coarse = s["coarse"] if "coarse" in s else spectrum_summary(cfg, s)["coarse"]
            N[g] += coarse
            files.append((path, int(s["entries"]), ds))
            inputs[g].append((ds, path, int(s["entries"]), np.where(keep, coarse.sum(axis=(1, 2)), 0)))
        N[g][~keep] = 0
        segments[g] = split_entries(files, n_jobs)[job] if files else []
    gcls = {g: list(groups[g].classes) for g in assigned} if rs.get("groups") else None
    P = p_class = None
    if not rs["refill_spectrum"]:
        P, p_class = acceptance(N, cfg.class_names, rs["class_ratio"], bool(rs["enable_emptybin"]),
                                rs["pt_bins"], rs["eta_bins"], group_classes=gcls,
                                lastbin_takeall=bool(rs["lastbin_takeall"]),
                                lastbin_disbalance=float(rs["lastbin_disbalance"]), inputs=inputs)
    return JobPlan(segments, gcls, N, P, p_class)


# ---------------------------------------------------------------------------------------------
class _Sources:
    """Open input files, at most ``size`` at a time (least recently used closed first).

    The blocks of a job come from all its files in random order, so a cache of ``size`` < n files
    re-opens a file at a fraction 1 - size / n of the blocks: re-parsing its metadata (~5 ms) and
    fragmenting the heap with its ~20k objects (10x the input, 20 files: +10 % peak RSS with 16
    open files, +5 % with all 20 open). An open ROOT file holds ~0.3-0.4 MB, so the default keeps
    up to 64 open: every file of a typical job, and a bounded memory (and file descriptors)
    whatever the input."""

    def __init__(self, cfg: Config, size: int = 64):
        self.cfg, self.size = cfg, size
        self._open: OrderedDict = OrderedDict()
        self.specs: dict[str, object] = {}

    def spec(self, dataset: str):
        if dataset not in self.specs:
            self.specs[dataset] = input_spec(self.cfg, dataset or None)
        return self.specs[dataset]

    def get(self, dataset: str, path: str):
        key = (dataset, path)
        if key in self._open:
            self._open.move_to_end(key)
            return self._open[key]
        src = open_source(self.spec(dataset), path)
        self._open[key] = src
        while len(self._open) > self.size:
            _, old = self._open.popitem(last=False)
            old.close()
        return src

    def close(self) -> None:
        for s in self._open.values():
            s.close()
        self._open.clear()


@dataclass
class _Block:
    group: str
    dataset: str
    path: str
    start: int
    stop: int


def _cut_blocks(start: int, stop: int, clusters: np.ndarray, target: int, max_block: int) -> list[tuple[int, int]]:
    """Cut [start, stop) at cluster boundaries into pieces of at least ``target`` entries; pieces
    larger than ``max_block`` are split evenly (reading part of a cluster costs decompressing it)."""
    cs = clusters[(clusters > start) & (clusters < stop)]
    bounds = [start]
    for c in cs.tolist():
        if c - bounds[-1] >= target:
            bounds.append(c)
    if bounds[-1] != stop:
        bounds.append(stop)
    out = []
    for a, b in zip(bounds, bounds[1:]):
        if b - a > max_block:
            k = math.ceil((b - a) / max_block)
            edges = [a + (b - a) * i // k for i in range(k + 1)]
            out += list(zip(edges, edges[1:]))
        else:
            out.append((a, b))
    return out


class _Stream:
    """The accepted candidates of one block, served in read order at a fixed read rate."""

    def __init__(self, data: Columns, positions: np.ndarray, n_rows: int):
        self.data, self.positions, self.n_rows, self.cursor = data, positions, n_rows, 0
        self._first = 0   # index (in positions) of the first row still held in data

    @property
    def done(self) -> bool:
        return self.cursor >= self.n_rows

    def advance(self, rows: int) -> Columns:
        """The accepted rows read in the next ``rows`` read positions. Once at least half of the rows
        held have been served, the rest is copied so that the served half is freed: a stream holds
        its unserved rows (and at most as many served ones), not its whole block until it ends."""
        new = self.cursor + rows
        i0, i1 = np.searchsorted(self.positions, [self.cursor, new], side="left")
        self.cursor = new
        a, b = int(i0) - self._first, int(i1) - self._first
        out = self.data.slice(a, b)
        held = len(self.positions) - self._first
        if self.done:
            self.data = self.data.slice(0, 0)
        elif b > 0 and 2 * b >= held:
            self.data = self.data.slice(b, held).copy()
            self._first += b
        return out


def _coarse_hist(values: np.ndarray, pt_bins, eta_bins) -> hist.Hist:
    h = hist.Hist(hist.axis.Variable(pt_bins, name="pt", label="pt [GeV]"),
                  hist.axis.Variable(eta_bins, name="abs_eta", label="|eta|"), storage=hist.storage.Double())
    h.view()[...] = values
    return h


def run_job(cfg: Config, job: int, segments: dict[str, list[Segment]], P: dict[str, np.ndarray] | None,
            p_class: np.ndarray | None, shard_path: str, manifest_path: str, *,
            group_classes: dict[str, Sequence[str]] | None = None, N: dict[str, np.ndarray] | None = None,
            ids_path: str | None = None, weight_norms: dict[str, dict] | None = None) -> dict:
    """Read this job's entry ranges of every group, accept, mix and write one shard + manifest.

    segments: group -> segments (Segment.dataset names the dataset; when empty the group name is
    taken as the dataset name, the form of one group per dataset). With ``resampling.refill_spectrum``
    (or P None) N, P and p_class are computed here from the job's own slice in a first pass.
    ``weight_norms`` (event weights, taggerflow.event_weights.dataset_norms): the ``event_weight``
    column of each dataset's candidates is multiplied by its ``factor`` (float64 in the shard).
    Every input is opened and checked (file, tree, entries, branches, truncation) and the acceptance is
    computed before anything is written; the shard appears complete or not at all.
    """
    rs = cfg.resolved["resampling"]   # defaults: taggerflow.schema
    classes = cfg.class_names
    n_cls = len(classes)
    pt_bins, eta_bins = [float(x) for x in rs["pt_bins"]], [float(x) for x in rs["eta_bins"]]
    pt_lo, pt_hi = (rs.get("pt_range") or (pt_bins[0], pt_bins[-1]))
    eta_lo, eta_hi = (rs.get("abs_eta_range") or (eta_bins[0], eta_bins[-1]))
    fmt = rs["output_format"]
    n_streams = max(1, int(rs["mix_streams"]))
    mix_buffer = max(1, int(rs["mix_buffer"]))
    disabled = list(rs.get("disabled_branches") or [])
    refill = bool(rs["refill_spectrum"]) or P is None
    truth = cfg.truth_branch
    seed = job_seed(cfg.seed, "shuffle", job)
    rng = np.random.default_rng(seed)

    groups = [g for g in segments if segments[g]]
    segs = {g: [s if s.dataset else Segment(s.path, s.start, s.stop, g) for s in segments[g]] for g in groups}
    gcls = {g: list(group_classes[g]) if group_classes is not None else list(classes) for g in segments}
    allowed = {g: np.isin(classes, gcls[g]) for g in segments}
    datasets = sorted({s.dataset for g in groups for s in segs[g]})
    ids = {"dataset_ids": {ds: dataset_id(ds) for ds in datasets},
           "dataset_group_ids": {g: group_id(g) for g in segments}}
    if ids_path is not None:  # the maps of the whole configuration (the same in every job)
        full = id_maps(cfg)
        ids = {k: {**full[k], **ids[k]} for k in ids}

    # -- 1. open and check every input before any output -----------------------------------
    sources = _Sources(cfg)
    required = cfg.required_branches()
    out_fields: list[str] | None = None
    coll_fields: dict[str, list[str]] = {}
    first_path = None
    clusters: dict[str, np.ndarray] = {}
    for g in groups:
        for s in segs[g]:
            src = sources.get(s.dataset, s.path)
            spec = sources.spec(s.dataset)
            if src.num_entries < s.stop:
                raise InputError(f"{s.path}: has {src.num_entries} entries, expected at least {s.stop} "
                                 f"(file changed since the spectrum was made?)")
            src.check_fields(required, spec.alias_names)
            fields = available_fields(spec, src)
            if out_fields is None:
                first_path = s.path
                out_fields = [f for f in fields if f not in ADDED_BRANCHES and not match_any(f, disabled)]
                colls = src.collections()
                coll_fields = {c: [f for f in fl if f"{c}_{f}" in set(out_fields)] for c, fl in colls.items()}
                coll_fields = {c: fl for c, fl in coll_fields.items() if fl}
            else:
                missing = [f for f in out_fields if f not in set(fields)]
                if missing:
                    raise InputError(f"{s.path}: branch '{missing[0]}' (present in {first_path}, written to the "
                                     f"shard) not found in {src.describe()}")
            if hasattr(src, "check_integrity"):
                src.check_integrity()
            if s.path not in clusters:
                clusters[s.path] = np.asarray(src.cluster_starts(), dtype=np.int64)
    out_fields = out_fields or []
    wanted = list(dict.fromkeys(out_fields + ["pt", "eta", truth]))

    # -- 2. refill: N from this job's own slice ----------------------------------------------
    if refill:
        N = {g: np.zeros((n_cls, len(pt_bins) - 1, len(eta_bins) - 1), dtype=np.int64) for g in segments}
        for g in groups:
            for s in segs[g]:
                src, spec = sources.get(s.dataset, s.path), sources.spec(s.dataset)
                pos = s.start
                while pos < s.stop:
                    nxt = min(pos + cfg.chunk_size, s.stop)
                    chunk, _ = read_prepared(spec, src, pos, nxt, ["pt", "eta", truth])
                    N[g] += _coarse_counts_of(chunk, truth, cfg.truth_codes, pt_bins, eta_bins, n_cls)
                    pos = nxt
            N[g][~allowed[g]] = 0
        try:
            P, p_class = acceptance(N, classes, rs["class_ratio"], bool(rs["enable_emptybin"]),
                                    pt_bins, eta_bins, group_classes=gcls,
                                    lastbin_takeall=bool(rs["lastbin_takeall"]),
                                    lastbin_disbalance=float(rs["lastbin_disbalance"]))
        except ResamplingError as e:
            raise ResamplingError(f"job {job} (refill_spectrum): {e}") from None

    # -- 3. blocks in random order -----------------------------------------------------------
    per_stream = max(1, mix_buffer // n_streams)
    max_block = max(4 * per_stream, 65536)
    blocks: list[_Block] = []
    for g in groups:
        for s in segs[g]:
            for a, b in _cut_blocks(s.start, s.stop, clusters[s.path], per_stream, max_block):
                blocks.append(_Block(g, s.dataset, s.path, a, b))
    order = rng.permutation(len(blocks)) if blocks else np.zeros(0, dtype=np.int64)

    manifest_files: dict[str, dict] = {}

    def file_entry(path: str, ds: str, g: str) -> dict:
        return manifest_files.setdefault(path, {"dataset": ds, "group": g, "read": 0, "unlabelled": 0,
                                                "deselected": 0, "out_of_range": 0,
                                                "accepted": {c: 0 for c in classes},
                                                "rejected": {c: 0 for c in classes}})

    def load(block: _Block) -> _Stream:
        src, spec = sources.get(block.dataset, block.path), sources.spec(block.dataset)
        entry = file_entry(block.path, block.dataset, block.group)
        if _direct_ok(spec, src, out_fields, coll_fields, truth):
            # candidate tree, no alias or selection: the acceptance from pt, eta and the truth branch,
            # then every output branch read on its own and cut to the accepted rows at once, so that
            # no whole block of every branch is ever held (the same values as the general path)
            head = src.read_numpy(block.start, block.stop, list(dict.fromkeys(["pt", "eta", truth])))
            n_rows = n_read = block.stop - block.start
            mask, labels = _accept(head, truth, cfg.truth_codes, allowed[block.group], P[block.group], p_class,
                                   pt_bins, eta_bins, (pt_lo, pt_hi), (eta_lo, eta_hi), rng, entry, classes,
                                   n_read)
            pos = np.flatnonzero(mask)
            cols = _direct_columns(src, block.start, block.stop, out_fields, coll_fields, pos, head)
            del head
        else:
            chunk, n_read = read_prepared(spec, src, block.start, block.stop, wanted)
            mask, labels = _accept(chunk, truth, cfg.truth_codes, allowed[block.group], P[block.group], p_class,
                                   pt_bins, eta_bins, (pt_lo, pt_hi), (eta_lo, eta_hi), rng, entry, classes,
                                   n_read)
            pos = np.flatnonzero(mask)
            n_rows = len(chunk)
            cols = Columns.from_awkward(chunk[out_fields] if out_fields else chunk, coll_fields, rows=pos)
            del chunk
        n = len(pos)
        if weight_norms is not None:
            cols = cols.with_column(WEIGHT_FIELD, np.asarray(cols.flat[WEIGHT_FIELD], dtype=np.float64)
                                    * weight_norms[block.dataset]["factor"])
        cols = cols.with_column("class_label", labels[pos].astype(np.int32))
        cols = cols.with_column("dataset_id", np.full(n, dataset_id(block.dataset), dtype=np.int64))
        cols = cols.with_column("dataset_group_id", np.full(n, group_id(block.group), dtype=np.int64))
        return _Stream(cols, pos, n_rows)

    # schema of an empty shard: the output fields of the first input, no rows (read only when the
    # shard gets no rows: reading it decompresses the first basket of every branch)
    schema = None
    if groups:
        def schema():
            s0 = segs[groups[0]][0]
            head, _ = read_prepared(sources.spec(s0.dataset), sources.get(s0.dataset, s0.path), s0.start,
                                    s0.start, wanted)  # no entries: the types only
            head = head[out_fields][:0] if out_fields else head[:0]
            if weight_norms is not None:
                head = ak.with_field(head, np.zeros(0, np.float64), WEIGHT_FIELD)
            head = ak.with_field(head, np.zeros(0, np.int32), "class_label")
            head = ak.with_field(head, np.zeros(0, np.int64), "dataset_id")
            return ak.with_field(head, np.zeros(0, np.int64), "dataset_group_id")

    # -- 4. mix and write ----------------------------------------------------------------------
    identity = f"{cfg.sections_hash(('name', 'seed', 'inputs', 'classes', 'spectrum', 'resampling'))}:shard:{job}"
    written_per_class = np.zeros(n_cls, dtype=np.int64)
    n_written = 0
    n_rounds = 0
    write_batch = max(cfg.chunk_size, mix_buffer)
    try:
        with atomic_path(shard_path, folder=True) as tmp:
            with shard_writer(fmt, tmp, cfg.tree, coll_fields, write_batch, identity, schema=schema,
                              level=rs.get("compression_level")) as w:
                streams: list[_Stream] = []
                nxt = 0
                while True:
                    while len(streams) < n_streams and nxt < len(order):
                        streams.append(load(blocks[order[nxt]]))
                        nxt += 1
                    if not streams:
                        break
                    # this round reads mix_buffer rows, shared in proportion to what each stream has
                    # left: streams started together end together (no tail of one file at the end)
                    rem = np.array([st.n_rows - st.cursor for st in streams], dtype=np.int64)
                    if rem.sum() <= mix_buffer:
                        takes = rem
                    else:
                        takes = np.minimum(rem, np.ceil(mix_buffer * rem / rem.sum()).astype(np.int64))
                    pieces = [st.advance(int(k)) for st, k in zip(streams, takes)]
                    streams = [st for st in streams if not st.done]
                    pieces = [p for p in pieces if len(p)]
                    n_rounds += 1
                    if not pieces:
                        continue
                    merged = Columns.concatenate_take(pieces, rng.permutation(sum(len(p) for p in pieces)))
                    del pieces
                    n_written += len(merged)
                    written_per_class += np.bincount(merged.flat["class_label"], minlength=n_cls)
                    w.extend(merged)   # the writer may take the arrays over (and empty merged)
                    del merged
                if nxt != len(blocks):
                    raise RuntimeError(f"job {job}: {len(blocks) - nxt} blocks unread (internal error)")
                for g in segments:
                    for t, c in enumerate(classes):
                        if N is not None and g in N:
                            w.put_hist(f"N_{g}_{c}", _coarse_hist(N[g][t], pt_bins, eta_bins))
                        if P is not None and g in P:
                            w.put_hist(f"P_{g}_{c}", _coarse_hist(P[g][t], pt_bins, eta_bins))
                w.put_text("dataset_ids", json.dumps(ids["dataset_ids"], sort_keys=True))
                w.put_text("dataset_group_ids", json.dumps(ids["dataset_group_ids"], sort_keys=True))
    finally:
        sources.close()

    read_total = {g: 0 for g in segments}
    for e in manifest_files.values():
        read_total[e["group"]] += e["read"]
    manifest = {
        "job": job,
        "seed_entropy": list(seed.entropy),
        "n_rounds": n_rounds,
        "n_blocks": len(blocks),
        "output_format": fmt,
        "entries_written": n_written,
        "written_per_class": dict(zip(classes, written_per_class.tolist())),
        "dataset_ids": ids["dataset_ids"],
        "dataset_group_ids": ids["dataset_group_ids"],
        "groups": {g: {"id": group_id(g), "classes": gcls[g], "candidates_read": read_total[g],
                       "entries": sum(s.stop - s.start for s in segs.get(g, []))} for g in segments},
        "refill_spectrum": refill,
        # input paths as stored (taggerflow.paths): the same manifest wherever the data directory is
        "segments": {g: [[cfg.stored_input_path(s.path, s.dataset), s.start, s.stop, s.dataset] for s in segs[g]]
                     for g in groups},
        "files": {cfg.stored_input_path(p, e["dataset"]): e for p, e in manifest_files.items()},
        "class_probabilities": dict(zip(classes, np.asarray(p_class).tolist())) if p_class is not None else {},
    }
    if weight_norms is not None:
        manifest["event_weight_norms"] = {ds: weight_norms[ds] for ds in sorted(weight_norms)}
    if ids_path is not None:
        write_json(ids_path, ids)
    write_shard_checksum(manifest, shard_path)   # every task that reads the shard verifies it first
    write_json(manifest_path, manifest)
    return manifest


def _direct_ok(spec, src, out_fields: list[str], coll_fields: dict[str, list[str]], truth: str) -> bool:
    """Whether a block can be read branch by branch (see run_job's load): a candidate tree, no
    selection and no alias, pt/eta/truth and every non-collection output field flat branches."""
    if spec.selection or spec.aliases or not hasattr(src, "read_numpy"):
        return False
    grouped = {f"{c}_{f}" for c, fl in coll_fields.items() for f in fl}
    src_colls = src.collections()
    if any(f not in src_colls.get(c, ()) for c, fl in coll_fields.items() for f in fl):
        return False
    return all(src.is_flat(f) for f in dict.fromkeys(["pt", "eta", truth] +
                                                    [f for f in out_fields if f not in grouped]))


def _direct_columns(src, start: int, stop: int, out_fields: list[str], coll_fields: dict[str, list[str]],
                    rows: np.ndarray, have: dict[str, np.ndarray]) -> Columns:
    """Columns.from_awkward(<entries [start, stop) of out_fields>, coll_fields, rows) read one branch
    at a time (each cut to ``rows`` before the next is read); ``have``: flat branches already read."""
    grouped = {f"{c}_{f}" for c, fl in coll_fields.items() for f in fl}
    flat = {}
    for k in out_fields:
        if k not in grouped:
            v = have[k] if k in have else src.read_numpy(start, stop, [k])[k]
            flat[k] = v[rows]
            del v
    colls = {}
    for c, fields in coll_fields.items():
        if not fields:
            continue
        gather = counts = None
        vals = {}
        for f in fields:
            arr = src.read_branch(f"{c}_{f}", start, stop)
            if gather is None:
                all_counts = ak.to_numpy(ak.num(arr, axis=1)).astype(np.int64)
                offs = np.concatenate([[0], np.cumsum(all_counts)])
                counts = all_counts[rows]
                gather = np.repeat(offs[:-1][rows] - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + \
                    np.arange(int(counts.sum()))
            vals[f] = ak.to_numpy(ak.flatten(arr, axis=1))[gather]
            del arr
        colls[c] = (counts, vals)
    return Columns(flat, colls)


def _coarse_counts_of(chunk: ak.Array, truth: str, truth_codes, pt_bins, eta_bins, n_cls: int) -> np.ndarray:
    labels = labels_from_truth(ak.to_numpy(chunk[truth]), truth_codes)
    ipt = _bin_index(ak.to_numpy(chunk["pt"]).astype(np.float64), pt_bins)
    ieta = _bin_index(np.abs(ak.to_numpy(chunk["eta"]).astype(np.float64)), eta_bins)
    ok = (labels >= 0) & (ipt >= 0) & (ieta >= 0)
    n_pt, n_eta = len(pt_bins) - 1, len(eta_bins) - 1
    idx = (labels[ok].astype(np.int64) * n_pt + ipt[ok]) * n_eta + ieta[ok]
    return np.bincount(idx, minlength=n_cls * n_pt * n_eta).reshape(n_cls, n_pt, n_eta)


def _accept(chunk: "ak.Array | dict[str, np.ndarray]", truth: str, truth_codes, allowed: np.ndarray, P: np.ndarray,
            p_class: np.ndarray, pt_bins, eta_bins, pt_range, eta_range, rng: np.random.Generator, entry: dict,
            classes: list[str], n_read: int) -> tuple[np.ndarray, np.ndarray]:
    """Acceptance of the candidates of one block (an awkward chunk, or a dict of numpy arrays with the
    truth branch, pt and eta); counts them into the manifest ``entry``."""
    get = (lambda k: np.asarray(chunk[k])) if isinstance(chunk, dict) else (lambda k: ak.to_numpy(chunk[k]))
    labels = labels_from_truth(get(truth), truth_codes)
    n_sel = len(labels)
    pt = get("pt").astype(np.float64)
    aeta = np.abs(get("eta").astype(np.float64))
    ipt = _bin_index(pt, pt_bins)
    ieta = _bin_index(aeta, eta_bins)
    labelled = labels >= 0
    in_group = labelled & allowed[np.maximum(labels, 0)]
    in_range = (pt >= pt_range[0]) & (pt < pt_range[1]) & (aeta >= eta_range[0]) & (aeta < eta_range[1])
    ok = in_group & in_range & (ipt >= 0) & (ieta >= 0)
    prob = np.zeros(n_sel)
    prob[ok] = p_class[labels[ok]] * P[labels[ok], ipt[ok], ieta[ok]]
    u = rng.random(n_sel)
    mask = ok & (u < prob)
    entry["read"] += int(n_read)
    entry["deselected"] += int(n_read - n_sel)
    entry["unlabelled"] += int(np.count_nonzero(~labelled))
    entry["out_of_range"] += int(np.count_nonzero(in_group & ~(in_range & (ipt >= 0) & (ieta >= 0))))
    acc = np.bincount(labels[mask], minlength=len(classes))
    lab = np.bincount(labels[labelled], minlength=len(classes))
    for t, c in enumerate(classes):
        entry["accepted"][c] += int(acc[t])
        entry["rejected"][c] += int(lab[t] - acc[t])
    return mask, labels


def shard_suffix(cfg: Config) -> str:
    return SUFFIX[cfg.resolved["resampling"]["output_format"]]
