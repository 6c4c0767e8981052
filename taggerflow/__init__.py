"""taggerflow: the numeric core of the taggerflow pipeline.

Plain functions over numpy/awkward arrays and files, importable without law or TensorFlow
(only ``taggerflow.models``, ``taggerflow.records``' writer/loaders and ``taggerflow.training``
import TensorFlow, and only when called).
"""

import importlib as _importlib
import os as _os
import sys as _sys

__version__ = "0.1.0"


def _preload_xrootd() -> None:
    """Load the XRootD client's libraries (root:// inputs and stores) with their own symbols first.

    libtensorflow_framework exports its BoringSSL's symbols (CRYPTO_get_ex_new_index, ...): an
    XRootD client loaded after TensorFlow bound its OpenSSL calls to them and crashed with SIGSEGV
    while it initialised (a worker that trains, then publishes to a root:// store). Loaded with
    RTLD_DEEPBIND, its libraries look up their own dependencies' symbols before the process's,
    whichever of the two came first. About 10 ms, once per process; nothing if the client is not
    installed."""
    flags = _sys.getdlopenflags()
    try:
        _sys.setdlopenflags(_os.RTLD_NOW | _os.RTLD_DEEPBIND)
        _importlib.import_module("pyxrootd.client")
    except ImportError:
        pass
    finally:
        _sys.setdlopenflags(flags)


_preload_xrootd()
