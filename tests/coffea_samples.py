"""Real experiment files from coffea's source distribution on PyPI, fetched once and cached.

coffea (BSD-3-Clause, https://github.com/scikit-hep/coffea) ships public CMS NanoAOD/PFNano, ATLAS
PHYSLITE and Delphes files under ``tests/samples/`` of its sdist. The few small ones the suite needed
first are committed in ``tests/data/coffea``; the larger ones are taken from the sdist, downloaded
through pip (the package registry is the only network a test may use), checked by sha256 and kept in
a cache directory: ``$TAGGERFLOW_TEST_CACHE`` or ``~/.cache/taggerflow/test-samples``.

    from coffea_samples import sample
    path = sample("PHYSLITE_example.root")

``python tests/coffea_samples.py`` fetches them all (``.ci/run`` does, before the tests).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

COFFEA_VERSION = "2026.9.0"
SDIST = f"coffea-{COFFEA_VERSION}.tar.gz"
SDIST_SHA256 = "7dfc1b54d9d1533c8a5bd8a5786d13272ea1a170b0817061d4478f721aedae04"

#: file below the sdist's tests/samples -> sha256
SAMPLES = {
    "nano_dy.root": "159b17b34b4d13ea4960d36fb9b01f2a505cc1a5a8de0fb3cfa185154543c81c",
    "nano_dy_rntuple.root": "b0adca6eec90dc3ec73ec139d39a0929a3e08db825ef4df5691e6c03b792a3d6",
    "nano_dy_empty.root": "6357b85ab2af3c012b9be1a2839ee42ba7e74be0ee98323397bf4179bec90fb4",
    "bad_delphes.root": "885dc7bd20ae8f56685296d9bb9435c01ee6f1c7e767487d29116eb29f32126a",
    "nano_tt_v15.root": "0ee769872082459bf2ccbef08b916c26b3070b64969812aea4d75a0cfa006256",
    "nano_tt_v12.root": "bc9afdac1e5e1bf820f79e4f8d4942c893ed2accfcb2e49bb63b69727b59af3b",
    "pfnano.root": "504f10f40146005184a1365dcf8b6c8235983597567fab04d1b4b6cc25603939",
    "pfnano_rntuple.root": "51e972ce9fe3ff7bfa96998323e975acbe6ba9fd5ecb859fc0bf1630eaa0a97c",
    "PHYSLITE_example.root": "6ebbafb5a1f72ca0b6fa47de73c28906101997e6f8a58d97536e4c040a15aa0b",
    "delphes.root": "af2ea9ad3982751f6fec7b39b6be8a35dbae9a4244cfb56fbd35ae5b9d5bd7ea",
    "missing_luminosityBlock.root": "4eaa43a58b0d9d848e8132152b2035d0e1283cea810d0641834e01765f46b038",
}

COMMITTED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "coffea")


def cache_dir() -> str:
    base = os.environ.get("TAGGERFLOW_TEST_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "taggerflow", "test-samples")
    return os.path.join(base, f"coffea-{COFFEA_VERSION}")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _valid(path: str, name: str) -> bool:
    return os.path.isfile(path) and _sha256(path) == SAMPLES[name]


def _fetch_all(directory: str) -> None:
    """Download the sdist through pip, check it and extract every listed sample into `directory`."""
    with tempfile.TemporaryDirectory(prefix="coffea-sdist-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               "--dest", tmp, f"coffea=={COFFEA_VERSION}"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        tarball = os.path.join(tmp, SDIST)
        if result.returncode != 0 or not os.path.isfile(tarball):
            raise RuntimeError(f"could not download {SDIST} from the package index with "
                               f"{' '.join(cmd)}: {(result.stderr or result.stdout).strip()[-500:]}")
        if _sha256(tarball) != SDIST_SHA256:
            raise RuntimeError(f"{SDIST}: sha256 differs from the expected {SDIST_SHA256}")
        prefix = f"coffea-{COFFEA_VERSION}/tests/samples/"
        with tarfile.open(tarball) as archive:
            for name in SAMPLES:
                member = archive.getmember(prefix + name)
                source = archive.extractfile(member)
                partial = os.path.join(directory, f".{name}.partial")
                with open(partial, "wb") as out:
                    shutil.copyfileobj(source, out)
                if _sha256(partial) != SAMPLES[name]:
                    os.unlink(partial)
                    raise RuntimeError(f"{SDIST}: {prefix}{name}: sha256 differs from the expected one")
                os.replace(partial, os.path.join(directory, name))


def sample(name: str) -> str:
    """Path of coffea's sample `name`, fetched into the cache on first use."""
    if name not in SAMPLES:
        raise KeyError(f"unknown coffea sample {name!r}; known: {', '.join(sorted(SAMPLES))}")
    committed = os.path.join(COMMITTED, name)
    if os.path.isfile(committed):
        return committed
    directory = cache_dir()
    path = os.path.join(directory, name)
    if _valid(path, name):
        return path
    os.makedirs(directory, exist_ok=True)
    # one download at a time, even with several pytest processes or helpers sharing the cache
    with open(os.path.join(directory, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _valid(path, name):
            _fetch_all(directory)
    return path


if __name__ == "__main__":
    for sample_name in SAMPLES:
        print(sample(sample_name))
