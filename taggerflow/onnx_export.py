"""ONNX export of a trained Keras 3 tagger (tf2onnx) and its evaluation with onnxruntime.

The ONNX file sits beside the lwtnn JSON and takes the same inputs as the Keras model: scaled,
padded arrays named like the Keras inputs (``candidate``, ``<coll>`` ``(N, n_max, n_vars)`` and
``<coll>_valid`` ``(N, n_max)`` float 0/1), with a dynamic batch dimension ``N``. Unlike lwtnn it
therefore needs the scaling (``(x - mean) / std``, clamped to ``[lim_min, lim_max]``, NaN -> default)
and the padding done by the caller, exactly as for training (see the model card). A ``one_hot``
variable is its N 0/1 indicator columns here as in the training files and lwtnn (no one-hot layer in
the graph: the caller computes them from the raw code, :mod:`taggerflow.scaling.types.one_hot`).

Route: the Keras model is wrapped in a ``tf.function`` with an explicit input signature (one
``tf.TensorSpec`` per Keras input, batch dimension ``None``) calling ``model(inputs, training=False)``,
and converted with ``tf2onnx.convert.from_function``. (``tf2onnx.convert.from_keras`` 1.17.0 does
the same internally for Keras 3 / TF >= 2.16, after failing over from the removed
``_get_save_spec``/``trace_model_call`` path of onnx/tensorflow-onnx#2329; Keras 3
``model.export(format="onnx")`` calls ``from_function`` too but names the output ``Identity:0``.)
A rewriter makes tf2onnx emit ``Where`` for the MaskedSum select (see :func:`_select_as_where`),
so padded slots holding inf/NaN contribute nothing, as in Keras.

Only the TensorFlow backend of Keras is supported. tf2onnx, onnx and onnxruntime are imported lazily.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from taggerflow.utils import atomic_path

__all__ = ["OnnxExportError", "export_onnx", "onnx_scores", "onnx_check", "onnx_info"]

BATCH_DIM = "N"
THRESHOLDS = (1e-7, 5e-7, 1e-6, 5e-6, 1e-5)
_STANDARD_DOMAINS = ("", "ai.onnx")
_ORT_NUMPY = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(float16)": np.float16}


class OnnxExportError(RuntimeError):
    """The model cannot be exported to ONNX, or the exported file does not reproduce Keras."""


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise OnnxExportError(f"ONNX export needs the package providing {module!r} "
                              f"(pip install tf2onnx onnx onnxruntime): {e}") from e


def _input_specs(model) -> list[tuple[str, tuple, str]]:
    """(name, shape with None batch, dtype) of every Keras input, in model order."""
    specs = []
    for i, t in enumerate(model.inputs):
        name = getattr(t, "name", None)
        if not name:
            raise OnnxExportError(f"model input {i} has no name")
        shape = tuple(t.shape)
        if len(shape) < 1:
            raise OnnxExportError(f"model input {name!r}: scalar inputs are not supported")
        dtype = str(getattr(t.dtype, "name", t.dtype))
        specs.append((name, (None,) + tuple(None if d is None else int(d) for d in shape[1:]), dtype))
    names = [s[0] for s in specs]
    if len(set(names)) != len(names):
        raise OnnxExportError(f"model input names are not unique: {names}")
    return specs


def _output_names(model) -> list[str]:
    names = list(getattr(model, "output_names", None) or [])
    if len(names) != len(model.outputs):
        names = [getattr(t, "name", None) or f"output_{i}" for i, t in enumerate(model.outputs)]
    if len(set(names)) != len(names):
        raise OnnxExportError(f"model output names are not unique: {names}")
    return [str(n) for n in names]


def _value_info(vi) -> dict:
    import onnx

    tt = vi.type.tensor_type
    shape = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    return {"name": vi.name, "shape": shape, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name}


def onnx_info(path_or_proto: Any) -> dict:
    """Inputs, outputs (name, shape with None for dynamic dimensions, numpy dtype name) and the
    default-domain opset of an ONNX file or ModelProto."""
    onnx = _require("onnx")
    proto = path_or_proto if isinstance(path_or_proto, onnx.ModelProto) else onnx.load(str(path_or_proto))
    opset = next((o.version for o in proto.opset_import if o.domain in _STANDARD_DOMAINS), None)
    return {"inputs": [_value_info(v) for v in proto.graph.input],
            "outputs": [_value_info(v) for v in proto.graph.output],
            "opset": None if opset is None else int(opset)}


def _random_inputs(specs: list[tuple[str, tuple, str]], n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Scaled-like random inputs for the self-check: N(0, 1) values, 0/1 for ``*_valid`` masks
    (every candidate count from 0 to n_max occurs), NaN/inf/huge garbage in the padded slots."""
    from taggerflow.models import VALID_SUFFIX

    rng = np.random.default_rng(seed)
    out = {}
    for name, shape, dtype in specs:
        dims = tuple(3 if d is None else d for d in shape[1:])
        if name.endswith(VALID_SUFFIX) and len(dims) == 1:
            n_valid = np.arange(n) % (dims[0] + 1)
            out[name] = (np.arange(dims[0])[None, :] < n_valid[:, None]).astype(dtype)
        else:
            out[name] = rng.normal(size=(n,) + dims).astype(dtype)
    for name, _, _ in specs:  # garbage in padded slots: it must not change anything
        valid = out.get(f"{name}{VALID_SUFFIX}")
        if valid is not None and out[name].ndim == 3:
            garbage = np.array([np.nan, np.inf, -np.inf, 1e30], dtype=out[name].dtype)
            padded = out[name][valid < 0.5]
            out[name][valid < 0.5] = garbage[rng.integers(0, len(garbage), padded.shape)]
    return out


def _select_as_where(g, ops):
    """tf2onnx rewriter: convert every TF Select/SelectV2 to ONNX ``Where``.

    By default tf2onnx turns a float select into ``cast(c) * x + cast(!c) * y``, which gives NaN
    when the discarded branch holds inf or NaN (``0 * inf``). The MaskedSum of the deep-sets model
    is such a select: padded constituent slots must contribute exactly nothing whatever they hold,
    as in Keras. ``handles_nan`` is tf2onnx's own switch to ``Where``.
    """
    for op in ops:
        if op.type in ("Select", "SelectV2"):
            op.set_attr("handles_nan", True)
    return ops


def _subgraph_inputs(node):
    """Input names of ``node`` and of every node of its subgraphs (If/Loop bodies), in order."""
    import onnx

    yield from node.input
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else \
            list(attr.graphs) if attr.type == onnx.AttributeProto.GRAPHS else []
        for g in graphs:
            for sub in g.node:
                yield from _subgraph_inputs(sub)


def _rename_subgraph_inputs(node, rename: dict[str, str]) -> None:
    import onnx

    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else \
            list(attr.graphs) if attr.type == onnx.AttributeProto.GRAPHS else []
        for g in graphs:
            for sub in g.node:
                sub.input[:] = [rename.get(n, n) for n in sub.input]
                _rename_subgraph_inputs(sub, rename)


def stable_names(graph) -> None:
    """Rename every node, intermediate value and initializer of an ONNX ``graph`` (in place) after
    its position: node ``i`` becomes ``<op_type>_<i>``, its outputs ``<op_type>_<i>:<k>``, the
    initializers ``const_<j>`` in the order of their first use (the list sorted so), graph inputs and
    outputs keep their names.

    tf2onnx's generated names (``const_fold_opt__32``, ``Reshape_shape__35``) and which of two equal
    constants it keeps come from counters and set orders that change with the process (Python's
    string hashing, functions traced before): two conversions of one model gave different bytes.
    The node order is tf2onnx's topological order, the same for the same model, so the renamed
    graph is the same in every process."""
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    inits = {t.name: t for t in graph.initializer}
    rename: dict[str, str] = {}
    used: list[str] = []
    for i, node in enumerate(graph.node):
        for name in _subgraph_inputs(node):
            if name in inits and name not in rename:
                rename[name] = f"const_{len(used)}"
                used.append(name)
        node.name = f"{node.op_type}_{i}"
        for k, name in enumerate(node.output):
            if name and name not in keep and name not in rename:
                rename[name] = f"{node.name}:{k}"
    # initializers no node reads (none from tf2onnx), ordered by content: still no counter in a name
    unused = sorted((n for n in inits if n not in rename), key=lambda n: _without_name(inits[n]))
    for name in unused:
        rename[name] = f"const_{len(used)}"
        used.append(name)
    clash = keep & set(rename.values())
    if clash:
        raise OnnxExportError(f"graph inputs/outputs {sorted(clash)} clash with the stable names of other values")
    for node in graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
        _rename_subgraph_inputs(node, rename)
    ordered = [_copy(inits[n]) for n in used]
    for t in ordered:
        t.name = rename[t.name]
    del graph.initializer[:]
    graph.initializer.extend(ordered)
    infos = [_copy(v) for v in graph.value_info]
    for v in infos:
        v.name = rename.get(v.name, v.name)
    del graph.value_info[:]
    graph.value_info.extend(sorted(infos, key=lambda v: v.name))


def _copy(message):
    out = type(message)()
    out.CopyFrom(message)
    return out


def _without_name(tensor) -> bytes:
    t = _copy(tensor)
    t.name = ""
    return t.SerializeToString(deterministic=True)


def export_onnx(model, path: str, opset: int | None = None, *, check_tolerance: float | None = 1e-5) -> dict:
    """Convert a Keras 3 model (TensorFlow backend) to ONNX at ``path``, written atomically.

    Input names are the Keras input names, in model order, with a dynamic batch dimension named
    ``N``; output names are the Keras output names (``output`` for the taggerflow models). Before
    the file is renamed into place it is loaded by onnxruntime and, unless ``check_tolerance`` is
    None, its scores on random inputs (including candidates with no valid constituent and garbage
    in padded slots) are compared with ``model(..., training=False)``; any failure raises
    :class:`OnnxExportError` and leaves no file. Returns ``{"inputs": [{"name", "shape", "dtype"}],
    "outputs": [...], "opset": int, "converter": "tf2onnx X.Y.Z", "self_check_max_abs_diff": float|None}``.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        raise OnnxExportError(f"ONNX export needs the TensorFlow backend of Keras, not {keras.backend.backend()!r}")
    tf = _require("tensorflow")
    onnx = _require("onnx")
    tf2onnx = _require("tf2onnx")
    _require("onnxruntime")
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) or opset < 1):
        raise OnnxExportError(f"opset: expected a positive integer, got {opset!r}")

    specs = _input_specs(model)
    names = [s[0] for s in specs]
    out_names = _output_names(model)
    signature = [tf.TensorSpec(shape, tf.as_dtype(dtype), name=name) for name, shape, dtype in specs]

    @tf.function(input_signature=signature, autograph=False)
    def serve(*args):
        outputs = model(dict(zip(names, args)), training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return {n: tf.identity(o) for n, o in zip(out_names, outputs)}

    try:
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=signature,
                                                 opset=None if opset is None else int(opset),
                                                 custom_rewriter=[_select_as_where])
    except Exception as e:  # noqa: BLE001  (tf2onnx raises anything; give it context)
        raise OnnxExportError(f"tf2onnx {tf2onnx.__version__} could not convert model {model.name!r}: "
                              f"{type(e).__name__}: {e}") from e

    # tf2onnx runs with continue_on_error: an op it cannot map stays as a TF op in another domain
    foreign = sorted({f"{n.domain}:{n.op_type}" for n in proto.graph.node if n.domain not in _STANDARD_DOMAINS})
    if foreign:
        raise OnnxExportError(f"model {model.name!r}: tf2onnx left unconverted ops {foreign}")
    got_in = [v.name for v in proto.graph.input]
    got_out = [v.name for v in proto.graph.output]
    if got_in != names or got_out != out_names:
        raise OnnxExportError(f"model {model.name!r}: ONNX graph has inputs {got_in} / outputs {got_out}, "
                              f"expected {names} / {out_names}")
    for vi in list(proto.graph.input) + list(proto.graph.output):  # one symbolic batch dim for all
        dims = vi.type.tensor_type.shape.dim
        if len(dims) and not dims[0].HasField("dim_value"):
            dims[0].dim_param = BATCH_DIM
    proto.producer_name = "taggerflow (tf2onnx)"
    # the same bytes for the same model in every process: no generated names, no traced function's
    # name (``__inference_serve_354``: a per-process counter) in the graph's doc string
    stable_names(proto.graph)
    proto.graph.doc_string = f"converted from the Keras model {model.name!r}"
    try:
        onnx.checker.check_model(proto)
    except Exception as e:  # noqa: BLE001
        raise OnnxExportError(f"model {model.name!r}: the ONNX graph is invalid: {e}") from e

    max_diff = None
    with atomic_path(path, suffix=".onnx") as tmp:
        onnx.save_model(proto, tmp)
        x = _random_inputs(specs, 64)
        scores = onnx_scores(tmp, x)  # also proves onnxruntime can load the file
        if check_tolerance is not None:
            ref = model(x, training=False)
            ref = np.asarray(ref[0] if isinstance(ref, (list, tuple)) else ref, dtype=np.float64)
            if ref.shape != scores.shape:
                raise OnnxExportError(f"model {model.name!r}: ONNX output shape {scores.shape} != Keras {ref.shape}")
            max_diff = float(np.max(np.abs(scores - ref))) if ref.size else 0.0
            if not max_diff <= check_tolerance:
                raise OnnxExportError(f"model {model.name!r}: ONNX scores differ from Keras by {max_diff:.3g} "
                                      f"(> {check_tolerance:g}) on random inputs")
    info = onnx_info(proto)
    info["converter"] = f"tf2onnx {tf2onnx.__version__}"
    info["self_check_max_abs_diff"] = max_diff
    return info


def onnx_scores(path: str, inputs: Mapping[str, np.ndarray], *, output: str | None = None,
                threads: int = 1, batch_size: int = 65536) -> np.ndarray:
    """Scores of the ONNX model at ``path`` with onnxruntime (CPU), as float64 ``(N, n_classes)``.

    ``inputs`` maps the ONNX input names (= the Keras input names) to scaled, padded arrays; keys
    the model does not read are ignored. ``output`` picks an output by name (default: the first).
    """
    ort = _require("onnxruntime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(os.fspath(path), opts, providers=["CPUExecutionProvider"])
    feed, n = {}, None
    for spec in sess.get_inputs():
        if spec.name not in inputs:
            raise KeyError(f"{path}: missing input {spec.name!r} (given: {sorted(inputs)})")
        arr = np.ascontiguousarray(inputs[spec.name], dtype=_ORT_NUMPY.get(spec.type, np.float32))
        want = list(spec.shape)
        if arr.ndim != len(want) or any(isinstance(w, int) and w != s for w, s in zip(want[1:], arr.shape[1:])):
            raise ValueError(f"{path}: input {spec.name!r} has shape {arr.shape}, the model expects {want}")
        if n is not None and arr.shape[0] != n:
            raise ValueError(f"{path}: input {spec.name!r} has {arr.shape[0]} rows, other inputs {n}")
        n = arr.shape[0]
        feed[spec.name] = arr
    out_name = output or sess.get_outputs()[0].name
    if n is None or n == 0:
        n_out = sess.get_outputs()[[o.name for o in sess.get_outputs()].index(out_name)].shape[-1]
        return np.zeros((0, n_out if isinstance(n_out, int) else 0), dtype=np.float64)
    parts = []
    for start in range(0, n, int(batch_size)):
        chunk = {k: v[start:start + int(batch_size)] for k, v in feed.items()}
        parts.append(np.asarray(sess.run([out_name], chunk)[0], dtype=np.float64))
    return np.concatenate(parts)


def onnx_check(model, path: str, inputs: Mapping[str, np.ndarray], tolerance: float = 1e-5) -> dict:
    """onnxruntime scores of ``path`` against ``model.predict`` on the same scaled, padded inputs
    (Keras input names; extra keys ignored). Same figures as the lwtnn check."""
    names = [t.name for t in model.inputs]
    missing = [n for n in names if n not in inputs]
    if missing:
        raise KeyError(f"onnx_check: missing model input(s) {missing}")
    x = {n: inputs[n] for n in names}
    keras_scores = np.asarray(model.predict(x, batch_size=4096, verbose=0), dtype=np.float64)
    scores = onnx_scores(path, x)
    if scores.shape != keras_scores.shape:
        raise OnnxExportError(f"{path}: ONNX scores have shape {scores.shape}, Keras {keras_scores.shape}")
    if len(scores) == 0:
        raise ValueError("onnx_check: no candidates")
    diff = np.abs(scores - keras_scores).max(axis=1)
    return {"n_candidates": int(len(diff)), "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "fraction_above": {f"{t:g}": float(np.mean(diff > t)) for t in THRESHOLDS},
            "tolerance": float(tolerance), "passed": bool(diff.max() <= tolerance)}
