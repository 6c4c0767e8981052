"""Shards (``inputs.format: shards``): the output files of ShuffleMergeSpectral, ROOT TTrees or
HDF5 (``resampling.output_format``; layout in :mod:`taggerflow.shards`), read as candidate trees:
one entry per candidate, the input fields plus ``class_label``, ``dataset_id`` and
``dataset_group_id``. Every stage after the shuffle reads its shards through :func:`open_shard`;
as an input format it reads another run's shards (``inputs.tree``: their tree, default
``candidates``). No ``inputs`` section of its own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from taggerflow.formats.candidate_tree import TreeSource
from taggerflow.io import InputError, open_tree
from taggerflow.shards import H5ShardTree

FORMAT = "shards"
DEFAULT_TREE = "candidates"
SCHEMA: dict = {}   # no inputs.shards section
H5_SUFFIXES = (".h5", ".hdf5")


def validate(section: dict, cfg, err) -> None:
    """Nothing to check: the format has no section of its own."""


def open_source(path: str, tree: str, section: dict) -> "ShardSource":
    return ShardSource(path, tree)


def open_shard(path: str, tree: str) -> "ShardSource":
    """The shard ``path`` (ROOT or HDF5, by its suffix) as a :class:`taggerflow.readers.Source`."""
    return ShardSource(path, tree)


class ShardSource(TreeSource):
    """A shard: a candidate tree, or the tree-like view of an HDF5 shard (same interface)."""

    def _open(self, path: str, tree: str):
        if str(path).endswith(H5_SUFFIXES):
            if not os.path.exists(path):
                raise InputError(f"{path}: input file does not exist")
            return H5ShardTree(path, tree)
        return open_tree(path, tree, direct=True)

    @property
    def is_hdf5(self) -> bool:
        return isinstance(self.tree, H5ShardTree)

    def check_integrity(self, fields: Sequence[str] | None = None) -> None:
        # HDF5 shards have no ROOT baskets; every shard's bytes are checked against its manifest's
        # sha256 (taggerflow.integrity.verify_shards) before a stage reads it
        if not self.is_hdf5:
            super().check_integrity(fields)

    def close(self) -> None:
        if self.is_hdf5:
            self.tree.close()
        else:
            super().close()
