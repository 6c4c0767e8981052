"""The recurrent model family (``training.model.type: rnn``): one LSTM or GRU per constituent collection.

Inputs are those of every taggerflow model (see :mod:`taggerflow.models`): ``candidate``, then per
collection ``coll`` ``(n_max, n_vars)`` and ``coll_valid`` ``(n_max,)``. Each collection goes through
:class:`PaddingMask` (padded slots set to zero and a Keras mask ``valid > 0.5`` attached) into its own
recurrent layer, which skips the masked steps: its final state is the state after the last real
constituent, whatever the padding holds and however many padded slots there are, i.e. exactly what
lwtnn computes when it is given the real constituents only (lwtnn has no masking; a candidate
without constituents gives the zero state in both). The final states of all collections are
concatenated with the candidate input, then the Dense layers ``f_layers`` and the softmax ``output``.

GRUs are built with ``reset_after=False`` (the reset gate applied to the state before the recurrent
matrix, one bias per gate): the only GRU lwtnn's ``GRULayer`` computes. Gate activations are Keras'
defaults, ``tanh`` and ``sigmoid`` (lwtnn ``activation`` / ``inner_activation``).

Configuration keys (besides ``type: rnn``; schema, defaults and parsing in
:mod:`taggerflow.model_families.rnn`):

``cell``
    ``lstm`` (default) or ``gru``.
``rnn_units``
    units of every recurrent layer (default 32), or ``{collection: units}`` naming every collection.
``f_layers``, ``activation``, ``alpha``, ``batch_norm``, ``dropout``
    as for the other families (Dense layers after the concatenation); ``phi_layers`` (inherited by a
    variant from a deepsets ``training.model``) is ignored, as by the dense family.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from taggerflow import models

TYPE = "rnn"


@keras.saving.register_keras_serializable(package="taggerflow")
class PaddingMask(keras.layers.Layer):
    """``PaddingMask()([values, valid])``: ``values`` ``(batch, n_max, n)`` with the slots where
    ``valid <= 0.5`` set to zero (a select: inf/NaN there cannot leak, not even into gradients), and
    the Keras mask ``valid > 0.5`` attached for the recurrent layer that follows. The lwtnn export
    drops it: lwtnn is given the real constituents only."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs: Any) -> Any:
        values, valid = inputs
        keep = ops.expand_dims(ops.greater(valid, 0.5), axis=-1)
        return ops.where(keep, values, ops.zeros_like(values))

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        return ops.greater(inputs[1], 0.5)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return tuple(input_shape[0])


def build(cfg: dict[str, Any], candidate: Any, sequences: dict[str, tuple[int, int]], seeds: Any) -> tuple[list, Any]:
    """The recurrent part: (the sequence and valid inputs in model order, the concatenation of the
    final states with ``candidate``)."""
    if not sequences:
        raise ValueError("sequences: the rnn model needs at least one constituent collection")
    units = cfg["rnn_units"]
    if isinstance(units, dict):
        missing, extra = sorted(set(sequences) - set(units)), sorted(set(units) - set(sequences))
        if missing or extra:
            raise ValueError(f"model config key 'rnn_units': collections {sorted(sequences)} need units; "
                             f"missing {missing}, unknown {extra}")
    inputs, states = [], []
    for coll, shape in sequences.items():
        models.check_collection_name(coll)
        n_max, n_vars = models.check_sequence_shape(coll, shape)
        seq = keras.Input((n_max, n_vars), name=coll)
        valid = keras.Input((n_max,), name=f"{coll}{models.VALID_SUFFIX}")
        inputs += [seq, valid]
        x = PaddingMask(name=f"{coll}_padding")([seq, valid])
        n_units = units[coll] if isinstance(units, dict) else units
        common = dict(kernel_initializer=keras.initializers.GlorotUniform(seed=seeds.next()),
                      recurrent_initializer=keras.initializers.Orthogonal(seed=seeds.next()),
                      name=f"{coll}_{cfg['cell']}")
        if cfg["cell"] == "lstm":
            layer = keras.layers.LSTM(n_units, **common)
        else:
            layer = keras.layers.GRU(n_units, reset_after=False, **common)
        states.append(layer(x))
    return inputs, keras.layers.Concatenate(axis=-1, name="concatenate")(states + [candidate])
