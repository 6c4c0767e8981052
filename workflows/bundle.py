"""The repository as a tarball for batch jobs without a shared filesystem, and what such a job needs.

``BundleRepository`` writes ``$TAGGERFLOW_DATA/BundleRepository/<code key>/taggerflow.tgz``: the files
git tracks plus untracked files that .gitignore does not exclude, as they are in the working tree
(uncommitted changes included), under a top-level ``taggerflow/`` directory. The code key is the
commit plus a hash of the content of those files (``code_key``), so a change of the code, committed or
not, gives a new bundle, whatever ``--version`` says; the same code is bundled once. The bootstrap
file unpacks it on the worker and activates or creates the environment with the project's own recipe
(``env.sh``). Without git (e.g. a checkout that is itself an unpacked bundle) the tree is walked,
leaving out the environment, the data, law's home and caches.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import tarfile

import law
import luigi

from taggerflow.utils import atomic_path
from workflows.base import BASE_DIR, data_dir

BUNDLE_PREFIX = "taggerflow"
BUNDLE_NAME = "taggerflow.tgz"
_SKIP_DIRS = {".git", ".venv", "data", ".law", "__pycache__", ".pytest_cache"}

# Disk a job's scratch directory needs, in MB (HTCondor request_disk), measured on the tiny pipeline
# (tests/test_batch_jobs_bare.py records the largest scratch directory of every job) and for the
# environment itself (README, "No shared filesystem"): logs and law's job home stay below 10 MB, the
# unpacked bundle below 10 MB; a venv created inside the job is 3.0-3.7 GB, plus pip's unpacked
# TensorFlow wheel (about 0.6 GB) while it installs.
DISK_MB_JOB = 200
DISK_MB_VENV_IN_JOB = 5000


def repository_files(base: str | None = None) -> list[str]:
    """Paths (relative to ``base``, default: this checkout) of the files a job needs: what git tracks
    or would track."""
    base = base or BASE_DIR
    try:
        out = subprocess.run(["git", "-C", base, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             check=True, capture_output=True).stdout
        files = [f for f in out.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for root, dirs, names in os.walk(base):
            dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.endswith(".egg-info")]
            files += [os.path.relpath(os.path.join(root, n), base) for n in names if not n.endswith(".pyc")]
    # deleted but still tracked files are skipped; the order is fixed
    return sorted({f for f in files if os.path.isfile(os.path.join(base, f))})


def _commit(base: str) -> str:
    try:
        return subprocess.run(["git", "-C", base, "rev-parse", "--verify", "-q", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()[:12] or "nocommit"
    except (OSError, subprocess.CalledProcessError):
        return "nogit"


def _hash_file(h, rel: str, executable: bool, data: bytes) -> None:
    h.update(f"{rel}\0{int(executable)}\0".encode())
    h.update(hashlib.sha256(data).digest())


def content_hash(base: str | None = None) -> str:
    """sha256 over the bundled files: their paths, whether they are executable, and their bytes."""
    base = base or BASE_DIR
    h = hashlib.sha256()
    for rel in repository_files(base):
        path = os.path.join(base, rel)
        with open(path, "rb") as f:
            _hash_file(h, rel, bool(os.stat(path).st_mode & stat.S_IXUSR), f.read())
    return h.hexdigest()


def code_key(base: str | None = None) -> str:
    """``<commit>-<content hash>`` (12 hex digits each) of the code a job would run."""
    base = base or BASE_DIR
    return f"{_commit(base)}-{content_hash(base)[:12]}"


def write_bundle(path: str, base: str | None = None, expect_key: str | None = None) -> int:
    """Write the bundle of ``base`` to ``path`` (atomically); returns the number of files. With
    ``expect_key``, the bytes written must be the code of that key (else nothing is written)."""
    import io

    base = base or BASE_DIR

    files = repository_files(base)
    h = hashlib.sha256()
    with atomic_path(path, suffix=".tar.gz") as tmp:
        with tarfile.open(tmp, "w:gz") as tar:
            for rel in files:
                full = os.path.join(base, rel)
                with open(full, "rb") as f:
                    data = f.read()
                info = tar.gettarinfo(full, arcname=f"{BUNDLE_PREFIX}/{rel}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                _hash_file(h, rel, bool(info.mode & stat.S_IXUSR), data)
        written = f"{_commit(base)}-{h.hexdigest()[:12]}"
        if expect_key is not None and written != expect_key:
            raise RuntimeError(f"the code in {base} changed while the jobs were prepared (code key "
                               f"{expect_key}, now {written}): run the command again")
    return len(files)


def job_disk_mb(shared_fs: bool, venv_in_job: bool) -> int:
    """The disk a job requests: the environment built in the job's own scratch directory dominates."""
    return DISK_MB_VENV_IN_JOB if (not shared_fs and venv_in_job) else DISK_MB_JOB


class BundleRepository(law.Task):
    """The repository bundle of one state of the code, sent with every job when there is no shared
    filesystem; ``BundleRepository.of_checkout()`` is the one of the working tree as it is now."""

    code_key = luigi.Parameter(description="commit and content hash of the bundled code (code_key())")

    exclude_index = True

    @classmethod
    def of_checkout(cls) -> "BundleRepository":
        return cls(code_key=code_key())

    def output(self):
        return law.LocalFileTarget(os.path.join(data_dir(), "BundleRepository", str(self.code_key), BUNDLE_NAME))

    def run(self):
        n = write_bundle(self.output().path, expect_key=str(self.code_key))
        self.publish_message(f"bundled {n} files of {BASE_DIR} (code {self.code_key}) into {self.output().path}")
