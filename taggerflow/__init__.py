"""taggerflow: the numeric core of the taggerflow pipeline.

Plain functions over numpy/awkward arrays and files, importable without law or TensorFlow
(only ``taggerflow.models``, ``taggerflow.records``' writer/loaders and ``taggerflow.training``
import TensorFlow, and only when called).
"""

__version__ = "0.1.0"
