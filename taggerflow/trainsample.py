"""WriteTrainSample: scaled, ordered, padded training files in the umami HDF5 layout.

Layout per file (``train_sample`` options in brackets):

- ``jets/inputs (n, n_vars)``, ``jets/labels (n,)``, ``jets/labels_one_hot (n, n_classes)``,
  ``jets/weights (n,)`` (ones, or [weights] per-class pt-|eta| flattening weights), with event
  weights configured (``inputs.datasets.<ds>.weight``/``cross_section_pb``) ``jets/event_weight (n,)``
  (the normalised event weight, taggerflow.event_weights),
  ``jets/pt|eta|event|dataset_id (n,)`` raw values, [additional_labels] ``jets/additional_labels (n, k)``
  (raw, unscaled, NaN -> 0);
- per sequence (a collection, or its inner/outer cone): ``<seq>/inputs (n, n_max, n_vars)`` with
  [concat_jet_tracks] the scaled candidate variables appended to every real constituent (padded slots
  stay 0), ``<seq>/valid (n, n_max)``, [constituent_labels] ``<seq>/labels (n, n_max, k)`` (padded -1).

Column names are in the ``variables`` attribute of each 2-/3-d dataset, class names in ``classes``;
the file carries the scaling (JSON), the options, the split and a ``config_hash``. Candidates are
assigned to train/validation/test by a hash of (event, dataset_id), so one event never lands in two
splits. Datasets are chunked by ``chunk_rows`` candidates and written in whole chunks; files are
written under a temporary name and renamed into place only when every split is complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import awkward as ak
import h5py
import numpy as np

from taggerflow.cones import cone_masks
from taggerflow.config import GLOBAL_CONE, Config
from taggerflow.event_weights import WEIGHT_FIELD, weights_configured
from taggerflow.formats.shards import open_shard
from taggerflow.io import candidate_features, collection_features, evaluate
from taggerflow.scaling.apply import apply_scaling, scaling_arrays
from taggerflow.scaling.names import ScalingError, variable_types
from taggerflow.utils import AtomicOutput

SPLITS = ("train", "validation", "test")
CANDIDATE_GROUP = "jets"
# raw per-candidate values written beside the scaled inputs: jets/<name>
KINEMATICS = {"pt": np.float32, "eta": np.float32, "event": np.uint64, "dataset_id": np.int64}
EVENT_WEIGHT_DESCRIPTION = ("event weight: inputs.datasets.<dataset>.weight, times cross_section_pb * "
                            "luminosity_invpb / sum_of_weights where the dataset has a cross section")
# configuration sections a training file depends on (its config_hash attribute)
TRAIN_SAMPLE_SECTIONS = ("name", "seed", "demo", "inputs", "classes", "spectrum", "resampling", "features",
                         "scaling", "train_sample")


class TrainSampleError(RuntimeError):
    """A training file cannot be written; the message names the file or the config key."""


# ---------------------------------------------------------------------------------------------
# options
@dataclass(frozen=True)
class Options:
    """The ``train_sample`` section, resolved (defaults filled in)."""

    split: dict
    precision: np.dtype
    compression: str | None
    chunk_rows: int
    concat: tuple[str, ...]                       # candidate variables appended to every constituent
    additional_labels: tuple[tuple[str, str], ...]  # (name, expression)
    constituent_labels: dict                      # collection -> tuple of constituent fields
    weights: bool


def options(cfg: Config) -> Options:
    ts = cfg.resolved["train_sample"]   # defaults: taggerflow.schema
    concat = ts["concat_jet_tracks"]
    if concat is True:
        concat = [v.name for v in cfg.candidate_variables]
    extra = ts.get("additional_labels") or []
    pairs = tuple(extra.items()) if isinstance(extra, dict) else tuple((x, x) for x in extra)
    return Options(split=dict(ts["split"]), precision=np.dtype(ts["precision"]),
                   compression=ts["compression"], chunk_rows=int(ts["chunk_rows"]),
                   concat=tuple(concat or ()), additional_labels=pairs,
                   constituent_labels={c: tuple(f) for c, f in (ts.get("constituent_labels") or {}).items()},
                   weights=bool(ts["weights"]))


def sequence_variables(cfg: Config) -> dict[str, list[str]]:
    """Column names of every sequence's inputs as written: the collection's variables, then the
    concatenated candidate variables (``concat_jet_tracks``). Model builders and exporters should
    take the sequence widths from here (or the files' ``variables`` attribute)."""
    concat = list(options(cfg).concat)
    return {name: coll.variable_names + concat for name, coll, _ in cfg.sequences()}


def extra_branches(cfg: Config) -> dict[str, str]:
    """Input branches the train_sample options read besides cfg.required_branches(): branch -> key."""
    from taggerflow.expressions import expression_names

    opts = options(cfg)
    need: dict[str, str] = {}
    for name, expr in opts.additional_labels:
        for n in expression_names(expr):
            need.setdefault(n, f"train_sample.additional_labels.{name}")
    for coll, fields in opts.constituent_labels.items():
        for fld in fields:
            need.setdefault(f"{coll}_{fld}", f"train_sample.constituent_labels.{coll}")
    return need


def _branches(cfg: Config) -> dict[str, str]:
    need = dict(cfg.required_branches())
    need.setdefault("class_label", "the shards (ShuffleMergeSpectral output)")
    need.setdefault("dataset_id", "the shards (ShuffleMergeSpectral output)")
    for b, key in extra_branches(cfg).items():
        need.setdefault(b, key)
    if weights_configured(cfg):
        need.setdefault(WEIGHT_FIELD, "inputs.datasets.<dataset>.weight (the shards' event weights)")
    return need


# ---------------------------------------------------------------------------------------------
# splits, ordering, padding
def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def split_index(event: np.ndarray, dataset_id: np.ndarray, fractions: dict[str, float]) -> np.ndarray:
    """0 train, 1 validation, 2 test: deterministic per (event, dataset), uniform in [0, 1)."""
    with np.errstate(over="ignore"):
        h = _splitmix64(_splitmix64(np.asarray(event).astype(np.uint64)) ^ np.asarray(dataset_id).astype(np.int64).view(np.uint64))
    u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    edges = np.cumsum([fractions["train"], fractions["validation"]])
    return np.searchsorted(edges, u, side="right").astype(np.int8)


def pad_plan(counts: np.ndarray, key: np.ndarray | None, n_max: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Where each flattened constituent goes in a padded (n, n_max) layout, sorted by ``key``
    descending within its candidate (stable) and truncated to n_max: (n, destination slot
    cand * n_max + rank, source index), over the kept constituents."""
    counts = np.asarray(counts, dtype=np.int64)
    n = len(counts)
    cand = np.repeat(np.arange(n), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    rank = np.arange(len(cand)) - starts[cand]  # position after sorting (cand is sorted already)
    keep = rank < n_max
    if key is not None:
        src = np.lexsort((-np.asarray(key), cand))[keep]
    else:
        src = np.flatnonzero(keep)
    return n, cand[keep] * n_max + rank[keep], src


def pad(plan: tuple, n_max: int, flat: np.ndarray, fill: float = 0, dtype=None) -> np.ndarray:
    """(n, n_max, k) array of ``flat``'s (m, k) rows placed by pad_plan; ``fill`` elsewhere."""
    n, dst, src = plan
    out = np.full((n * n_max, flat.shape[1]), fill, dtype=dtype or flat.dtype)
    out[dst] = np.take(flat, src, axis=0)
    return out.reshape(n, n_max, flat.shape[1])


def order_and_pad(flat: np.ndarray, counts: np.ndarray, key: np.ndarray | None, n_max: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Place each candidate's constituents (sorted by ``key`` descending when given; stable) into a
    (n, n_max, n_vars) array, truncating beyond n_max; returns (padded, valid)."""
    plan = pad_plan(counts, key, n_max)
    valid = np.zeros(plan[0] * n_max, dtype=bool)
    valid[plan[1]] = True
    return pad(plan, n_max, flat), valid.reshape(plan[0], n_max)


def sequence_constituents(cfg: Config, chunk: ak.Array, extra: dict[str, np.ndarray] | None = None
                          ) -> dict[str, tuple]:
    """Raw constituents of every model sequence: {input name: (collection, cone, flat (m, n_vars),
    counts (n,), sort key (m,) or None)}. A collection with a cone is split into its inner and outer
    constituents (those beyond the outer cone are in neither). ``extra``: per collection, (m, k)
    arrays over the same flattened constituents, appended as columns to ``flat``."""
    out = {}
    for coll in cfg.collections:
        flat, counts = collection_features(chunk, coll)
        if extra and coll.name in extra:
            flat = np.concatenate([flat, np.asarray(extra[coll.name], dtype=flat.dtype)], axis=1)
        key = None
        if coll.sort_by:
            key = ak.to_numpy(ak.flatten(chunk[f"{coll.name}_{coll.sort_field}"], axis=1)).astype(np.float64)
            if coll.sort_abs:
                key = np.abs(key)
        if coll.cone is None:
            out[coll.name] = (coll, "global", flat, counts, key)
            continue
        deta = ak.to_numpy(ak.flatten(chunk[f"{coll.name}_{coll.cone.deta}"], axis=1))
        dphi = ak.to_numpy(ak.flatten(chunk[f"{coll.name}_{coll.cone.dphi}"], axis=1))
        masks = cone_masks(ak.to_numpy(chunk["pt"]), deta, dphi, counts, coll.cone)
        cand = np.repeat(np.arange(len(counts)), counts)
        for cone in coll.cones:
            m = masks[cone]
            out[coll.sequence_name(cone)] = (coll, cone, flat[m], np.bincount(cand[m], minlength=len(counts)),
                                             None if key is None else key[m])
    return out


# ---------------------------------------------------------------------------------------------
# pt-|eta| weights
def _bin_clipped(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Bin index of each value, values outside the edges in the first/last bin."""
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right") - 1
    return np.clip(idx, 0, len(edges) - 2)


def weight_histogram(cfg: Config, shard_paths: Iterable[str]) -> np.ndarray:
    """Candidates per (class, pt bin, |eta| bin) of the shards (resampling.pt_bins/eta_bins; values
    beyond the edges count in the edge bins). Streams pt, eta and class_label only."""
    rs = cfg.raw["resampling"]
    pt_bins, eta_bins = rs["pt_bins"], rs["eta_bins"]
    shape = (len(cfg.class_names), len(pt_bins) - 1, len(eta_bins) - 1)
    counts = np.zeros(int(np.prod(shape)), dtype=np.int64)
    for path in shard_paths:
        with open_shard(path, cfg.tree) as shard:
            shard.check_fields({"pt": "train_sample.weights", "eta": "train_sample.weights",
                                "class_label": "train_sample.weights"})
            for chunk in shard.chunks(["pt", "eta", "class_label"], max(cfg.chunk_size, 200_000)):
                idx = _weight_bin(cfg, ak.to_numpy(chunk["class_label"]), ak.to_numpy(chunk["pt"]),
                                  ak.to_numpy(chunk["eta"]), shape)
                counts += np.bincount(idx, minlength=len(counts))
    return counts.reshape(shape)


def _weight_bin(cfg: Config, labels, pt, eta, shape) -> np.ndarray:
    rs = cfg.raw["resampling"]
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= shape[0]):
        raise TrainSampleError(f"class_label outside [0, {shape[0]}) in the shards")
    ipt = _bin_clipped(np.asarray(pt, dtype=np.float64), rs["pt_bins"])
    ieta = _bin_clipped(np.abs(np.asarray(eta, dtype=np.float64)), rs["eta_bins"])
    return (labels * shape[1] + ipt) * shape[2] + ieta


def class_weight_table(counts: np.ndarray) -> np.ndarray:
    """Weight per (class, pt bin, |eta| bin): 1 / (density of the class in the bin), normalised to a
    mean of 1 over the candidates of each class: n_class / (n_nonempty_bins * N(bin)); 0 for empty bins.
    Weighted, every populated bin of a class carries the same total weight (a flat spectrum in the
    resampling bins, as the resampling would make it)."""
    counts = np.asarray(counts, dtype=np.float64)
    table = np.zeros_like(counts)
    for t in range(counts.shape[0]):
        n = counts[t]
        full = n > 0
        if full.any():
            table[t][full] = n.sum() / (full.sum() * n[full])
    return table


def candidate_weights(cfg: Config, table: np.ndarray, labels, pt, eta) -> np.ndarray:
    return table.ravel()[_weight_bin(cfg, labels, pt, eta, table.shape)].astype(np.float32)


# ---------------------------------------------------------------------------------------------
# one chunk
def prepare(cfg: Config, chunk: ak.Array, scaling: dict, weight_table: np.ndarray | None = None,
            dtype=np.float64) -> dict[str, np.ndarray]:
    """Scaled model inputs of one chunk: candidate inputs (float64), per sequence padded inputs
    (``dtype``; scaled in float64) and valid masks, labels; the raw kinematics; and what the
    train_sample options ask for (``additional_labels``, ``<seq>_labels`` padded with -1, ``weights``
    when a weight table is given; the labels only when their branches are in ``chunk``). The one
    function both the train-sample writer and checks use."""
    opts = options(cfg)
    out: dict[str, np.ndarray] = {}
    cand_vars = [v.name for v in cfg.candidate_variables]
    x = candidate_features(chunk, cfg.candidate_variables)
    cand = apply_scaling(x, *scaling_arrays(scaling, "candidate", cand_vars), inplace=True)
    out[CANDIDATE_GROUP] = cand
    concat = cand[:, [cand_vars.index(v) for v in opts.concat]] if opts.concat else None
    # labels only where their branches were read (the writer reads them; model-input checks need not)
    extra = {c: _constituent_label_columns(chunk, c, fields) for c, fields in opts.constituent_labels.items()
             if all(f"{c}_{f}" in chunk.fields for f in fields)}
    for name, (coll, cone, flat, counts, key) in sequence_constituents(cfg, chunk, extra).items():
        nv, n_max = len(coll.variables), coll.n_max
        # flat is this chunk's own work array: scaled in place (its label columns, past nv, untouched)
        scaled = apply_scaling(flat[:, :nv], *scaling_arrays(scaling, coll.name, coll.variable_names, cone),
                               inplace=True)
        plan = pad_plan(counts, key, n_max)
        n, dst, src = plan
        k = 0 if concat is None else concat.shape[1]
        padded = np.zeros((n * n_max, nv + k), dtype=dtype)
        # no sort key and nothing truncated: src is every row in order (no gathered copy needed)
        padded[dst, :nv] = scaled if key is None and len(src) == len(scaled) else np.take(scaled, src, axis=0)
        if k:  # the candidate's (scaled) variables on every real constituent; padded slots stay 0
            padded[dst, nv:] = np.take(concat, dst // n_max, axis=0)
        valid = np.zeros(n * n_max, dtype=bool)
        valid[dst] = True
        out[name], out[f"{name}_valid"] = padded.reshape(n, n_max, nv + k), valid.reshape(n, n_max)
        if flat.shape[1] > nv:
            out[f"{name}_labels"] = pad(plan, n_max, flat[:, nv:], fill=-1)
    out["labels"] = ak.to_numpy(chunk["class_label"]).astype(np.int32)
    # unscaled kinematics and ids: evaluation in pt/|eta| bins, tracing a candidate back to its event
    for name, kdtype in KINEMATICS.items():
        if name in chunk.fields:
            out[name] = ak.to_numpy(chunk[name]).astype(kdtype)
    if opts.additional_labels and all(b in chunk.fields for b in _label_branches(opts)):
        out["additional_labels"] = _additional_labels(chunk, opts.additional_labels)
    if WEIGHT_FIELD in chunk.fields:   # normalised in the shards (taggerflow.event_weights)
        out[WEIGHT_FIELD] = ak.to_numpy(chunk[WEIGHT_FIELD]).astype(np.float32)
    if weight_table is not None:
        out["weights"] = candidate_weights(cfg, weight_table, out["labels"], ak.to_numpy(chunk["pt"]),
                                           ak.to_numpy(chunk["eta"]))
    return out


def _label_branches(opts: Options) -> set[str]:
    from taggerflow.expressions import expression_names

    return {b for _, expr in opts.additional_labels for b in expression_names(expr)}


def _additional_labels(chunk: ak.Array, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
    from taggerflow.expressions import expression_names

    n = len(chunk)
    out = np.empty((n, len(pairs)), dtype=np.float64)
    for i, (name, expr) in enumerate(pairs):
        value = evaluate(expr, {k: chunk[k] for k in expression_names(expr)})
        try:
            col = np.asarray(ak.to_numpy(value) if isinstance(value, ak.Array) else value, dtype=np.float64)
        except Exception:
            raise TrainSampleError(f"train_sample.additional_labels.{name}: '{expr}' is not one number per "
                                   f"candidate (a constituent branch?)") from None
        if col.ndim > 1:
            raise TrainSampleError(f"train_sample.additional_labels.{name}: '{expr}' is not one number per "
                                   f"candidate")
        out[:, i] = np.broadcast_to(col, (n,))
    return np.nan_to_num(out, nan=0.0, posinf=np.inf, neginf=-np.inf)


def _constituent_label_columns(chunk: ak.Array, coll: str, fields: Sequence[str]) -> np.ndarray:
    return np.stack([ak.to_numpy(ak.flatten(chunk[f"{coll}_{f}"], axis=1)).astype(np.float64) for f in fields],
                    axis=1)


# ---------------------------------------------------------------------------------------------
# layout and writer
def layout(cfg: Config, label_dtypes: dict[str, np.dtype] | None = None) -> dict[str, tuple]:
    """The datasets of a training file: key -> (per-candidate shape, dtype, attributes)."""
    opts = options(cfg)
    classes = cfg.class_names
    cand_vars = [v.name for v in cfg.candidate_variables]
    g = CANDIDATE_GROUP
    out: dict[str, tuple] = {
        f"{g}/inputs": ((len(cand_vars),), opts.precision, {"variables": cand_vars}),
        f"{g}/labels": ((), np.dtype(np.int32), {"classes": classes}),
        f"{g}/labels_one_hot": ((len(classes),), np.dtype(np.int8), {"classes": classes}),
        f"{g}/weights": ((), np.dtype(np.float32),
                         {"description": "per-class pt-|eta| flattening weights" if opts.weights else "ones"}),
    }
    for name, dtype in KINEMATICS.items():
        out[f"{g}/{name}"] = ((), np.dtype(dtype), {"description": "raw (unscaled) value"})
    if weights_configured(cfg):
        out[f"{g}/{WEIGHT_FIELD}"] = ((), np.dtype(np.float32), {"description": EVENT_WEIGHT_DESCRIPTION})
    if opts.additional_labels:
        out[f"{g}/additional_labels"] = ((len(opts.additional_labels),), np.dtype(np.float32),
                                         {"variables": [n for n, _ in opts.additional_labels],
                                          "description": "raw (unscaled) regression targets, NaN -> 0"})
    seq_vars = sequence_variables(cfg)
    for name, coll, cone in cfg.sequences():
        attrs = {"variables": seq_vars[name], "collection": coll.name, "cone": cone,
                 "concat_variables": list(opts.concat)}
        out[f"{name}/inputs"] = ((coll.n_max, len(seq_vars[name])), opts.precision, attrs)
        out[f"{name}/valid"] = ((coll.n_max,), np.dtype(bool), {})
        fields = opts.constituent_labels.get(coll.name)
        if fields:
            dtype = (label_dtypes or {}).get(coll.name, np.dtype(np.int32))
            out[f"{name}/labels"] = ((coll.n_max, len(fields)), np.dtype(dtype),
                                     {"variables": list(fields), "description": "raw, padded with -1"})
    return out


def file_arrays(cfg: Config, prepared: dict[str, np.ndarray], lay: dict[str, tuple]) -> dict[str, np.ndarray]:
    """prepare() output -> {dataset key: array} in the dtypes of ``lay``."""
    n = len(prepared["labels"])
    g = CANDIDATE_GROUP
    labels = prepared["labels"]
    one_hot = np.zeros((n, len(cfg.class_names)), dtype=np.int8)
    one_hot[np.arange(n), labels] = 1
    items = {f"{g}/inputs": prepared[g], f"{g}/labels": labels, f"{g}/labels_one_hot": one_hot,
             f"{g}/weights": prepared.get("weights", np.ones(n, dtype=np.float32))}
    for name in KINEMATICS:
        items[f"{g}/{name}"] = prepared[name]
    if f"{g}/additional_labels" in lay:
        items[f"{g}/additional_labels"] = prepared["additional_labels"]
    if f"{g}/{WEIGHT_FIELD}" in lay:
        items[f"{g}/{WEIGHT_FIELD}"] = prepared[WEIGHT_FIELD]
    for name, _, _ in cfg.sequences():
        items[f"{name}/inputs"] = prepared[name]
        items[f"{name}/valid"] = prepared[f"{name}_valid"]
        if f"{name}/labels" in lay:
            items[f"{name}/labels"] = prepared[f"{name}_labels"]
    return {k: np.asarray(v).astype(lay[k][1], copy=False) for k, v in items.items()}


class H5Writer:
    """Appends batches to the resizable datasets of one HDF5 file written under a temporary name.

    Rows are buffered and written in whole chunks of ``chunk_rows`` (each chunk is compressed once,
    never read back); ``commit()`` renames the file into place, ``abort()`` removes it."""

    FLUSH_BYTES = 32 << 20  # buffered rows are written about every FLUSH_BYTES, in whole chunks

    def __init__(self, path: str, lay: dict[str, tuple], opts: Options, attrs: dict):
        self.path, self.lay, self.opts = str(path), lay, opts
        self.chunk = max(1, opts.chunk_rows)
        row_bytes = sum(int(np.prod(s, dtype=np.int64)) * np.dtype(d).itemsize for s, d, _ in lay.values())
        self.flush_rows = self.chunk * max(1, self.FLUSH_BYTES // max(1, row_bytes * self.chunk))
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self.tmp = AtomicOutput(self.path, suffix=".h5").tmp  # a killed writer's temp is removed first
        self.f = None
        try:
            self.f = h5py.File(self.tmp, "w")
            comp = {"compression": opts.compression} if opts.compression else {}
            self._ds = {}
            for key, (shape, dtype, a) in lay.items():
                ds = self._ds[key] = self.f.create_dataset(key, shape=(0, *shape), maxshape=(None, *shape),
                                                           dtype=dtype, chunks=(self.chunk, *shape), **comp)
                for k, v in a.items():
                    ds.attrs[k] = v
            for k, v in attrs.items():
                self.f.attrs[k] = v
        except BaseException:
            self.abort()
            raise
        self.n = 0
        # one reused buffer per dataset (no fresh allocation, so no page faults, per batch)
        self._buf = {k: np.empty((self.flush_rows, *shape), dtype=dtype) for k, (shape, dtype, _) in lay.items()}
        self._fill = 0

    def append(self, arrays: dict[str, np.ndarray], rows: np.ndarray | None = None) -> None:
        """Append ``arrays`` (in the layout's dtypes), or only their ``rows`` (indices)."""
        if rows is None:
            rows = np.arange(len(next(iter(arrays.values()))))
        pos = 0
        while pos < len(rows):
            piece = rows[pos:pos + self.flush_rows - self._fill]
            end = self._fill + len(piece)
            for k in self.lay:
                np.take(arrays[k], piece, axis=0, out=self._buf[k][self._fill:end], mode="clip")
            self._fill = end
            pos += len(piece)
            if self._fill == self.flush_rows:
                self._flush()

    def _flush(self) -> None:
        m = self._fill
        if m == 0:
            return
        for k, buf in self._buf.items():
            ds = self._ds[k]
            ds.resize(self.n + m, axis=0)
            ds[self.n:self.n + m] = buf[:m]
        self.n += m
        self._fill = 0

    def finish(self) -> None:
        """Write what is buffered and close the (temporary) file."""
        self._flush()
        self.f.attrs["n_candidates"] = self.n
        self.f.close()
        self.f = None

    def commit(self) -> None:
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            if self.f is not None:
                self.f.close()
        except Exception:
            pass
        self.f = None
        try:
            os.remove(self.tmp)
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------------------------------------
def train_sample_hash(cfg: Config) -> str:
    """Identity of a training file: the hash of the configuration sections it depends on."""
    return cfg.sections_hash(TRAIN_SAMPLE_SECTIONS)


def check_existing_output(path: str, config_hash: str) -> None:
    """Refuse to overwrite a file that was written from another configuration."""
    if not os.path.exists(path):
        return
    try:
        with h5py.File(path, "r") as f:
            old = f.attrs.get("config_hash")
    except Exception:
        raise TrainSampleError(f"{path}: exists and is not a training file; refusing to overwrite it") from None
    if isinstance(old, bytes):
        old = old.decode()
    if old != config_hash:
        raise TrainSampleError(f"{path}: exists and was written from another configuration (config_hash "
                               f"{old!r}, this configuration {config_hash!r}); refusing to overwrite it: "
                               f"remove it or write elsewhere")


def check_scaling_matches(cfg: Config, scaling: dict, source: str = "") -> None:
    """The scaling file must have exactly the configuration's variables (and the cones the sequences
    use), with the same scaling types; a mismatch means it was computed from another configuration."""
    where = f" (needed for {source})" if source else ""
    types = variable_types(cfg)
    cones = {"candidate": (GLOBAL_CONE,)}
    for coll in cfg.collections:
        cones[coll.name] = coll.cones
    for t, variables in types.items():
        entries = scaling.get(t)
        if entries is None:
            raise ScalingError(f"scaling file has no entries for '{t}'{where}")
        for var in variables:
            if var.name not in entries:
                raise ScalingError(f"scaling file has no entry for {t}.{var.name}{where}")
            for cone in cones[t]:
                e = entries[var.name].get(cone)
                if e is None:
                    raise ScalingError(f"scaling file has no entry for {t}.{var.name}.{cone}{where}")
                if "scaling" in e and e["scaling"] != var.scaling:
                    raise ScalingError(f"scaling file: {t}.{var.name}.{cone} was computed as '{e['scaling']}', "
                                       f"the configuration says '{var.scaling}' (scaling from another "
                                       f"configuration?)")
        extra = sorted(set(entries) - {v.name for v in variables})
        if extra:
            raise ScalingError(f"scaling file has variables the configuration does not have: "
                               f"{', '.join(f'{t}.{v}' for v in extra)} (scaling from another configuration?)")
    extra_types = sorted(k for k, v in scaling.items() if k not in types and isinstance(v, dict)
                         and not str(k).startswith("_"))
    if extra_types:
        raise ScalingError(f"scaling file has variable types the configuration does not have: {extra_types} "
                           f"(scaling from another configuration?)")


def _label_dtypes(cfg: Config, path: str) -> dict[str, np.dtype]:
    """int32 for integer constituent label branches, float32 otherwise (from the first shard)."""
    labels = options(cfg).constituent_labels
    with open_shard(path, cfg.tree) as shard:
        first = shard.read(0, 1, [f"{coll}_{fld}" for coll, fields in labels.items() for fld in fields])
    out = {}
    for coll, fields in labels.items():
        kinds = {ak.to_numpy(ak.flatten(first[f"{coll}_{fld}"], axis=None)).dtype.kind for fld in fields}
        out[coll] = np.dtype(np.int32) if kinds <= {"i", "u", "b"} else np.dtype(np.float32)
    return out


def write_train_sample(cfg: Config, shard_paths: Iterable[str], scaling: dict,
                       outputs: dict[str, str], meta: dict | None = None,
                       weight_counts: np.ndarray | None = None, config_hash: str | None = None) -> dict[str, int]:
    """Scale, order and pad the candidates of the shards into one HDF5 file per split.

    weight_counts: the (class, pt, |eta|) histogram the ``weights`` option flattens (from
    weight_histogram over all shards of the sample); computed from ``shard_paths`` when None.
    config_hash: written as the ``config_hash`` attribute (default: train_sample_hash(cfg)); an
    existing output with another hash is never overwritten. All three files appear together, or none.
    """
    opts = options(cfg)
    shard_paths = list(shard_paths)
    config_hash = config_hash or train_sample_hash(cfg)
    check_scaling_matches(cfg, scaling)
    need = _branches(cfg)
    for path in shard_paths:
        with open_shard(path, cfg.tree) as shard:
            shard.check_fields(need)
    for s in SPLITS:
        check_existing_output(outputs[s], config_hash)
    weight_table = None
    if opts.weights:
        counts = weight_histogram(cfg, shard_paths) if weight_counts is None else np.asarray(weight_counts)
        rs = cfg.raw["resampling"]
        expected = (len(cfg.class_names), len(rs["pt_bins"]) - 1, len(rs["eta_bins"]) - 1)
        if counts.shape != expected:
            raise TrainSampleError(f"weight histogram has shape {counts.shape}, expected {expected} "
                                   f"(classes x resampling.pt_bins x resampling.eta_bins)")
        weight_table = class_weight_table(counts)
    lay = layout(cfg, _label_dtypes(cfg, shard_paths[0]) if shard_paths and opts.constituent_labels else None)
    options_attr = json.dumps({k: v for k, v in cfg.raw["train_sample"].items()}, sort_keys=True)
    branches = sorted(need)
    # pad straight into float32; float16 files are rounded once, from float64, like jets/inputs
    pad_dtype = np.float32 if opts.precision == np.float32 else np.float64
    writers: dict[str, H5Writer] = {}
    try:
        for s in SPLITS:
            attrs = {"scaling": json.dumps(scaling, sort_keys=True), "classes": cfg.class_names, "split": s,
                     "config_hash": config_hash, "train_sample": options_attr, **(meta or {})}
            writers[s] = H5Writer(outputs[s], lay, opts, attrs)
        for path in shard_paths:
            with open_shard(path, cfg.tree) as shard:
                for chunk in shard.chunks(branches, cfg.chunk_size):
                    arrays = file_arrays(cfg, prepare(cfg, chunk, scaling, weight_table, dtype=pad_dtype), lay)
                    split = split_index(ak.to_numpy(chunk["event"]), ak.to_numpy(chunk["dataset_id"]), opts.split)
                    for i, s in enumerate(SPLITS):
                        writers[s].append(arrays, np.flatnonzero(split == i))
        for w in writers.values():
            w.finish()
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    for w in writers.values():
        w.commit()
    return {s: w.n for s, w in writers.items()}


__all__ = ["CANDIDATE_GROUP", "KINEMATICS", "SPLITS", "Options", "TrainSampleError",
           "check_existing_output", "check_scaling_matches", "class_weight_table", "layout", "options",
           "order_and_pad", "prepare", "sequence_constituents", "sequence_variables", "split_index",
           "train_sample_hash", "weight_histogram", "write_train_sample"]
