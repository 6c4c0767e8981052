"""lwtnn export of Keras LSTM / GRU layers (the ``rnn`` model family, :mod:`taggerflow.models_rnn`).

A recurrent layer becomes an lwtnn ``sequence`` node on the sequence input, read as a vector (its
final state); its layer is written as lwtnn's ``converters/keras_v2_layer_converters.py``
(``_rnn_parameters``) writes it and as ``src/Stack.cxx`` (``LSTMLayer``, ``GRULayer``) reads it:

* ``architecture`` ``lstm`` with ``components`` ``i``, ``f``, ``c``, ``o`` (Keras' kernel column blocks
  in that order), or ``gru`` with ``z``, ``r``, ``h``;
* per gate ``weights`` = ``kernel[:, block].T`` row-major ``[n_out][n_in]``, ``U`` =
  ``recurrent_kernel[:, block].T`` ``[n_out][n_out]``, ``bias`` = ``bias[block]``;
* ``activation`` (Keras ``activation``) and ``inner_activation`` (Keras ``recurrent_activation``).

lwtnn starts from a zero state, runs every step it is given and has no masking: the layer must be fed
through :class:`~taggerflow.models_rnn.PaddingMask` (the Keras layer then skips padded steps, which
lwtnn never receives). Refused, naming the layer: a GRU with ``reset_after=True`` (lwtnn's GRU applies
the reset gate before ``U_h`` and has one bias per gate), ``return_sequences``/``return_state``,
``go_backwards``, ``stateful``, an unmasked input (``use_bias=False`` is written as zero biases).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from taggerflow.lwtnn import LwtnnConversionError, _activation_from_function, _floats, _history, _Node, _numpy

GATES = {"LSTM": ("lstm", "ifco"), "GRU": ("gru", "zrh")}


def convert_recurrent(conv: Any, layer: Any, knode: Any, tensor: Any) -> int:
    """Handler of :class:`taggerflow.lwtnn._Converter` for ``keras.layers.LSTM`` / ``GRU``."""
    from taggerflow.models_rnn import PaddingMask  # noqa: PLC0415

    where = conv._where(layer)
    kind = type(layer).__name__
    architecture, gates = GATES[kind]
    for attr in ("return_sequences", "return_state", "go_backwards", "stateful"):
        if getattr(layer, attr, False):
            raise LwtnnConversionError(f"{where}: {attr}=True cannot be expressed in lwtnn (a sequence node "
                                       "is read as its final state)")
    cell = layer.cell
    if kind == "GRU" and getattr(cell, "reset_after", False):
        raise LwtnnConversionError(f"{where}: GRU with reset_after=True (the Keras 3 default) is not lwtnn's GRU "
                                   "(reset gate before the recurrent matrix, one bias per gate); build it with "
                                   "reset_after=False")
    x, mask = conv._single_input(layer, knode, mask_ok=True)
    op, node_index, _ = _history(x, where)
    if type(op) is not PaddingMask or mask is None:
        raise LwtnnConversionError(f"{where}: a recurrent layer must read its sequence through PaddingMask "
                                   "(masked): lwtnn has no masking and is given the real constituents only")
    pad_args = op._inbound_nodes[node_index].arguments.args[0]
    values, valid = pad_args
    source = conv.visit(values)
    src = conv.walk.nodes[source]
    if src.kind != "sequence" or conv._rank(values) != 3:
        raise LwtnnConversionError(f"{where}: runs over a tensor of shape {tuple(values.shape)}; lwtnn runs "
                                   "recurrent layers over sequences (batch, T, n) only")
    conv._resolve_mask(op, valid, src)
    kernel, recurrent = _numpy(cell.kernel), _numpy(cell.recurrent_kernel)
    n_out = recurrent.shape[0]
    n_in = kernel.shape[0]
    if n_in != src.width or kernel.shape[1] != len(gates) * n_out:
        raise LwtnnConversionError(f"{where}: kernel of shape {kernel.shape} for {src.width} inputs and "
                                   f"{len(gates)} gates of {n_out} units")
    bias = _numpy(cell.bias) if getattr(cell, "use_bias", True) and cell.bias is not None \
        else np.zeros(len(gates) * n_out)
    if bias.shape != (len(gates) * n_out,):
        raise LwtnnConversionError(f"{where}: bias of shape {bias.shape}; lwtnn has one bias vector per gate")
    components = {}
    for k, gate in enumerate(gates):
        block = slice(k * n_out, (k + 1) * n_out)
        components[gate] = {"weights": _floats(kernel[:, block].T, where), "U": _floats(recurrent[:, block].T, where),
                            "bias": _floats(bias[block], where)}
    spec = {"architecture": architecture, "components": components,
            "activation": _activation_from_function(cell.activation, where),
            "inner_activation": _activation_from_function(cell.recurrent_activation, where)}
    index = conv._add_layer(layer, src.width, spec)
    return conv._new_node(_Node({"type": "sequence", "sources": [source], "layer_index": index}, "vector", int(n_out)))
