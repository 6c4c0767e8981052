"""Native libraries that must coexist in one process: a law worker may train (TensorFlow) and then
read or publish through XRootD (root:// inputs and stores), or the other way round."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO

# each order in which a process can load them; the client then talks to a (closed) port
ORDERS = {
    "tensorflow first": "import tensorflow, taggerflow\n",
    "keras first, then a taggerflow module": "import keras, taggerflow.models\n",
    "taggerflow first": "import taggerflow, tensorflow\n",
}


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_xrootd_client_and_tensorflow_in_one_process(order):
    """TensorFlow's BoringSSL symbols crash an XRootD client that binds to them (SIGSEGV on import):
    taggerflow loads the client's libraries with their own symbols first (RTLD_DEEPBIND)."""
    code = (ORDERS[order] + "from XRootD import client\n"
            "status, _ = client.FileSystem('root://localhost:1').stat('/x', timeout=1)\n"
            "import tensorflow as tf\n"
            "print('client', status.ok, float(tf.reduce_sum(tf.constant([1.0, 2.0]))))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin",
                               "XRD_CONNECTIONRETRY": "1"})
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.strip().splitlines()[-1] == "client False 3.0"
