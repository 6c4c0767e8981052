"""WriteTrainSample: scaled, ordered, padded training files in the umami HDF5 layout.

Layout per file: ``jets/inputs (n, n_vars)``, ``jets/labels (n,)``, ``jets/labels_one_hot
(n, n_classes)``, ``jets/weights (n,)``, ``<coll>/inputs (n, n_max, n_vars)``, ``<coll>/valid
(n, n_max)``; variable and class names as attributes in column order; the scaling as a JSON
attribute of the file. Candidates are assigned to train/validation/test by a hash of (event,
dataset_id), so one event never lands in two splits.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import awkward as ak
import h5py
import numpy as np

from taggerflow.cones import cone_masks
from taggerflow.config import Config
from taggerflow.io import candidate_features, collection_features, open_tree, read_range
from taggerflow.scaling import apply_scaling, scaling_arrays
from taggerflow.utils import atomic_path

SPLITS = ("train", "validation", "test")
CANDIDATE_GROUP = "jets"
# raw per-candidate values written beside the scaled inputs: jets/<name>
KINEMATICS = {"pt": np.float32, "eta": np.float32, "event": np.uint64, "dataset_id": np.int64}
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


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


def order_and_pad(flat: np.ndarray, counts: np.ndarray, key: np.ndarray | None, n_max: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Place each candidate's constituents (sorted by ``key`` descending when given; stable) into a
    (n, n_max, n_vars) array, truncating beyond n_max; returns (padded, valid)."""
    n = len(counts)
    cand = np.repeat(np.arange(n), counts)
    order = np.lexsort((-key, cand)) if key is not None else np.arange(len(cand))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    rank = np.arange(len(cand)) - starts[cand]  # position after sorting (cand is sorted already)
    keep = rank < n_max
    padded = np.zeros((n, n_max, flat.shape[1]), dtype=flat.dtype)
    valid = np.zeros((n, n_max), dtype=bool)
    src = order[keep]
    padded[cand[keep], rank[keep]] = flat[src]
    valid[cand[keep], rank[keep]] = True
    return padded, valid


def sequence_constituents(cfg: Config, chunk: ak.Array) -> dict[str, tuple]:
    """Raw constituents of every model sequence: {input name: (collection, cone, flat (m, n_vars),
    counts (n,), sort key (m,) or None)}. A collection with a cone is split into its inner and outer
    constituents (those beyond the outer cone are in neither)."""
    out = {}
    for coll in cfg.collections:
        flat, counts = collection_features(chunk, coll)
        key = None
        if coll.sort_by:
            key = ak.to_numpy(ak.flatten(chunk[f"{coll.name}_{coll.sort_by}"], axis=1)).astype(np.float64)
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


def prepare(cfg: Config, chunk: ak.Array, scaling: dict) -> dict[str, np.ndarray]:
    """Scaled model inputs of one chunk (float64): candidate inputs, per sequence padded inputs
    and valid masks, labels. The one function both the train-sample writer and checks use."""
    out: dict[str, np.ndarray] = {}
    cand_vars = [v.name for v in cfg.candidate_variables]
    x = candidate_features(chunk, cfg.candidate_variables)
    out[CANDIDATE_GROUP] = apply_scaling(x, *scaling_arrays(scaling, "candidate", cand_vars))
    for name, (coll, cone, flat, counts, key) in sequence_constituents(cfg, chunk).items():
        scaled = apply_scaling(flat, *scaling_arrays(scaling, coll.name, coll.variable_names, cone))
        out[name], out[f"{name}_valid"] = order_and_pad(scaled, counts, key, coll.n_max)
    out["labels"] = ak.to_numpy(chunk["class_label"]).astype(np.int32)
    # unscaled kinematics and ids: evaluation in pt/|eta| bins, tracing a candidate back to its event
    for name, dtype in KINEMATICS.items():
        if name in chunk.fields:
            out[name] = ak.to_numpy(chunk[name]).astype(dtype)
    return out


class H5Writer:
    """Appends batches to resizable datasets of one HDF5 file written under a temporary name."""

    def __init__(self, path: str, cfg: Config, scaling: dict, batch_size: int, meta: dict):
        self.path, self.cfg = path, cfg
        ts = cfg.raw["train_sample"]
        self.dtype = np.dtype(ts.get("precision", "float32"))
        comp = ts.get("compression", "gzip")
        self.comp = {"compression": comp} if comp else {}
        self._ctx = atomic_path(path, suffix=".h5")
        self._tmp = self._ctx.__enter__()
        self.f = h5py.File(self._tmp, "w")
        self.n = 0
        classes = cfg.class_names
        cand_vars = [v.name for v in cfg.candidate_variables]
        b = max(1, batch_size)
        g = self.f.create_group(CANDIDATE_GROUP)
        self._make(g, "inputs", (len(cand_vars),), self.dtype, b).attrs["variables"] = cand_vars
        self._make(g, "labels", (), np.int32, b).attrs["classes"] = classes
        self._make(g, "labels_one_hot", (len(classes),), np.int8, b).attrs["classes"] = classes
        self._make(g, "weights", (), np.float32, b)
        for name, dtype in KINEMATICS.items():
            self._make(g, name, (), dtype, b).attrs["description"] = "raw (unscaled) value"
        for name, coll, cone in cfg.sequences():
            gc = self.f.create_group(name)
            ds = self._make(gc, "inputs", (coll.n_max, len(coll.variables)), self.dtype, b)
            ds.attrs["variables"] = coll.variable_names
            ds.attrs["collection"], ds.attrs["cone"] = coll.name, cone
            self._make(gc, "valid", (coll.n_max,), bool, b)
        self.f.attrs["scaling"] = json.dumps(scaling, sort_keys=True)
        self.f.attrs["classes"] = classes
        for k, v in meta.items():
            self.f.attrs[k] = v

    def _make(self, g, name, shape, dtype, b):
        return g.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                                chunks=(b, *shape), **self.comp)

    def append(self, batch: dict[str, np.ndarray]) -> None:
        n = len(batch["labels"])
        if n == 0:
            return
        labels = batch["labels"]
        one_hot = np.zeros((n, len(self.cfg.class_names)), dtype=np.int8)
        one_hot[np.arange(n), labels] = 1
        items = {f"{CANDIDATE_GROUP}/inputs": batch[CANDIDATE_GROUP].astype(self.dtype),
                 f"{CANDIDATE_GROUP}/labels": labels, f"{CANDIDATE_GROUP}/labels_one_hot": one_hot,
                 f"{CANDIDATE_GROUP}/weights": batch.get("weights", np.ones(n, dtype=np.float32))}
        for name in KINEMATICS:
            items[f"{CANDIDATE_GROUP}/{name}"] = batch[name]
        for name, _, _ in self.cfg.sequences():
            items[f"{name}/inputs"] = batch[name].astype(self.dtype)
            items[f"{name}/valid"] = batch[f"{name}_valid"]
        for key, value in items.items():
            ds = self.f[key]
            ds.resize(self.n + n, axis=0)
            ds[self.n:self.n + n] = value
        self.n += n

    def close(self, ok: bool = True) -> None:
        self.f.attrs["n_candidates"] = self.n
        self.f.close()
        if ok:
            self._ctx.__exit__(None, None, None)
        else:
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)


def write_train_sample(cfg: Config, shard_paths: Iterable[str], scaling: dict,
                       outputs: dict[str, str], meta: dict | None = None) -> dict[str, int]:
    """Scale, order and pad the candidates of the shards into one HDF5 file per split."""
    fractions = cfg.raw["train_sample"]["split"]
    batch = int(cfg.raw["training"]["batch_size"])
    writers = {s: H5Writer(outputs[s], cfg, scaling, batch, {"split": s, **(meta or {})}) for s in SPLITS}
    ok = False
    try:
        for path in shard_paths:
            t = open_tree(path, cfg.tree)
            _check_scaling_covers(cfg, scaling, path)
            branches = sorted(set(cfg.required_branches()) | {"class_label", "dataset_id"})
            for chunk in read_range(path, cfg.tree, branches, 0, t.num_entries, cfg.chunk_size):
                prepared = prepare(cfg, chunk, scaling)
                split = split_index(ak.to_numpy(chunk["event"]), ak.to_numpy(chunk["dataset_id"]), fractions)
                for i, s in enumerate(SPLITS):
                    sel = split == i
                    writers[s].append({k: v[sel] for k, v in prepared.items()})
        ok = True
    finally:
        for w in writers.values():
            w.close(ok)
    return {s: w.n for s, w in writers.items()}


def _check_scaling_covers(cfg: Config, scaling: dict, source: str) -> None:
    from taggerflow.scaling import ScalingError, variable_types
    for t, variables in variable_types(cfg).items():
        for var in variables:
            if var.name not in scaling.get(t, {}):
                raise ScalingError(f"scaling file has no entry for {t}.{var.name} (needed for {source})")
