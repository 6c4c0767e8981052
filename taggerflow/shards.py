"""Shard files of ShuffleMergeSpectral: ROOT TTrees (default) or HDF5, both written reproducibly.

Layout (the same content in both formats):

* the candidates: every input field (flat ``x``, jagged ``<coll>_<field>`` with counter ``n<coll>``)
  plus ``class_label`` (int32), ``dataset_id`` (int64), ``dataset_group_id`` (int64);
* per group and class the coarse-bin histograms N (input counts) and P (acceptance) of the job:
  TH2D ``N_<group>_<class>`` / ``P_<group>_<class>`` (x: pt, y: |eta|) in ROOT, datasets
  ``hists/N_<group>_<class>`` with ``pt_edges``/``abs_eta_edges`` attributes in HDF5;
* the id maps ``dataset_ids`` / ``dataset_group_ids`` (JSON text: a TObjString in ROOT, a file
  attribute in HDF5).

ROOT shards are byte-identical for the same content because the writer fixes the file UUID and the
timestamps (see :func:`taggerflow.io.reproducible_root`); HDF5 shards are written without object
timestamps (``track_times=False``) and with fixed chunking and gzip settings, so they are too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import awkward as ak
import numpy as np
import uproot

from taggerflow.io import InputError, reproducible_root, to_writable, writable_types

FORMATS = ("root", "hdf5")
SUFFIX = {"root": ".root", "hdf5": ".h5"}


class Columns:
    """Candidates as numpy columns: flat fields, and per collection the counts and the flat values of
    each field. Row gathers, slices and concatenations are a few numpy calls (no awkward merges)."""

    def __init__(self, flat: dict[str, np.ndarray], colls: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]):
        self.flat, self.colls = flat, colls

    @classmethod
    def from_awkward(cls, chunk: ak.Array, collections: dict[str, list[str]],
                     rows: np.ndarray | None = None) -> "Columns":
        """Columns of ``chunk`` (only ``rows`` of it when given: taken field by field, so that no
        full copy of the chunk is made)."""
        grouped = {f"{c}_{f}" for c, fields in collections.items() for f in fields}
        flat = {}
        for k in chunk.fields:
            if k not in grouped:
                v = ak.to_numpy(chunk[k])
                flat[k] = v if rows is None else v[rows]
        colls = {}
        for c, fields in collections.items():
            if not fields:
                continue
            counts = ak.to_numpy(ak.num(chunk[f"{c}_{fields[0]}"], axis=1)).astype(np.int64)
            gather = None
            if rows is not None:
                offs = np.concatenate([[0], np.cumsum(counts)])
                n = counts[rows]
                gather = np.repeat(offs[:-1][rows] - np.concatenate([[0], np.cumsum(n)[:-1]]), n) + \
                    np.arange(int(n.sum()))
                counts = n
            vals = {}
            for f in fields:
                v = ak.to_numpy(ak.flatten(chunk[f"{c}_{f}"], axis=1))
                vals[f] = v if gather is None else v[gather]
            colls[c] = (counts, vals)
        return cls(flat, colls)

    def __len__(self) -> int:
        if self.flat:
            return len(next(iter(self.flat.values())))
        if self.colls:
            return len(next(iter(self.colls.values()))[0])
        return 0

    def with_column(self, name: str, values: np.ndarray) -> "Columns":
        return Columns({**self.flat, name: values}, self.colls)

    def take(self, idx: np.ndarray) -> "Columns":
        idx = np.asarray(idx, dtype=np.int64)
        flat = {k: v[idx] for k, v in self.flat.items()}
        colls = {}
        for c, (counts, values) in self.colls.items():
            offs = np.concatenate([[0], np.cumsum(counts)])
            n = counts[idx]
            starts = offs[:-1][idx]
            total = int(n.sum())
            # positions of the gathered constituents: start of each row + 0..n-1
            gather = np.repeat(starts - np.concatenate([[0], np.cumsum(n)[:-1]]), n) + np.arange(total)
            colls[c] = (n, {f: v[gather] for f, v in values.items()})
        return Columns(flat, colls)

    @staticmethod
    def concatenate_take(parts: Sequence["Columns"], idx: np.ndarray) -> "Columns":
        """``Columns.concatenate(parts).take(idx)``, one field at a time (the concatenation of a field
        is dropped once gathered), so that only one field is held twice."""
        if len(parts) == 1:
            return parts[0].take(idx)
        idx = np.asarray(idx, dtype=np.int64)
        p0 = parts[0]
        flat = {}
        for k in p0.flat:
            v = np.concatenate([p.flat[k] for p in parts])
            flat[k] = v[idx]
            del v
        colls = {}
        for c in p0.colls:
            counts = np.concatenate([p.colls[c][0] for p in parts])
            offs = np.concatenate([[0], np.cumsum(counts)])
            n = counts[idx]
            starts = offs[:-1][idx]
            total = int(n.sum())
            gather = np.repeat(starts - np.concatenate([[0], np.cumsum(n)[:-1]]), n) + np.arange(total)
            vals = {}
            for f in p0.colls[c][1]:
                v = np.concatenate([p.colls[c][1][f] for p in parts])
                vals[f] = v[gather]
                del v
            colls[c] = (n, vals)
        return Columns(flat, colls)

    def copy(self) -> "Columns":
        """A copy that shares no memory with this one."""
        return Columns({k: v.copy() for k, v in self.flat.items()},
                       {c: (counts.copy(), {f: v.copy() for f, v in values.items()})
                        for c, (counts, values) in self.colls.items()})

    def slice(self, a: int, b: int) -> "Columns":
        flat = {k: v[a:b] for k, v in self.flat.items()}
        colls = {}
        for c, (counts, values) in self.colls.items():
            lo = int(counts[:a].sum())
            hi = lo + int(counts[a:b].sum())
            colls[c] = (counts[a:b], {f: v[lo:hi] for f, v in values.items()})
        return Columns(flat, colls)

    @staticmethod
    def concatenate(parts: Sequence["Columns"], consume: bool = False) -> "Columns":
        """One Columns of ``parts`` in order. ``consume``: the parts give their arrays up one field at a
        time (they are left empty), so that at most one field is held twice."""
        if len(parts) == 1:
            return parts[0]
        p0 = parts[0]
        if not consume:
            flat = {k: np.concatenate([p.flat[k] for p in parts]) for k in p0.flat}
            colls = {c: (np.concatenate([p.colls[c][0] for p in parts]),
                         {f: np.concatenate([p.colls[c][1][f] for p in parts]) for f in p0.colls[c][1]})
                     for c in p0.colls}
            return Columns(flat, colls)
        flat = {k: np.concatenate([p.flat.pop(k) for p in parts]) for k in list(p0.flat)}
        colls = {}
        for c in list(p0.colls):
            counts = np.concatenate([p.colls[c][0] for p in parts])
            vals = {f: np.concatenate([p.colls[c][1].pop(f) for p in parts]) for f in list(p0.colls[c][1])}
            colls[c] = (counts, vals)
            for p in parts:
                del p.colls[c]
        return Columns(flat, colls)

    def to_uproot(self) -> dict:
        """uproot's writable form: flat arrays, and per collection a jagged record array."""
        out: dict = dict(self.flat)
        for c, (counts, values) in self.colls.items():
            offs = ak.index.Index64(np.concatenate([[0], np.cumsum(counts)]))
            rec = ak.contents.RecordArray([ak.contents.NumpyArray(v) for v in values.values()], list(values),
                                          length=int(counts.sum()))
            out[c] = ak.Array(ak.contents.ListOffsetArray(offs, rec))
        return out


#: default compression levels of the shards (resampling.compression_level): ZSTD 1 writes the
#: shuffle's shards ~20% faster than ZSTD 5 for files ~1% larger (bench_spectrum_shuffle.py), and
#: ZSTD decompresses as fast whatever the level
ROOT_LEVEL = 1
HDF5_LEVEL = 4


class ShardWriter:
    """Buffers candidates and writes them in batches of exactly ``batch`` rows (the last one: the
    rest), whatever the sizes of the chunks given to :meth:`extend`: the rows held (and the baskets
    written, with their converted copies) never exceed ``batch`` plus one chunk, independently of
    the input size and of the acceptance, and the basket layout depends only on the row count."""

    def __init__(self, path: str, tree: str, collections: dict[str, list[str]], batch: int):
        self.path, self.tree, self.collections = path, tree, collections
        self.batch = max(1, int(batch))
        self._pending: list[Columns] = []
        self._n_pending = 0
        self.n_written = 0

    def extend(self, chunk: "Columns | ak.Array") -> None:
        if len(chunk) == 0:
            return
        if isinstance(chunk, ak.Array):
            chunk = Columns.from_awkward(chunk, self.collections)
        self._pending.append(chunk)
        self._n_pending += len(chunk)
        while self._n_pending >= self.batch:
            self._write_batch()

    def _write_batch(self) -> None:
        """Write the first ``batch`` pending rows; the rest stays pending (copied: the written rows'
        arrays are freed)."""
        take, n = [], 0
        while n < self.batch:
            part = self._pending.pop(0)
            need = self.batch - n
            if len(part) > need:
                take.append(part.slice(0, need))
                self._pending.insert(0, part.slice(need, len(part)).copy())
                del part
                n = self.batch
            else:
                take.append(part)
                n += len(part)
        self._n_pending -= n
        data = Columns.concatenate(take, consume=True)
        del take
        self._write(data)
        self.n_written += len(data)

    def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending, self._n_pending = self._pending, [], 0
        data = Columns.concatenate(pending, consume=True)
        del pending
        self._write(data)
        self.n_written += len(data)

    def _write(self, data: Columns) -> None:
        raise NotImplementedError

    def put_hist(self, name: str, h) -> None:
        raise NotImplementedError

    def put_text(self, name: str, text: str) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(ok=exc_type is None)
        return False

    def close(self, ok: bool = True) -> None:
        raise NotImplementedError


class RootShardWriter(ShardWriter):
    def __init__(self, path: str, tree: str, collections, batch: int, identity: str, level: int = ROOT_LEVEL,
                 schema=None):
        super().__init__(path, tree, collections, batch)
        self._ctx = reproducible_root(identity)
        opts = self._ctx.__enter__()
        try:
            self._file = uproot.recreate(path, compression=uproot.ZSTD(level), **opts)
        except BaseException:
            self._ctx.__exit__(None, None, None)
            raise
        self._tree_made = False
        self._schema = schema

    def _make_tree(self, data: dict) -> None:
        self._file.mktree(self.tree, writable_types(data))  # a TTree (not an RNTuple)
        self._tree_made = True

    def _write(self, data: Columns) -> None:
        w = data.to_uproot()
        if not self._tree_made:
            self._make_tree(w)
        self._file[self.tree].extend(w)

    def put_hist(self, name: str, h) -> None:
        self._file[name] = h

    def put_text(self, name: str, text: str) -> None:
        self._file[name] = text

    def close(self, ok: bool = True) -> None:
        try:
            if ok:
                self.flush()
                if not self._tree_made and self._schema is not None:
                    # an empty shard still has the tree with every branch
                    schema = _schema(self._schema)
                    self._make_tree(to_writable(schema[:0], self.collections))
                    self._file[self.tree].extend(to_writable(schema[:0], self.collections))
            self._file.close()
        finally:
            self._ctx.__exit__(None, None, None)


class H5ShardWriter(ShardWriter):
    """HDF5 shard: group ``<tree>`` with one 1-D dataset per flat field, per collection a counter
    ``n<coll>`` and the flat constituent values ``<coll>_<field>``."""

    def __init__(self, path: str, tree: str, collections, batch: int, identity: str, level: int = HDF5_LEVEL,
                 schema=None):
        import h5py

        super().__init__(path, tree, collections, batch)
        self._h5 = h5py
        self._file = h5py.File(path, "w", track_order=False)
        self._file.attrs["identity"] = identity
        self._group = self._file.create_group(tree, track_order=False)
        self._group.attrs["collections"] = json.dumps(collections, sort_keys=True)
        self._level = level
        self._schema = schema
        self._made = False

    @staticmethod
    def _columns(data: Columns) -> dict[str, np.ndarray]:
        cols: dict[str, np.ndarray] = dict(data.flat)
        for c, (counts, values) in data.colls.items():
            cols[f"n{c}"] = counts.astype(np.int32)
            for f, v in values.items():
                cols[f"{c}_{f}"] = v
        return cols

    def _write(self, data: Columns) -> None:
        cols = self._columns(data)
        for name, arr in cols.items():
            if not self._made or name not in self._group:
                self._group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=arr.dtype,
                                           chunks=(65536,), compression="gzip", compression_opts=self._level,
                                           shuffle=True, track_times=False)
            ds = self._group[name]
            n = ds.shape[0]
            ds.resize((n + len(arr),))
            ds[n:] = arr
        self._made = True

    def put_hist(self, name: str, h) -> None:
        g = self._file.require_group("hists")
        d = g.create_dataset(name, data=np.asarray(h.values()), track_times=False)
        d.attrs["pt_edges"] = np.asarray(h.axes[0].edges)
        d.attrs["abs_eta_edges"] = np.asarray(h.axes[1].edges)

    def put_text(self, name: str, text: str) -> None:
        self._file.attrs[name] = text

    def close(self, ok: bool = True) -> None:
        try:
            if ok:
                self.flush()
                if not self._made and self._schema is not None:
                    self._write(Columns.from_awkward(_schema(self._schema)[:0], self.collections))
                self._group.attrs["num_entries"] = np.int64(self.n_written)
        finally:
            self._file.close()


def _schema(schema) -> ak.Array:
    """The schema of an empty shard: an array, or a function returning it (called only when needed)."""
    return schema() if callable(schema) else schema


def shard_writer(fmt: str, path: str, tree: str, collections, batch: int, identity: str,
                 schema=None, level: int | None = None) -> ShardWriter:
    """The shard writer of format ``fmt``; ``schema``: the fields and types of an empty shard (an
    awkward array, or a function returning one, called only if no rows are written); ``level``: the
    compression level (ZSTD for root, gzip for hdf5; None: ROOT_LEVEL / HDF5_LEVEL)."""
    kw = {"schema": schema} if level is None else {"schema": schema, "level": level}
    if fmt == "root":
        return RootShardWriter(path, tree, collections, batch, identity, **kw)
    if fmt == "hdf5":
        return H5ShardWriter(path, tree, collections, batch, identity, **kw)
    raise ValueError(f"unknown shard format '{fmt}' (allowed: {', '.join(FORMATS)})")


# ---------------------------------------------------------------------------------------------
class _Counter:
    def __init__(self, name: str):
        self.name = name


class _H5Branch:
    def __init__(self, tree: "H5ShardTree", name: str):
        self._tree, self.name = tree, name
        coll = tree._jagged.get(name)
        self.count_branch = _Counter(f"n{coll}") if coll else None

    def array(self, entry_start: int = 0, entry_stop: int | None = None, library: str = "ak"):
        arr = self._tree.arrays([self.name], entry_start=entry_start, entry_stop=entry_stop)[self.name]
        return ak.to_numpy(arr) if library == "np" and self.count_branch is None else arr


class H5ShardTree:
    """A read view of an HDF5 shard with the interface of the uproot TTree the stages use (read
    through taggerflow.formats.shards.ShardSource)."""

    def __init__(self, path: str, tree: str):
        import h5py

        try:
            self._file = h5py.File(path, "r")
        except Exception as e:
            raise InputError(f"{path}: cannot be read as an HDF5 file ({type(e).__name__}: {e})") from None
        if tree not in self._file:
            raise InputError(f"{path}: no tree '{tree}' (keys: {', '.join(sorted(self._file.keys())) or 'none'})")
        self.path, self.name = path, tree
        self._g = self._file[tree]
        self.collections = json.loads(self._g.attrs.get("collections", "{}"))
        self._jagged = {f"{c}_{f}": c for c, fields in self.collections.items() for f in fields}
        self.num_entries = int(self._g.attrs.get("num_entries", 0))
        self._offsets: dict[str, np.ndarray] = {}

    def keys(self) -> list[str]:
        return list(self._g.keys())

    def close(self) -> None:
        self._file.close()

    def values(self) -> list[_H5Branch]:
        return [_H5Branch(self, k) for k in self.keys()]

    def __getitem__(self, name: str) -> _H5Branch:
        if name not in self._g:
            raise KeyError(name)
        return _H5Branch(self, name)

    def common_entry_offsets(self) -> list[int]:
        return list(range(0, self.num_entries, 65536)) + [self.num_entries]

    def _offs(self, coll: str) -> np.ndarray:
        if coll not in self._offsets:
            counts = self._g[f"n{coll}"][:].astype(np.int64)
            self._offsets[coll] = np.concatenate([[0], np.cumsum(counts)])
        return self._offsets[coll]

    def arrays(self, branches: Sequence[str] | None = None, entry_start: int = 0, entry_stop: int | None = None,
               library: str = "ak") -> ak.Array:
        stop = self.num_entries if entry_stop is None else min(int(entry_stop), self.num_entries)
        start = max(0, int(entry_start))
        out = {}
        for name in (list(branches) if branches is not None else self.keys()):
            if name not in self._g:
                raise InputError(f"{self.path}: no branch '{name}' in tree '{self.name}'")
            coll = self._jagged.get(name)
            if coll is None:
                out[name] = self._g[name][start:stop]
            else:
                offs = self._offs(coll)
                vals = self._g[name][offs[start]:offs[stop]]
                out[name] = ak.unflatten(vals, np.diff(offs[start:stop + 1]))
        return ak.Array(out) if out else ak.Array(ak.contents.RecordArray([], [], length=stop - start))
