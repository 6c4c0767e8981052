"""Candidate trees (``inputs.format: candidate_tree``, the default): one TTree entry per candidate
(TauTuple-like), the branches as they are; jagged branches with a counter ``n<coll>`` are grouped
into the constituent collection ``<coll>`` (fields ``<coll>_<field>``). No ``inputs`` section of
its own; ``inputs.tree`` names the tree (default ``candidates``).

The module to copy for a new input format: ``FORMAT``, ``DEFAULT_TREE``, ``SCHEMA``, ``validate``
and ``open_source`` (see taggerflow/formats/__init__.py), registered by one line in ``MODULES``.
"""

from __future__ import annotations

from collections.abc import Sequence

import awkward as ak
import numpy as np
import uproot

from taggerflow.formats.base import Source, close_tree
from taggerflow.io import InputError, collection_fields, input_branches, open_tree, tree_keys

FORMAT = "candidate_tree"
DEFAULT_TREE = "candidates"
SCHEMA: dict = {}   # no inputs.candidate_tree section


def validate(section: dict, cfg, err) -> None:
    """Nothing to check: the format has no section of its own."""


def open_source(path: str, tree: str, section: dict) -> "TreeSource":
    return TreeSource(path, tree)


class TreeSource(Source):
    """A candidate tree: one entry per candidate."""

    def __init__(self, path: str, tree: str):
        self.path, self.tree_name = path, tree
        self.tree = self._open(path, tree)
        try:
            self.num_entries = int(self.tree.num_entries)
            self._keys = set(tree_keys(self.tree))
            # made when first asked for (a scan of every branch's count leaf: Spectrum never needs it)
            self._fields_cache: list[str] | None = None
            self._colls_cache: dict[str, list[str]] | None = None
        except BaseException:
            self.close()
            raise

    def _open(self, path: str, tree: str):
        return open_tree(path, tree, direct=True)

    def describe(self) -> str:
        return f"tree '{self.tree_name}'"

    @property
    def _fields(self) -> list[str]:
        if self._fields_cache is None:
            self._fields_cache = input_branches(self.tree)
        return self._fields_cache

    def fields(self) -> list[str]:
        return list(self._fields)

    def has_fields(self, names) -> set[str]:
        # the tree's branch names answer this without the counter scan of fields() (a counter
        # branch, if a config asks for one, holds real data and reads like any flat branch)
        return set(names) & self._keys

    @property
    def _colls(self) -> dict[str, list[str]]:
        if self._colls_cache is None:
            self._colls_cache = collection_fields(self.tree, self._fields)
        return self._colls_cache

    def collections(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self._colls.items()}

    def cluster_starts(self) -> np.ndarray:
        try:
            offs = np.asarray(self.tree.common_entry_offsets(), dtype=np.int64)
        except Exception:
            offs = np.array([0, self.num_entries], dtype=np.int64)
        return offs

    def check_integrity(self, fields: Sequence[str] | None = None) -> None:
        """Truncated files: every basket the fields need must lie inside the file (no data is read;
        taggerflow.integrity.check_baskets, as Spectrum checks it)."""
        from taggerflow.integrity import check_baskets

        present = set(tree_keys(self.tree))
        check_baskets(self.tree, self.path, [n for n in (fields or self._fields) if n in present])

    def read(self, start: int, stop: int, fields: Sequence[str]) -> ak.Array:
        try:
            return self.tree.arrays(list(fields), entry_start=start, entry_stop=stop, library="ak")
        except Exception as e:
            raise InputError(f"{self.path}: failed to read entries {start}-{stop} of tree '{self.tree_name}' "
                             f"({type(e).__name__}: {e})") from None

    def is_flat(self, name: str) -> bool:
        """True for a branch with one value per candidate (not a constituent collection)."""
        cache = self.__dict__.setdefault("_flat", {})
        if name not in cache:
            cache[name] = self._is_flat(name)
        return cache[name]

    def _is_flat(self, name: str) -> bool:
        if name not in self._keys or "/" in name or "." in name:
            return False
        b = self.tree[name]
        try:
            interp = b.interpretation
        except Exception:
            return False
        return getattr(b, "count_branch", None) is None and isinstance(interp, uproot.AsDtype) and \
            not getattr(interp, "inner_shape", ())

    def read_numpy(self, start: int, stop: int, fields: Sequence[str]) -> dict[str, np.ndarray]:
        """Flat branches of entries [start, stop) as numpy arrays (no awkward arrays built)."""
        try:
            return self.tree.arrays(list(fields), entry_start=start, entry_stop=stop, library="np", how=dict)
        except Exception as e:
            raise InputError(f"{self.path}: failed to read entries {start}-{stop} of tree '{self.tree_name}' "
                             f"({type(e).__name__}: {e})") from None

    def read_branch(self, name: str, start: int, stop: int) -> ak.Array:
        """One branch of entries [start, stop) as an awkward array."""
        try:
            return self.tree[name].array(entry_start=start, entry_stop=stop, library="ak")
        except Exception as e:
            raise InputError(f"{self.path}: failed to read branch '{name}', entries {start}-{stop} of tree "
                             f"'{self.tree_name}' ({type(e).__name__}: {e})") from None

    def close(self) -> None:
        close_tree(self.tree)
