"""Native libraries that must coexist in one process: a law worker may train (TensorFlow) and then
read or publish through XRootD (root:// inputs and stores)."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_xrootd_client_works_after_tensorflow():
    """TensorFlow's BoringSSL symbols crash an XRootD client loaded after it (SIGSEGV on import):
    importing taggerflow first (as every task does) loads the client before TensorFlow can be."""
    code = ("import taggerflow, tensorflow\n"
            "from XRootD import client\n"
            "fs = client.FileSystem('root://localhost:1')\n"
            "print('client', type(fs).__name__)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.strip().splitlines()[-1] == "client FileSystem"
