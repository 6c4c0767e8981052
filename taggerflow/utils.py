"""Small shared helpers: stable hashes, seeds, atomic writes, output locks, JSON."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import fcntl
import json
import os
import re
import secrets
import shutil
import socket
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


# -- atomic writes ---------------------------------------------------------------------------
# A temporary file (or folder) of an output ``<dir>/<name>`` is ``<dir>/.<name>.tmp-<host>-<pid>-<random>``
# (plus the caller's suffix): the name says which output and which process it belongs to, so that the
# next write of that output can remove what a killed writer left, and nothing else.
_TEMP_MARK = ".tmp-"
_TEMP_OWNER = re.compile(r"(?P<host>[A-Za-z0-9_-]+)-(?P<pid>[0-9]+)-[0-9a-f]{8}(?:\..*)?")

# lock files this process holds and the directories they lock (see output_lock), with hold counts
_HELD_LOCKS: dict[str, int] = {}
_HELD_LOCK_DIRS: dict[str, int] = {}
# the temporary-looking names of each folder when this process first wrote there (see remove_stale_temps)
_TEMP_CANDIDATES: dict[str, set[str]] = {}


def _host_tag() -> str:
    """This host's name as it goes into temporary names (no dots, so never mistaken for a suffix)."""
    return re.sub(r"[^A-Za-z0-9-]", "_", socket.gethostname()) or "localhost"


def temp_name(name: str, suffix: str = "") -> str:
    """A fresh temporary name for the output called ``name`` (same folder), owned by this process."""
    if suffix and not suffix.startswith("."):
        suffix = "." + suffix
    return f".{name}{_TEMP_MARK}{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}{suffix}"


def _umask() -> int:
    """The process's umask, read without changing it (Linux), else by setting and restoring it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _writer_alive(host: str, pid: int, folder: str) -> bool:
    """Whether the process that made a temporary name may still be writing it. On this host: its pid
    is alive. On another host nothing can be asked: it counts as gone only while this process holds
    the lock of ``folder`` (every task run that writes there holds it: see output_lock)."""
    if host != _host_tag():
        return not _lock_held_over(folder)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's live process
        return True
    return True


def _lock_held_over(folder: str) -> bool:
    folder = os.path.abspath(folder)
    return any(folder == d or folder.startswith(d + os.sep) for d in _HELD_LOCK_DIRS)


def remove_stale_temps(path: str | os.PathLike) -> list[str]:
    """Remove the temporary files and folders of the output ``path`` whose writer is gone (killed):
    only names made by :func:`temp_name` for this very output, never one of a live writer. Returns
    the paths removed.

    A folder is listed once per process (a folder of 30,000 outputs takes tens of milliseconds to
    list, once per write would add that to every output): what a writer that dies later leaves is
    the next process's to remove."""
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    candidates = _TEMP_CANDIDATES.get(folder)
    if candidates is None:
        try:
            candidates = {e for e in os.listdir(folder) if e.startswith(".") and _TEMP_MARK in e}
        except FileNotFoundError:
            return []
        _TEMP_CANDIDATES[folder] = candidates
    prefix = f".{name}{_TEMP_MARK}"
    removed = []
    for entry in sorted(e for e in candidates if e.startswith(prefix)):
        owner = _TEMP_OWNER.fullmatch(entry[len(prefix):])
        if owner is None or _writer_alive(owner["host"], int(owner["pid"]), folder):
            continue
        full = os.path.join(folder, entry)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(full)
        candidates.discard(entry)
        removed.append(full)
    return removed


class AtomicOutput:
    """An output written under a temporary name beside it and renamed into place by :meth:`commit`
    (:meth:`abort` removes it); the stale temporary names a killed writer of the same output left
    are removed first (:func:`remove_stale_temps`).

    ``folder=False``: :attr:`tmp` is a file path ``.<name>.tmp-<host>-<pid>-<random><suffix>`` (an
    empty file is created there, so the name is taken). ``folder=True``: :attr:`tmp` is
    ``<temporary folder>/<name>``, for writers that record the file's own name (ROOT files), so that
    the temporary file already carries the final one.

    The committed output gets the mode the umask gives (files 0666, directories 0777, minus the
    umask), whatever the writing library chose (``mkstemp``/``mkdtemp`` make 0600/0700)."""

    def __init__(self, path: str | os.PathLike, suffix: str | None = None, folder: bool = False):
        self.path = os.path.abspath(os.fspath(path))
        parent, name = os.path.split(self.path)
        os.makedirs(parent, exist_ok=True)
        remove_stale_temps(self.path)
        if folder:
            self._tmpdir = os.path.join(parent, temp_name(name))
            os.mkdir(self._tmpdir)
            self.tmp = os.path.join(self._tmpdir, name)
        else:
            self._tmpdir = None
            self.tmp = os.path.join(parent, temp_name(name, suffix or path_suffix(name)))
            os.close(os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))

    def commit(self) -> None:
        """Give the temporary output the umask's mode and rename it into place."""
        mask = _umask()
        if os.path.isdir(self.tmp) and not os.path.islink(self.tmp):
            for root, dirs, files in os.walk(self.tmp):
                os.chmod(root, 0o777 & ~mask)
                for f in files:
                    os.chmod(os.path.join(root, f), 0o666 & ~mask)
        else:
            os.chmod(self.tmp, 0o666 & ~mask)
        os.replace(self.tmp, self.path)
        self._cleanup()

    def abort(self) -> None:
        """Remove the temporary output (nothing is renamed)."""
        if os.path.isdir(self.tmp) and not os.path.islink(self.tmp):
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.tmp)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)


def path_suffix(name: str) -> str:
    """The suffix a temporary file of ``name`` keeps (writers pick the format by it): '.h5', or '.tmp'."""
    return os.path.splitext(name)[1] or ".tmp"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None, folder: bool = False) -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds.

    ``suffix``: the temporary file's suffix (default: that of ``path``, else '.tmp'); ``folder``: the
    temporary file has the final name, inside a temporary folder (see :class:`AtomicOutput`). A
    killed writer's leftovers of the same output are removed by the next write of it."""
    out = AtomicOutput(path, suffix=suffix, folder=folder)
    try:
        yield out.tmp
        out.commit()
    except BaseException:
        out.abort()
        raise


# -- locks -----------------------------------------------------------------------------------
def _lock_owner(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip() or "unknown"
    except OSError:
        return "unknown"


def _remove_unheld_locks(path: str) -> None:
    """Remove the lock files beside ``path`` (same stem, e.g. the ``.lock-<branch>`` of the other
    branches of one output directory) that nobody holds: a holder keeps its flock until it removes
    its file, so an unheld one was left by a run killed between its last output and its release. A
    process about to lock such a file finds it removed and takes the new one (see output_lock)."""
    folder, name = os.path.split(path)
    stem = name.split("-", 1)[0]
    try:
        names = [e for e in os.listdir(folder) if e != name and (e == stem or e.startswith(stem + "-"))]
    except FileNotFoundError:
        return
    for entry in names:
        other = os.path.join(folder, entry)
        try:
            fd = os.open(other, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            same = os.fstat(fd)
            now = os.stat(other)
            if (now.st_ino, now.st_dev) == (same.st_ino, same.st_dev):
                os.remove(other)
        except OSError:   # held (BlockingIOError) or gone meanwhile
            pass
        finally:
            os.close(fd)


@contextlib.contextmanager
def output_lock(path: str | os.PathLike, on_wait=None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the lock file ``path`` for the block (it is created, and
    removed when the block ends; a kill leaves it, unlocked, for the next holder to reuse). Blocks
    while another process holds it, calling ``on_wait(message)`` once first. Re-entrant within a
    process. While held, temporary names of other hosts in the lock's folder count as stale (see
    :func:`remove_stale_temps`): every writer there holds the lock.

    The file is removed while still locked, and a lock is only taken on the file the path names at
    that moment (same inode), so that a waiter that locked a removed file tries again."""
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    if path in _HELD_LOCKS:
        _HELD_LOCKS[path] += 1
        try:
            yield
        finally:
            _HELD_LOCKS[path] -= 1
        return
    os.makedirs(folder, exist_ok=True)
    waited = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None and not waited:
                    on_wait(f"waiting for {path}, held by {_lock_owner(path)}")
                waited = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            same = os.fstat(fd)
            try:
                now = os.stat(path)
            except FileNotFoundError:
                now = None
        except BaseException:
            os.close(fd)
            raise
        if now is not None and (now.st_ino, now.st_dev) == (same.st_ino, same.st_dev):
            break
        os.close(fd)   # the holder removed this file on release: lock the one the path names now
    _HELD_LOCKS[path] = 1
    _HELD_LOCK_DIRS[folder] = _HELD_LOCK_DIRS.get(folder, 0) + 1
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        _remove_unheld_locks(path)
        yield
    finally:
        del _HELD_LOCKS[path]
        _HELD_LOCK_DIRS[folder] -= 1
        if not _HELD_LOCK_DIRS[folder]:
            del _HELD_LOCK_DIRS[folder]
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        os.close(fd)


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
