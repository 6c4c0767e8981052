"""lwtnn RNN conventions (README "lwtnn RNN layers"): activations through get_raw_activation_layer,
Keras 3 hard_sigmoid refused, use_bias=False written as zero biases."""

from __future__ import annotations

import json

import numpy as np
import pytest


def _export(layer):
    import keras

    from taggerflow.lwtnn import keras_to_lwtnn
    from taggerflow.models_rnn import PaddingMask

    seq, valid = keras.Input((5, 3), name="trk"), keras.Input((5,), name="trk_valid")
    model = keras.Model([seq, valid], keras.layers.Dense(2, activation="softmax")(layer(PaddingMask()([seq, valid]))))
    variables = {"trk": [{"name": f"t{i}", "offset": 0.0, "scale": 1.0} for i in range(3)]}
    return model, keras_to_lwtnn(model, {}, variables, ["a", "b"])


def _recurrent_layer(doc):
    return doc["layers"][next(n for n in doc["nodes"] if n["type"] == "sequence")["layer_index"]]


@pytest.mark.parametrize("kind,kwargs,act,inner", [
    ("LSTM", {"activation": "softmax"}, "softmax", "sigmoid"),
    ("LSTM", {"activation": "relu", "recurrent_activation": "linear"}, "rectified", "linear"),
    ("GRU", {"activation": "softmax", "reset_after": False}, "softmax", "sigmoid"),
    ("LSTM", {"use_bias": False}, "tanh", "sigmoid")])
def test_activations_and_biases_agree_with_keras(kind, kwargs, act, inner):
    import keras

    from taggerflow.lwtnn_eval import LwtnnGraph, flatten_padded

    keras.utils.set_random_seed(3)
    model, doc = _export(getattr(keras.layers, kind)(4, **kwargs))
    doc = json.loads(json.dumps(doc))
    layer = _recurrent_layer(doc)
    assert (layer["activation"], layer["inner_activation"]) == (act, inner)
    if kwargs.get("use_bias") is False:
        assert all(c["bias"] == [0.0] * 4 for c in layer["components"].values())
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(60, 5, 3)) * 3).astype("float32")
    valid = (np.arange(5)[None] < rng.integers(0, 6, 60)[:, None]).astype("float32")
    ref = np.asarray(model.predict([x, valid], verbose=0), np.float64)
    got = LwtnnGraph(doc).compute_batch({}, {"trk": flatten_padded(x, valid)})
    assert np.abs(got - ref).max() < 1e-6


def test_keras3_hard_sigmoid_refused():
    import keras

    from taggerflow.lwtnn import LwtnnConversionError

    with pytest.raises(LwtnnConversionError, match="'hard_sigmoid'"):
        _export(keras.layers.LSTM(4, recurrent_activation="hard_sigmoid"))
