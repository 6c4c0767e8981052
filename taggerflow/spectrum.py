"""Spectrum: fine pt-|eta| histograms per class of one input file (any input format), its entry count."""

from __future__ import annotations

import io
import threading
import weakref
import zipfile
from collections.abc import Mapping

import awkward as ak
import hist
import numpy as np
import uproot

from taggerflow.config import Config
from taggerflow.event_weights import weights_configured
from taggerflow.integrity import check_input_baskets
from taggerflow.io import InputError, labels_from_truth, reproducible_root
from taggerflow.paths import portable_path
from taggerflow.readers import input_spec, iter_prepared, open_source
from taggerflow.sum_of_weights import file_sum_of_weights
from taggerflow.utils import atomic_path, gc_paused


def fine_edges(cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    s = cfg.raw["spectrum"]
    pt, eta = s["pt_fine"], s["abs_eta_fine"]
    return (np.linspace(pt["start"], pt["stop"], pt["n_bins"] + 1),
            np.linspace(eta["start"], eta["stop"], eta["n_bins"] + 1))


def _new_hist(cfg: Config) -> hist.Hist:
    return hist.Hist(*_hist_axes(cfg), storage=hist.storage.Int64())


_AXES: dict = {}


def _fine_params(cfg: Config) -> tuple:
    s = cfg.raw["spectrum"]
    pt, eta = s["pt_fine"], s["abs_eta_fine"]
    return (pt["n_bins"], pt["start"], pt["stop"], eta["n_bins"], eta["start"], eta["stop"])


def _hist_axes(cfg: Config) -> tuple:
    """The (pt, |eta|) axes of the fine histograms (made once per binning: a Hist copies its axes)."""
    key = _fine_params(cfg)
    if key not in _AXES:
        n_pt, pt0, pt1, n_eta, eta0, eta1 = key
        if len(_AXES) > 16:
            _AXES.clear()
        _AXES[key] = (hist.axis.Regular(n_pt, pt0, pt1, name="pt", label="pt [GeV]"),
                      hist.axis.Regular(n_eta, eta0, eta1, name="abs_eta", label="|eta|"))
    return _AXES[key]


_REQUIRED: dict = {}


def _required_branches(cfg: Config) -> dict[str, str]:
    """cfg.required_branches(), computed once per configuration object (and features/classes sections)."""
    key = id(cfg)
    hit = _REQUIRED.get(key)
    if hit is not None and hit[0]() is cfg and hit[1] is cfg.raw.get("features") and \
            hit[2] is cfg.raw.get("classes"):
        return hit[3]
    req = cfg.required_branches()
    if len(_REQUIRED) > 16:
        _REQUIRED.clear()
    try:
        _REQUIRED[key] = (weakref.ref(cfg), cfg.raw.get("features"), cfg.raw.get("classes"), req)
    except TypeError:   # not weak-referenceable: no cache
        pass
    return req


def file_spectrum(cfg: Config, path: str, dataset: str | None = None) -> dict:
    """Histogram one file (any input format, after the config's aliases and selection).

    Returns the per-class counts with flow bins, ``counts_flow`` (n_classes, n_pt+2, n_eta+2), so
    that every labelled candidate is counted, with their edges (``pt_edges``, ``abs_eta_edges``),
    the same counts as ``hist.Hist`` objects per class (``hists``, made when first looked up), the
    entry count of the file (tree entries: what the jobs split), the candidates read, those removed
    by ``inputs.selection`` and those without a class, and ``source``: ``path`` as the outputs store
    it (:meth:`taggerflow.config.Config.stored_input_path`). Checks first that every branch the config
    needs exists, so a missing branch fails here, naming the file, the branch and the config key, and
    that every basket of every branch the later stages read lies within the file (a truncated file
    fails here, naming the file and the branch)."""
    spec = input_spec(cfg, dataset)
    weighted = {}
    if dataset and weights_configured(cfg):   # checks the weight's branches first, naming the config key
        try:
            weighted["sum_of_weights"] = file_sum_of_weights(cfg, dataset, path)
        except InputError as e:   # named with its dataset, as open_source names it
            raise InputError(f"{e} (dataset '{dataset}')") from None
    with gc_paused():   # the object storm of opening a file (see gc_paused)
        src = open_source(spec, path)
    try:
        with gc_paused():
            src.check_fields(_required_branches(cfg), spec.alias_names)
            check_input_baskets(cfg, spec, src, _required_branches(cfg))   # a truncated file fails here
        counts = _count(cfg, spec, src, 0, src.num_entries)
        entries = src.num_entries
    finally:
        src.close()
    pt_e, eta_e = fine_edges(cfg)
    return {"entries": entries, "candidates": counts["candidates"], "deselected": counts["deselected"],
            "unlabelled": counts["unlabelled"], "counts_flow": counts["counts_flow"], "pt_edges": pt_e,
            "abs_eta_edges": eta_e, "hists": ClassHists(cfg, counts["counts_flow"]),
            "dataset": dataset or "", "path": path, "source": cfg.stored_input_path(path, dataset), **weighted}


class ClassHists(Mapping):
    """{class: hist.Hist (pt, |eta|) with Int64 counts} over a counts array with flow bins, each
    histogram made when first looked up (a Hist costs ~0.1 ms to make: most callers want the array)."""

    def __init__(self, cfg: Config, counts_flow: np.ndarray):
        self._cfg, self._counts = cfg, counts_flow
        self._index = {c: i for i, c in enumerate(cfg.class_names)}
        self._made: dict[str, hist.Hist] = {}

    def __getitem__(self, name: str) -> hist.Hist:
        if name not in self._made:
            h = _new_hist(self._cfg)
            h.view(flow=True)[...] = self._counts[self._index[name]]
            self._made[name] = h
        return self._made[name]

    def __iter__(self):
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


# np.clip checks its arguments in Python, which takes longer than clipping a chunk, then calls this
# ufunc: the binning calls it directly (same semantics)
try:
    from numpy._core.umath import clip as _clip
except ImportError:   # numpy 1.x
    try:
        from numpy.core.umath import clip as _clip
    except ImportError:
        _clip = np.clip

_GUESS_TABLES: dict = {}


def _guess_table(edges: np.ndarray, dtype) -> tuple | None:
    """(scale, shift - near, 0.5, n + 1.5, 2 * near) in ``dtype`` (float32 or float64) for _Binner's
    arithmetic bin guess on regular ``edges`` (n bins): t = x * scale + shift lies in [k, k + 1) for
    the values of flow bin k, up to rounding. None for other value types or edges not regular
    (np.searchsorted for every value).

    ``near`` is four times a bound on the error of the computed t: the float rounding of the scale,
    the shift, the product and the sum (one unit in the last place each of the largest |x * scale|,
    |shift| and |t| of values within a bin of the edges; values further out are clipped into their
    flow bin) plus the edges' own deviation from a regular grid (linspace's rounding). A value whose
    t lies within ``near`` of an integer is binned with np.searchsorted, so the guess of every other
    value is its exact bin."""
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        return None
    e = np.asarray(edges, dtype=np.float64)
    key = (dtype.str, e.tobytes())
    if key in _GUESS_TABLES:
        return _GUESS_TABLES[key]
    n = len(e) - 1
    tab = None
    if n >= 1 and np.isfinite(e).all() and np.all(np.diff(e) > 0):
        scale = n / (e[-1] - e[0])
        shift = 1.0 - e[0] * scale
        deviation = float(np.max(np.abs(e * scale + shift - np.arange(1, n + 2))))
        unit = np.finfo(dtype).eps / 2
        largest = max(abs(e[0]), abs(e[-1])) * scale + 2
        error = 4 * unit * (largest + abs(shift) + n + 3) + deviation + 1e-12
        near = 4 * error
        if near < 0.05:
            tab = (dtype.type(scale), dtype.type(shift - near), dtype.type(0.5), dtype.type(n + 1.5),
                   dtype.type(2 * near))
    if len(_GUESS_TABLES) > 64:
        _GUESS_TABLES.clear()
    _GUESS_TABLES[key] = tab
    return tab


def _label_table(truth_codes: dict[str, list[int]], n_cls: int) -> tuple[int, np.ndarray] | None:
    """(offset, table) mapping integer truth values to class indices (n_cls: no class) with one
    look-up: table[clip(truth - offset, 0, len - 1)], the first and last entries being 'no class'.
    Classes listed earlier win where codes repeat (as in labels_from_truth)."""
    codes_all = [int(c) for codes in truth_codes.values() for c in codes]
    if not codes_all or max(codes_all) - min(codes_all) >= 1 << 16:
        return None
    lo, hi = min(codes_all), max(codes_all)
    table = np.full(hi - lo + 3, n_cls, dtype=np.intp)
    for i, codes in reversed(list(enumerate(truth_codes.values()))):
        table[np.asarray(codes, dtype=np.int64) - lo + 1] = i
    return lo - 1, table


def _truth_slabs(truth_codes: dict[str, list[int]], n_cls: int) -> tuple[int, int, np.ndarray] | None:
    """(lo, hi, class of each slab) for integer truth values binned directly: slab
    clip(truth, lo, hi) - lo, slabs 0 and hi - lo holding every value outside the codes ('no
    class'); None where the codes span too many values (then a class table is used per candidate)."""
    tab = _label_table(truth_codes, n_cls)
    if tab is None or len(tab[1]) > 64 or not (-(1 << 31) <= tab[0] and tab[0] + len(tab[1]) < 1 << 31):
        return None
    off, table = tab
    return off, off + len(table) - 1, table


_SLAB_LAYOUTS: dict = {}


def _slab_layout(truth_codes: dict[str, list[int]], n_cls: int) -> tuple:
    """(_truth_slabs, first slab of each class index or None), computed once per class definition."""
    key = (n_cls, tuple((k, tuple(v)) for k, v in truth_codes.items()))
    if key not in _SLAB_LAYOUTS:
        slabs = _truth_slabs(truth_codes, n_cls)
        first = None
        if slabs is not None:   # slab 0 is always 'no class'; a class without codes never occurs
            cls = slabs[2]
            first = np.array([int(np.flatnonzero(cls == k)[0]) if (cls == k).any() else 0
                              for k in range(n_cls + 1)], dtype=np.int64)
        if len(_SLAB_LAYOUTS) > 16:
            _SLAB_LAYOUTS.clear()
        _SLAB_LAYOUTS[key] = (slabs, first)
    return _SLAB_LAYOUTS[key]


_WORK = threading.local()


def _work_arrays() -> dict:
    """This thread's work arrays of _Binner, reused from file to file (a chunk's worth each: no fresh
    pages to fault in for every file). The largest chunk size seen sets their size."""
    bufs = getattr(_WORK, "bufs", None)
    if bufs is None:
        bufs = _WORK.bufs = {}
    return bufs


class _Binner:
    """Accumulates (slab, pt flow bin, |eta| flow bin) counts chunk by chunk, with preallocated
    work arrays (no allocation per chunk on the fast path). A slab is a truth value (integer truth
    with few codes: the classes are summed from the slabs at the end, so no per-candidate class
    look-up is needed) or a class index (n_cls: no class).

    Bins equal np.searchsorted(edges, x, 'right') exactly: each value's bin is guessed arithmetically
    (see _guess_table), and the few values whose guess lies within its error bound of a bin boundary,
    or that are NaN, are binned with np.searchsorted."""

    def __init__(self, pt_e: np.ndarray, eta_e: np.ndarray, truth_codes: dict, n_cls: int):
        self.pt_e, self.eta_e, self.truth_codes, self.n_cls = pt_e, eta_e, truth_codes, n_cls
        self.n_pt, self.n_eta = len(pt_e) + 1, len(eta_e) + 1
        self.slab = self.n_pt * self.n_eta
        self.slabs, self._first_slab = _slab_layout(truth_codes, n_cls)
        n_slabs = len(self.slabs[2]) if self.slabs is not None else n_cls + 1
        self._it = np.int32 if n_slabs * self.slab < 1 << 31 else np.int64   # the combined index
        self._bufs = _work_arrays()
        # the counts array of the previous binner of this thread, if it fits (no fresh pages per file);
        # owned by this binner until result() hands it back
        counts = self._bufs.pop("counts", None)
        if counts is None or len(counts) != n_slabs * self.slab:
            counts = np.zeros(n_slabs * self.slab, dtype=np.int64)
        else:
            counts.fill(0)
        self.counts = counts
        self._tables: dict = {}

    def _buf(self, name: str, n: int, dtype) -> np.ndarray:
        b = self._bufs.get(name)
        if b is None or len(b) < n or b.dtype != dtype:
            b = self._bufs[name] = np.empty(n, dtype=dtype)
        return b[:n]

    def _guess(self, x: np.ndarray, edges: np.ndarray, absolute: bool = False):
        """(flow bin guess, mask of the values to bin exactly or None) of ``x`` (|x| if
        ``absolute``): floor(t - near), flagged where floor(t + near) differs or where x is NaN.
        The guess is in a work array shared by both axes (valid until the next call), the mask in
        one of its own. Without a table: (exact bins, None)."""
        if x.dtype.kind == "f" and x.dtype.itemsize < 4:
            x = x.astype(np.float32)      # float16 (HDF5 inputs): exactly representable in float32
        key = (absolute, x.dtype)
        tab = self._tables.get(key, False)
        if tab is False:   # looked up once per axis and value type
            tab = self._tables[key] = _guess_table(edges, x.dtype) if x.dtype.kind == "f" else None
        if tab is None:
            v = np.abs(x) if absolute else x
            return np.searchsorted(edges, np.asarray(v, dtype=np.float64), side="right").astype(np.int32), None
        scale, shift, bottom, top, width = tab
        n = len(x)
        # few work arrays, shared by both axes: the working set of a chunk stays in the CPU caches
        t = np.multiply(x, scale, out=self._buf("t" + x.dtype.char, n, x.dtype))   # per type: no thrashing
        if absolute:
            np.abs(t, out=t)              # |x| * scale (scale > 0)
        t += shift
        # half a bin inside the flow bins: values far outside the edges are not near a boundary
        _clip(t, bottom, top, out=t)
        nan = np.isnan(t) if np.isnan(np.maximum.reduce(t)) else None   # clipped: NaN only for NaN values
        if nan is not None:
            t[nan] = bottom               # (their cast would be platform-defined): flagged below
        guess = self._buf("g", n, np.int32)
        upper = self._buf("u", n, np.int32)
        guess[...] = t                    # t > 0: truncation is the floor
        t += width
        upper[...] = t
        near = np.not_equal(guess, upper, out=self._buf("near" + str(int(absolute)), n, np.bool_))
        if nan is not None:
            near |= nan
        return guess, near

    def add(self, pt: np.ndarray, eta: np.ndarray, truth: np.ndarray) -> None:
        n = len(truth)
        if n == 0:
            return
        pt, eta, truth = np.asarray(pt), np.asarray(eta), np.asarray(truth)
        c = self._slabs_of(truth, self._buf("c", n, self._it))
        c *= self.n_pt
        ip, near_pt = self._guess(pt, self.pt_e)
        c += ip
        c *= self.n_eta
        ie, near_eta = self._guess(eta, self.eta_e, absolute=True)
        c += ie
        flags = [m for m in (near_pt, near_eta) if m is not None]
        if flags:
            if len(flags) == 2:
                flags[0] |= flags[1]
            k = np.flatnonzero(flags[0])
            if len(k):   # exact bins (np.searchsorted compares in float64: the edges' type)
                slab = self._slabs_of(truth[k], np.empty(len(k), dtype=self._it))
                c[k] = (slab * self.n_pt + np.searchsorted(self.pt_e, pt[k], side="right")) * self.n_eta + \
                    np.searchsorted(self.eta_e, np.abs(eta[k]), side="right")
        np.add.at(self.counts, c, 1)   # in place: no fresh output array (its pages) per chunk

    def _slabs_of(self, truth: np.ndarray, out: np.ndarray) -> np.ndarray:
        """The slab of each candidate (see the class), into ``out``."""
        if self.slabs is not None and truth.dtype.kind in "iub":
            lo, hi, _ = self.slabs
            if truth.dtype.kind != "i" or truth.dtype.itemsize < 4:
                truth = truth.astype(np.int64)
            _clip(truth, lo, hi, out=out, casting="unsafe")
            if lo:
                out -= lo
            return out
        cls = labels_from_truth(truth, self.truth_codes)
        cls[cls < 0] = self.n_cls
        out[...] = self._first_slab[cls] if self.slabs is not None else cls   # slab layout: a slab per class
        return out

    def result(self) -> tuple[np.ndarray, int]:
        """(counts (n_cls, n_pt+2, n_eta+2), unlabelled), once: the binner's work array is given back."""
        per_slab = self.counts.reshape(-1, self.n_pt, self.n_eta)
        self._bufs["counts"], self.counts = self.counts, None
        if self.slabs is None:
            return per_slab[:self.n_cls].copy(), int(per_slab[self.n_cls].sum())
        cls = self.slabs[2]
        out = np.zeros((self.n_cls, self.n_pt, self.n_eta), dtype=np.int64)
        unlabelled = 0
        for s, k in enumerate(cls.tolist()):
            if k < self.n_cls:
                out[k] += per_slab[s]
            else:
                unlabelled += int(per_slab[s].sum())
        return out, unlabelled


def _count(cfg: Config, spec, src, start: int, stop: int) -> dict:
    """Fine counts (n_classes, n_pt+2, n_eta+2) of entries [start, stop) of an open source.

    One np.add.at per chunk over a (truth value or class, pt, |eta|) index (see _Binner): no per-class
    masks, no copies of the selected candidates. Flat branches of a candidate tree with no alias or
    selection involved are read straight into numpy arrays (no awkward arrays)."""
    pt_e, eta_e = fine_edges(cfg)
    n_cls = len(cfg.class_names)
    binner = _Binner(pt_e, eta_e, cfg.truth_codes, n_cls)
    read = selected = 0
    truth = cfg.truth_branch
    wanted = ["pt", "eta", truth]
    direct = hasattr(src, "read_numpy") and not spec.selection and \
        not any(a.name in wanted for a in spec.aliases) and all(src.is_flat(f) for f in wanted)
    step = max(1, int(cfg.chunk_size))
    if direct:
        # numpy reads of flat branches make no reference cycles (tested): no collections needed, memory
        # stays that of one chunk; awkward reads (below) do make some, so the collector stays on there
        with gc_paused():
            pos = start
            while pos < stop:
                nxt = min(pos + step, stop)
                arrs = src.read_numpy(pos, nxt, wanted)
                read += nxt - pos
                selected += len(arrs[truth])
                binner.add(arrs["pt"], arrs["eta"], arrs[truth])
                del arrs
                pos = nxt
    else:
        for chunk, n in iter_prepared(spec, src, start, stop, wanted, step):
            read += n
            selected += len(chunk)
            binner.add(ak.to_numpy(chunk["pt"]), ak.to_numpy(chunk["eta"]), ak.to_numpy(chunk[truth]))
    counts, unlabelled = binner.result()
    return {"counts_flow": counts, "candidates": read, "deselected": read - selected, "unlabelled": unlabelled}


def save_npz(handle, **arrays) -> None:
    """np.savez's format (np.load reads it) with bytes that depend on the arrays only. np.savez forces
    ZIP64 records whose bytes changed between Python 3.11 patch releases (3.11.2 and 3.11.7 wrote
    different npz files for the same counts); these files are small, so plain ZIP records, stored,
    with a fixed date and mode, in the given order."""
    with zipfile.ZipFile(handle, mode="w", compression=zipfile.ZIP_STORED, allowZip64=False) as archive:
        for name, value in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asanyarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type, info.external_attr, info.create_system = zipfile.ZIP_STORED, 0o644 << 16, 3
            archive.writestr(info, buffer.getvalue())


def write_spectrum(result: dict, npz_path: str, root_path: str, classes: list[str]) -> None:
    """Save as numpy (counts with flow bins, edges) and as ROOT TH2D per class (uproot)."""
    hists = result["hists"]
    if list(hists) != list(classes):
        raise ValueError(f"write_spectrum: classes {classes} are not those of the counts {list(hists)}")
    first = hists[classes[0]]
    counts = np.asarray(result["counts_flow"], dtype=np.int64)
    # the input as stored (taggerflow.paths): no absolute path of the data directory in the outputs
    source = result.get("source") or portable_path(result.get("path", ""))
    with atomic_path(npz_path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            save_npz(f, counts_flow=counts, pt_edges=first.axes[0].edges, abs_eta_edges=first.axes[1].edges,
                     entries=np.int64(result["entries"]), unlabelled=np.int64(result["unlabelled"]),
                     candidates=np.int64(result.get("candidates", result["entries"])),
                     deselected=np.int64(result.get("deselected", 0)),
                     dataset=np.array(result.get("dataset", "")), path=np.array(source),
                     classes=np.array(classes),
                     # only with event weights (taggerflow.event_weights): NaN where not normalised
                     **({"sum_of_weights": np.float64(np.nan if result["sum_of_weights"] is None
                                                      else result["sum_of_weights"])}
                        if "sum_of_weights" in result else {}))
    with atomic_path(root_path, folder=True) as tmp, reproducible_root(f"spectrum:{source}") as opts:
        with uproot.recreate(tmp, **opts) as f:
            for i, c in enumerate(classes):
                # ROOT's TH2 holds floating-point (or 32-bit) counts: write Double histograms
                h = hist.Hist(*first.axes, storage=hist.storage.Double())
                h.view(flow=True)[...] = counts[i]
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
