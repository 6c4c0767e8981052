"""ATLAS training-dataset-dumper HDF5 (``inputs.format: h5``): a structured candidates dataset
(``inputs.h5.candidates``, default ``jets``) of shape (N,) and constituent datasets
(``inputs.h5.constituents``: {name: dataset}, default ``{tracks: tracks}``) of shape (N, n_max) with a
boolean ``valid`` field (``inputs.h5.valid``); the valid entries become the lists ``<name>_<field>``.
Local files only.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import awkward as ak
import numpy as np

from taggerflow.formats.base import Source, is_url
from taggerflow.io import InputError

FORMAT = "h5"
DEFAULT_TREE = "candidates"   # not used: the datasets are named by inputs.h5
DEFAULT_CANDIDATES, DEFAULT_VALID = "jets", "valid"   # inputs.h5.candidates, inputs.h5.valid
SCHEMA = {"inputs.h5": {"candidates": (str, False, DEFAULT_CANDIDATES), "constituents": (dict, False),
                        "valid": (str, False, DEFAULT_VALID)}}


def validate(section: dict, cfg, err) -> None:
    """The section's keys and types are all there is to check (SCHEMA); the datasets are checked
    when a file is opened."""


def open_source(path: str, tree: str, section: dict) -> "H5Source":
    return H5Source(path, section)


_BUFFERS = threading.local()


def _read_buffers() -> dict:
    """This thread's read buffers of H5Source: (record type, row shape) -> array (the largest chunk
    read so far)."""
    bufs = getattr(_BUFFERS, "bufs", None)
    if bufs is None:
        bufs = _BUFFERS.bufs = {}
    return bufs


class H5Source(Source):
    """Training-dataset-dumper HDF5: structured ``jets`` (N,) + constituents (N, n_max) with ``valid``."""

    def __init__(self, path: str, spec: dict):
        import h5py

        self.path = path
        if is_url(path):
            raise InputError(f"{path}: HDF5 inputs must be local files (URLs are read only for ROOT files)")
        if not os.path.exists(path):
            raise InputError(f"{path}: input file does not exist")
        try:
            self.file = h5py.File(path, "r")
        except Exception as e:
            raise InputError(f"{path}: cannot be read as an HDF5 file ({type(e).__name__}: {e})") from None
        self.jets_name = spec.get("candidates", DEFAULT_CANDIDATES)
        self.valid = spec.get("valid", DEFAULT_VALID)
        if self.jets_name not in self.file:
            raise InputError(f"{path}: no dataset '{self.jets_name}' (config key inputs.h5.candidates; keys: "
                             f"{', '.join(sorted(self.file.keys())) or 'none'})")
        self.jets = self.file[self.jets_name]
        self.num_entries = int(self.jets.shape[0])
        self._cons = {}
        for name, ds in (spec.get("constituents") or {"tracks": "tracks"}).items():
            if ds not in self.file:
                if spec.get("constituents"):
                    raise InputError(f"{path}: no dataset '{ds}' (config key inputs.h5.constituents.{name})")
                continue
            d = self.file[ds]
            if d.ndim != 2 or d.shape[0] != self.num_entries:
                raise InputError(f"{path}: dataset '{ds}' has shape {d.shape}, expected ({self.num_entries}, n_max)")
            if self.valid not in (d.dtype.names or ()):
                raise InputError(f"{path}: dataset '{ds}' has no '{self.valid}' field (config key inputs.h5.valid)")
            self._cons[name] = d

    def describe(self) -> str:
        return f"dataset '{self.jets_name}'"

    def fields(self) -> list[str]:
        out = list(self.jets.dtype.names)
        for name, d in self._cons.items():
            out += [f"{name}_{f}" for f in d.dtype.names if f != self.valid]
        return out

    def collections(self) -> dict[str, list[str]]:
        return {name: [f for f in d.dtype.names if f != self.valid] for name, d in self._cons.items()}

    def cluster_starts(self) -> np.ndarray:
        chunk = (self.jets.chunks or (self.num_entries,))[0] or self.num_entries
        return np.unique(np.append(np.arange(0, self.num_entries, max(int(chunk), 1)), self.num_entries))

    def check_integrity(self, fields: Sequence[str] | None = None) -> None:
        pass

    def _block(self, ds, names: list[str], start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of the compound dataset ``ds`` holding (at least) the fields ``names``.
        Whole records are read where the fields fill half a record or more: HDF5 then copies the
        records as they are stored, while reading a subset of the fields converts every element
        (3-5x slower); into a buffer that this thread reuses for every file with the same record type
        (no fresh pages for every read; one buffer however many files are open)."""
        need = sum(ds.dtype.fields[n][0].itemsize for n in names)
        if ds.dtype.itemsize > 2 * need:
            return ds.fields(names)[start:stop]
        shape = (stop - start, *ds.shape[1:])
        bufs = _read_buffers()
        key = (ds.dtype, shape[1:])
        buf = bufs.get(key)
        if buf is None or buf.shape[0] < shape[0]:
            bufs.pop(key, None)
            buf = bufs[key] = np.empty(shape, dtype=ds.dtype)
        out = buf[:shape[0]]
        if shape[0]:
            ds.read_direct(out, np.s_[start:stop])
        return out

    def read(self, start: int, stop: int, fields: Sequence[str]) -> ak.Array:
        fields = list(fields)
        jet_f = [f for f in fields if f in self.jets.dtype.names]
        out: dict = {}
        try:
            if jet_f:
                block = self._block(self.jets, jet_f, start, stop)
                for f in jet_f:   # copies: the block may be a reused buffer
                    out[f] = np.array(block[f], order="C")
            for name, d in self._cons.items():
                want = [f for f in fields if f.startswith(name + "_") and f[len(name) + 1:] in d.dtype.names]
                if not want:
                    continue
                sub = [f[len(name) + 1:] for f in want]
                block = self._block(d, sub + [self.valid], start, stop)
                valid = block[self.valid].astype(bool)
                offsets = np.zeros(len(valid) + 1, dtype=np.int64)
                np.cumsum(valid.sum(axis=1), out=offsets[1:])
                offsets = ak.index.Index64(offsets)   # shared by the fields of this collection
                # the valid records first, gathered as opaque records (numpy's masking of structured
                # arrays copies field by field, 4x slower), then each field from those
                rec = np.dtype((np.void, block.dtype.itemsize))
                kept = np.ascontiguousarray(block).reshape(-1).view(rec)[valid.reshape(-1)].view(block.dtype)
                for f, s in zip(want, sub):
                    out[f] = ak.Array(ak.contents.ListOffsetArray(
                        offsets, ak.contents.NumpyArray(np.ascontiguousarray(kept[s]))))
                del kept
        except InputError:
            raise
        except Exception as e:
            raise InputError(f"{self.path}: failed to read entries {start}-{stop} ({type(e).__name__}: {e})") from None
        missing = [f for f in fields if f not in out]
        if missing:
            raise InputError(f"{self.path}: no field '{missing[0]}' in {self.describe()}")
        return ak.Array({k: out[k] for k in fields})

    def close(self) -> None:
        try:
            self.file.close()
        except Exception:
            pass
