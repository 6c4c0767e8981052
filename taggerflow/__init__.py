"""taggerflow: the numeric core of the taggerflow pipeline.

Plain functions over numpy/awkward arrays and files, importable without law or TensorFlow
(only ``taggerflow.models``, ``taggerflow.records``' writer/loaders and ``taggerflow.training``
import TensorFlow, and only when called).
"""

import importlib as _importlib

__version__ = "0.1.0"


def _preload_xrootd() -> None:
    """Load the XRootD client's libraries (root:// inputs and stores) before TensorFlow can be.

    libtensorflow_framework exports its own BoringSSL's symbols (CRYPTO_get_ex_new_index, ...); an
    XRootD client loaded after it binds its OpenSSL calls to them and crashes with SIGSEGV while it
    initialises (in one process: a training, then Publish to a root:// store). Loaded first, it
    binds to its own OpenSSL. About 10 ms, once per process; nothing if the client is not installed."""
    try:
        _importlib.import_module("pyxrootd.client")
    except ImportError:
        pass


_preload_xrootd()
