"""Small shared helpers: stable hashes, seeds, atomic writes, JSON."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def stable_hash64(text: str) -> int:
    """A portable 64-bit id for a name (unlike std::hash or Python's hash): blake2b, signed int64."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def config_hash(obj: Any, length: int = 10) -> str:
    """Hash of a JSON-serialisable object, independent of key order."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def job_seed(global_seed: int, *keys: int | str) -> np.random.SeedSequence:
    """Seed sequence of one job, derived from the global seed and the job's identity."""
    entropy = [int(global_seed)] + [k if isinstance(k, int) else stable_hash64(k) & 0xFFFFFFFF for k in keys]
    return np.random.SeedSequence(entropy)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp",
                               dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's automatic garbage collection for the block (restored after, even on errors).

    Opening a ROOT file makes tens of thousands of small objects (uproot's models of the tree and
    its branches), which trigger collections that scan every object of the process, including all
    those of the imported modules: about 10 % of a Spectrum job's time. Only for blocks that make a
    bounded number of reference cycles (a file's metadata), or none (numpy reads of flat branches):
    reference counting frees everything else at once, the collector takes the cycles afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically, keys sorted so that equal content gives equal bytes."""
    with atomic_path(path, suffix=".json") as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True, default=_json_default)
            f.write("\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
