"""The repository as a tarball for batch jobs without a shared filesystem.

``BundleRepository`` writes ``$TAGGERFLOW_DATA/BundleRepository/<version>/taggerflow.tgz`` once per
version: the files git tracks plus untracked files that .gitignore does not exclude, as they are in
the working tree (uncommitted changes included), under a top-level ``taggerflow/`` directory. The
bootstrap file unpacks it on the worker and creates the environment with the project's own recipe
(``env.sh``). Without git (e.g. a checkout that is itself an unpacked bundle) the tree is walked,
leaving out the environment, the data, law's home and caches.
"""

from __future__ import annotations

import os
import subprocess
import tarfile

import law
import luigi

from taggerflow.utils import atomic_path
from workflows.base import BASE_DIR, data_dir

BUNDLE_PREFIX = "taggerflow"
BUNDLE_NAME = "taggerflow.tgz"
_SKIP_DIRS = {".git", ".venv", "data", ".law", "__pycache__", ".pytest_cache"}


def repository_files(base: str = BASE_DIR) -> list[str]:
    """Paths (relative to ``base``) of the files a job needs: what git tracks or would track."""
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


def write_bundle(path: str, base: str = BASE_DIR) -> int:
    """Write the bundle of ``base`` to ``path`` (atomically); returns the number of files."""
    files = repository_files(base)
    with atomic_path(path, suffix=".tar.gz") as tmp, tarfile.open(tmp, "w:gz") as tar:
        for rel in files:
            tar.add(os.path.join(base, rel), arcname=f"{BUNDLE_PREFIX}/{rel}", recursive=False)
    return len(files)


class BundleRepository(law.Task):
    """The repository bundle of one version, sent with every job when there is no shared filesystem."""

    version = luigi.Parameter(description="output version; the bundle is built once per version")

    exclude_index = True

    def output(self):
        return law.LocalFileTarget(os.path.join(data_dir(), "BundleRepository", str(self.version), BUNDLE_NAME))

    def run(self):
        n = write_bundle(self.output().path)
        self.publish_message(f"bundled {n} files of {BASE_DIR} into {self.output().path}")
