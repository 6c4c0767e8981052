"""What every input source provides (:class:`Source`, served as ``taggerflow.readers.Source``):
one file, read in entry ranges into the uniform chunk schema of :mod:`taggerflow.readers`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import awkward as ak
import numpy as np

from taggerflow.io import InputError


def is_url(path: str) -> bool:
    return "://" in str(path)


class Source:
    """One input file. ``read(start, stop, fields)`` returns the candidates of entries [start, stop);
    :meth:`chunks` iterates over a range in blocks. A context manager (closes the file)."""

    path: str
    num_entries: int

    def fields(self) -> list[str]:
        raise NotImplementedError

    def collections(self) -> dict[str, list[str]]:
        """{collection: [field, ...]} of the jagged fields ``<coll>_<field>``."""
        raise NotImplementedError

    def read(self, start: int, stop: int, fields: Sequence[str]) -> ak.Array:
        raise NotImplementedError

    def chunks(self, fields: Sequence[str], step: int, start: int = 0, stop: int | None = None,
               ) -> Iterator[ak.Array]:
        """``read`` of entries [start, stop) (default: all) in blocks of ``step`` entries."""
        stop = self.num_entries if stop is None else int(stop)
        if stop > self.num_entries:
            raise InputError(f"{self.path}: has {self.num_entries} entries, expected at least {stop} "
                             f"(file changed since the spectrum was made?)")
        step = max(1, int(step))
        for pos in range(int(start), stop, step):
            yield self.read(pos, min(pos + step, stop), fields)

    def cluster_starts(self) -> np.ndarray:
        """Entry numbers where all fields start a new compressed block (for aligned reads)."""
        return np.array([0, self.num_entries], dtype=np.int64)

    def has_fields(self, names) -> set[str]:
        """Those of ``names`` the file has."""
        return set(names) & set(self.fields())

    def check_fields(self, required: dict[str, str], provided: Sequence[str] = ()) -> None:
        present = self.has_fields(required) | set(provided)
        for name, key in required.items():
            if name not in present:
                raise InputError(f"{self.path}: branch '{name}' (needed by config key {key}) not found "
                                 f"in {self.describe()}")

    def describe(self) -> str:
        return "the file"

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def close_tree(tree) -> None:
    try:
        tree.file.close()
    except Exception:
        pass
