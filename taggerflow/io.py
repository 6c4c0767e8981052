"""Reading and writing candidate trees.

Readers hand every stage the same thing: chunks of candidates as awkward arrays whose fields are
the input branches (flat candidate branches, jagged constituent branches ``<coll>_<field>``).
Every read streams in bounded chunks. Errors name the file, tree and branch.
"""

from __future__ import annotations

import contextlib
import datetime as _datetime
import os
import types
import uuid as _uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import awkward as ak
import numpy as np
import uproot

from taggerflow.expressions import evaluate  # noqa: F401  (re-exported: io.evaluate)

class InputError(RuntimeError):
    """An input file that cannot be used; the message names the file (and branch)."""


def uproot_open_options(path: str, direct: bool = False) -> dict:
    """Options of ``uproot.open`` for one input file.

    No array cache: every stage reads each range once, and uproot's default cache (100 MB per open
    file) would make the memory of a job grow with the number of files it reads. With ``direct``, a
    local file is read by uproot's plain file source in the calling thread instead of its default
    fsspec source (which hands every read to a pool of helper threads): no thread hand-off per
    request, and no per-thread allocator arenas whose retained memory grows with the reads done.
    The file stays open until the tree's file is closed (``tree.file.close()``)."""
    opts: dict = {"array_cache": None}
    if direct and "://" not in str(path):
        opts.update(handler=uproot.source.file.MultithreadedFileSource, use_threads=False, num_workers=1,
                    object_cache=None)
    return opts


def open_tree(path: str, tree: str, direct: bool = False):
    """Open ``path`` and return its TTree (or RNTuple) ``tree``, with errors that name both (HDF5
    shards: :func:`taggerflow.formats.shards.open_shard`). ``direct``: see
    :func:`uproot_open_options` (the caller closes the file)."""
    if "://" not in path and not os.path.exists(path):
        raise InputError(f"{path}: input file does not exist")
    try:
        f = uproot.open(path, **uproot_open_options(path, direct))
    except Exception as e:  # uproot raises many types for corrupt/truncated files
        # a local file that exists but does not open is damaged; a URL may also be unreachable
        damaged = ": corrupt or truncated" if "://" not in path else ""
        raise InputError(f"{path}: cannot be read as a ROOT file{damaged} ({type(e).__name__}: {e})") from None
    try:
        obj = f[tree]
    except Exception:
        keys = ", ".join(sorted({k.split(";")[0] for k in f.keys()})) or "none"
        corrupt = _corruption(f, path)
        f.close()
        if corrupt:
            raise InputError(f"{path}: corrupt ROOT file: {corrupt}; no tree '{tree}' can be read") from None
        raise InputError(f"{path}: no tree '{tree}' (keys: {keys})") from None
    _index_rntuple_fields(obj)
    return obj


# uproot versions whose RField.fields was measured and whose cache `_fields` is primed below
_RNTUPLE_FIELD_INDEX_UPROOT = ((5, 6), (5, 8))


def _index_rntuple_fields(ntuple) -> None:
    """Fill uproot's per-field cache of subfields for every field of an RNTuple in one pass.

    uproot 5.6-5.7 finds a field's subfields by scanning all field records, once per field, so
    listing or reading an RNTuple costs O(fields^2): 2.5-4 s per NanoAOD file of 2,300 fields, against
    0.01 s for the same TTree (benchmarks/bench_rntuple.py). The lists made here are the ones
    uproot's own `RField.fields` makes (same rule: children in record order, anonymous children
    replaced by their own children); tests/test_rntuple_fields.py checks they are equal, and the
    priming is skipped for an uproot outside the tested range."""
    import uproot.behaviors.RNTuple

    if not isinstance(ntuple, uproot.behaviors.RNTuple.RNTuple):
        return
    version = tuple(int(p) for p in uproot.__version__.split(".")[:2])
    low, high = _RNTUPLE_FIELD_INDEX_UPROOT
    if not (low <= version < high) or getattr(ntuple, "_fields", "absent") is not None:
        return
    records = ntuple.field_records
    fields = ntuple.all_fields
    children: dict[int, list[int]] = {}
    for i, record in enumerate(records):
        if record.parent_field_id != i:
            children.setdefault(record.parent_field_id, []).append(i)

    def subfields(fid: int) -> list:
        if fields[fid]._fields is None:
            out = []
            for i in children.get(fid, ()):
                out.extend(subfields(i) if fields[i].is_anonymous else [fields[i]])
            fields[fid]._fields = out
        return fields[fid]._fields

    for fid in range(len(fields)):
        subfields(fid)
    ntuple._fields = [fields[i] for i, record in enumerate(records) if record.parent_field_id == i]


def _corruption(f, path: str) -> str | None:
    """Why an opened ROOT file that lacks a tree is damaged, or None for a sound file. ROOT writes
    the list of keys and the streamer infos when it closes a file, so a file whose header points at
    neither was never closed by its writer (a killed job, a cut-off copy); one that ends before the
    header's end of file is truncated."""
    try:
        header = f.file
        seek_keys = int(getattr(f, "_fSeekKeys", 1))
        if seek_keys == 0 and int(header.fSeekInfo) == 0:
            return "no list of keys and no streamer infos, as in a file its writer never closed"
        size = os.path.getsize(path) if "://" not in path else None
        if size is not None and int(header.fEND) > size:
            return f"truncated: {size} bytes, the header says {int(header.fEND)}"
    except Exception:
        return None
    return None


def tree_keys(t) -> list[str]:
    """The names a reader can ask for: a TTree's branch names, an RNTuple's top-level field names.
    uproot lists an RNTuple's subfields recursively by default, at a cost that grows with the square
    of the number of fields (3 s on open for NanoAOD's 1,500 fields); the readers never read a
    subfield by name, so the top level is all they need (benchmarks/bench_rntuple.py)."""
    import uproot.behaviors.RNTuple

    if isinstance(t, uproot.behaviors.RNTuple.RNTuple):
        return list(t.keys(recursive=False))
    return list(t.keys())


def num_entries(path: str, tree: str) -> int:
    return int(open_tree(path, tree).num_entries)


def _count_branch(b):
    """``b.count_branch`` (the branch holding b's counts, or None), without uproot's class look-ups
    for the common case of a branch with no count leaf."""
    try:
        leaves = b.member("fLeaves")
        if len(leaves) != 1:
            return None
        out = leaves[0].member("fLeafCount")
        if out is None:
            return None
        while type(out).__name__.startswith("Model_TLeaf"):   # as uproot's count_branch walks up
            out = out.parent
        if type(out).__name__.startswith("Model_TBranch"):
            return out
    except Exception:
        pass
    return getattr(b, "count_branch", None)


def input_branches(t) -> list[str]:
    """All data branches of a tree, without counter branches (uproot writes those itself)."""
    import uproot.behaviors.RNTuple

    if isinstance(t, uproot.behaviors.RNTuple.RNTuple):
        # no counter fields; `_collectionN` are the storage of NanoAOD collections, not variables
        return [k for k in tree_keys(t) if "/" not in k and "." not in k and not k.startswith("_collection")]
    counters = set()
    for b in t.values():
        count = _count_branch(b)
        if count is not None:
            counters.add(count.name)
    return [k for k in tree_keys(t) if k not in counters and "/" not in k and "." not in k]


def collection_fields(t, branches: Sequence[str]) -> dict[str, list[str]]:
    """Group jagged branches by their counter: {'pfcand': ['pt', 'eta', ...]} for npfcand."""
    groups: dict[str, list[str]] = {}
    for name in branches:
        count = _count_branch(t[name])
        if count is None:
            continue
        coll = count.name[1:] if count.name.startswith("n") else count.name
        if name.startswith(coll + "_"):
            groups.setdefault(coll, []).append(name[len(coll) + 1:])
    return groups


@dataclass
class Segment:
    """Entries [start, stop) of one input file (of dataset ``dataset``, when known)."""

    path: str
    start: int
    stop: int
    dataset: str = ""


# ---------------------------------------------------------------------------------------------
# features
def candidate_features(chunk: ak.Array, variables) -> np.ndarray:
    """(n, n_vars) float64 raw candidate features."""
    n = len(chunk)
    out = np.empty((n, len(variables)), dtype=np.float64)
    for i, var in enumerate(variables):
        ns = {name: chunk[name] for name in var.names_used}
        out[:, i] = np.broadcast_to(ak.to_numpy(evaluate(var.expression, ns)).astype(np.float64), (n,))
    return out


def collection_features(chunk: ak.Array, coll) -> tuple[np.ndarray, np.ndarray]:
    """Raw constituent features of one collection, flattened: (sum n_i, n_vars) float64, counts (n,)."""
    first = chunk[f"{coll.name}_{_first_field(coll)}"]
    counts = ak.to_numpy(ak.num(first, axis=1)).astype(np.int64)
    columns = []
    for var in coll.variables:
        ns = {}
        for name in var.names_used:
            ns[name] = chunk[name[len("cand_"):]] if name.startswith("cand_") else chunk[f"{coll.name}_{name}"]
        value = evaluate(var.expression, ns)
        value = ak.broadcast_arrays(value, first)[0]
        columns.append(ak.to_numpy(ak.flatten(value, axis=1)))
    # each column converted straight into the (m, n_vars) array, a block of rows at a time: one
    # column alone would touch every cache line of the whole array (n_vars passes over memory)
    m = int(counts.sum())
    flat = np.empty((m, len(columns)), dtype=np.float64)
    step = max(1, _FILL_BLOCK_BYTES // (8 * max(1, len(columns))))
    for start in range(0, m, step):
        stop = min(start + step, m)
        block = flat[start:stop]
        for i, col in enumerate(columns):
            block[:, i] = col[start:stop]
    return flat, counts


#: rows of a (m, n_vars) float64 array filled column by column at once: small enough to stay in the CPU's caches
_FILL_BLOCK_BYTES = 256 << 10


def _first_field(coll) -> str:
    for var in coll.variables:
        for name in var.names_used:
            if not name.startswith("cand_"):
                return name
    if coll.sort_by:
        return coll.sort_field
    raise ValueError(f"collection '{coll.name}': no variable reads a constituent branch")


def labels_from_truth(truth: np.ndarray, truth_codes: dict[str, list[int]]) -> np.ndarray:
    """Class index per candidate (order of truth_codes), -1 where the truth value has no class."""
    truth = np.asarray(truth)
    codes_all = [int(c) for codes in truth_codes.values() for c in codes]
    if truth.dtype.kind in "iub" and codes_all and max(codes_all) - min(codes_all) < 1 << 16:
        # integer truth: one table look-up instead of one isin per class
        lo, hi = min(codes_all), max(codes_all)
        lut = np.full(hi - lo + 1, -1, dtype=np.int32)
        for i, codes in reversed(list(enumerate(truth_codes.values()))):
            lut[np.asarray(codes, dtype=np.int64) - lo] = i
        idx = truth.astype(np.int64) - lo
        inside = (idx >= 0) & (idx <= hi - lo)
        return np.where(inside, lut[np.clip(idx, 0, hi - lo)], np.int32(-1)).astype(np.int32)
    labels = np.full(len(truth), -1, dtype=np.int32)
    for i, codes in enumerate(truth_codes.values()):
        labels[np.isin(truth, codes)] = i
    return labels


# ---------------------------------------------------------------------------------------------
def to_writable(chunk: ak.Array, collections: dict[str, list[str]]) -> dict:
    """Turn a chunk with flat '<coll>_<field>' jagged fields into uproot's writable form, so that the
    written tree has the same branch names (and one counter 'n<coll>' per collection)."""
    out: dict = {}
    grouped = {f"{c}_{f}" for c, fields in collections.items() for f in fields}
    for name in chunk.fields:
        if name not in grouped:
            out[name] = chunk[name]
    for coll, fields in collections.items():
        out[coll] = ak.zip({f: chunk[f"{coll}_{f}"] for f in fields})
    return out


def writable_types(data: dict) -> dict:
    """Branch types for uproot's mktree from a to_writable() dict."""
    return {k: (v.type.content if isinstance(v, ak.Array) else np.asarray(v).dtype) for k, v in data.items()}


# ---------------------------------------------------------------------------------------------
# reproducible ROOT outputs (written through taggerflow.utils.atomic_path(path, folder=True))
#: the timestamp written into reproducible ROOT files: SOURCE_DATE_EPOCH if set, else 2000-01-01
def _fixed_time() -> _datetime.datetime:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.isdigit():
        return _datetime.datetime.fromtimestamp(int(epoch), _datetime.timezone.utc).replace(tzinfo=None)
    return _datetime.datetime(2000, 1, 1)


@contextlib.contextmanager
def reproducible_root(identity: str) -> Iterator[dict]:
    """Options for ``uproot.recreate`` and a context under which the file gets no wall-clock data.

    uproot writes a random UUID (fixed through its ``uuid_function`` option: here a name-based UUID
    of ``identity``) and ``datetime.now()`` into the file header, every directory and every key
    (TTree, baskets, histograms) with no option to fix it: within this context those modules see a
    clock that always says :func:`_fixed_time`. With the same content, compression and file name, two
    writes then give the same bytes. Not thread-safe (it swaps a module attribute of uproot)."""
    import uproot.writing._cascade as c1
    import uproot.writing._cascadetree as c2
    import uproot.writing.writable as c3

    fixed = _fixed_time()

    class _Clock(_datetime.datetime):
        @classmethod
        def now(cls, tz=None):  # noqa: ARG003
            return fixed

    shim = types.SimpleNamespace(datetime=_Clock, timezone=_datetime.timezone, timedelta=_datetime.timedelta)
    mods = [m for m in (c1, c2, c3) if getattr(m, "datetime", None) is _datetime]
    file_uuid = _uuid.uuid5(_uuid.NAMESPACE_URL, f"taggerflow:{identity}")
    for m in mods:
        m.datetime = shim
    try:
        yield {"uuid_function": lambda: file_uuid}
    finally:
        for m in mods:
            m.datetime = _datetime
