"""Paths as stored inside outputs: independent of where the data directory, the checkout and the
configuration are, so that the same inputs and configuration give the same bytes anywhere.

The rule (README, "Same bytes wherever it runs"):

* a file below ``$TAGGERFLOW_DATA`` (every pipeline output, the demo inputs) is stored as
  ``$TAGGERFLOW_DATA/<its path relative to the data directory>``;
* an input file of a dataset (spectra, manifests) as ``<dataset>/<its path relative to the
  dataset's root>``, the deepest directory holding all of the dataset's files
  (:meth:`taggerflow.config.Config.stored_input_path`): the same whether the files are read from
  a local directory, another mount or an XRootD server;
* any other file below the configuration's directory is stored relative to that directory, as a
  relative pattern names it (e.g. ``samples/DY_0.root``, or ``../samples/DY_0.root``);
* anything else (an absolute path elsewhere, a URL) is stored as the configuration names it.

:func:`resolve_path` turns a stored path back into one that can be opened.
"""

from __future__ import annotations

import os

DATA_VAR = "TAGGERFLOW_DATA"
DATA_PREFIX = "$" + DATA_VAR + "/"

# the default of workflows.base.data_dir(): <checkout>/data
_DEFAULT_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


def data_dir() -> str:
    """The data directory outputs are written to (``$TAGGERFLOW_DATA``, default ``<checkout>/data``)."""
    return os.path.expandvars(os.path.expanduser(os.environ.get(DATA_VAR, _DEFAULT_DATA)))


def _below(path: str, root: str) -> str | None:
    """``path`` relative to ``root`` when it lies below it (textually or after resolving links)."""
    for p, r in ((os.path.abspath(path), os.path.abspath(root)),
                 (os.path.realpath(path), os.path.realpath(root))):
        if p.startswith(r.rstrip(os.sep) + os.sep):
            return os.path.relpath(p, r)
    return None


def portable_path(path: str | os.PathLike, config_dir: str | os.PathLike | None = None,
                  data: str | None = None) -> str:
    """The form of ``path`` stored inside outputs (module docstring). ``config_dir``: the
    configuration's directory (``Config.base_dir``), the root of its relative input patterns;
    ``data``: the data directory (default :func:`data_dir`)."""
    path = os.fspath(path)
    if "://" in path:
        return path
    rel = _below(path, data if data is not None else data_dir())
    if rel is not None:
        return DATA_PREFIX + rel.replace(os.sep, "/")
    if config_dir is not None:
        # Config.dataset_files joins a relative pattern to the configuration's directory: keep the
        # path as the pattern named it (possibly with '..'); an absolute pattern stays absolute
        base = os.fspath(config_dir).rstrip(os.sep) + os.sep
        if path.startswith(base):
            return os.path.relpath(path, base).replace(os.sep, "/")
    return path


def resolve_path(stored: str, config_dir: str | os.PathLike | None = None, data: str | None = None) -> str:
    """A path that can be opened from the ``stored`` form of :func:`portable_path`."""
    if stored.startswith(DATA_PREFIX):
        return os.path.join(data if data is not None else data_dir(), *stored[len(DATA_PREFIX):].split("/"))
    if "://" in stored or os.path.isabs(stored) or config_dir is None:
        return stored
    return os.path.normpath(os.path.join(os.fspath(config_dir), stored))
