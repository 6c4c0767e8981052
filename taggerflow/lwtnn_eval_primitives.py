"""The building blocks of the lwtnn JSON evaluators (taggerflow.lwtnn_eval and its recurrent
layers, taggerflow.lwtnn_eval_rnn): numbers given as JSON numbers or strings, every activation of
lwtnn, and the weight matrices and biases of a layer component (lwtnn 2.14.1 semantics, see
``shared/references/lwtnn-json-format.md``)."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

Array = np.ndarray


def vector(values: Any, where: str) -> Array:
    try:
        return np.asarray([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: expected a list of numbers ({err})") from None


# ----------------------------------------------------------------------------------------------
# activations


def sigmoid(x: Array) -> Array:
    # lwtnn: x < -30 -> 0, x > 30 -> 1, else 1 / (1 + exp(-x)); NaN stays NaN
    z = 1.0 / (1.0 + np.exp(-np.clip(x, -30.0, 30.0)))
    return np.where(x < -30.0, 0.0, np.where(x > 30.0, 1.0, z))


def _hard_sigmoid(x: Array) -> Array:
    out = 0.2 * x + 0.5
    return np.where(out < 0.0, 0.0, np.where(out > 1.0, 1.0, out))


def _softmax(x: Array) -> Array:
    if x.shape[-1] == 0:
        return x
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def _elu(alpha: float) -> Callable[[Array], Array]:
    # lwtnn: x >= 0 ? x : alpha * (exp(x) - 1)   (exp of min(x, 0) only avoids overflow warnings)
    return lambda x: np.where(x >= 0.0, x, alpha * (np.exp(np.minimum(x, 0.0)) - 1.0))


def _leaky(alpha: float) -> Callable[[Array], Array]:
    return lambda x: np.where(x > 0.0, x, alpha * x)


def _swish(alpha: float) -> Callable[[Array], Array]:
    return lambda x: x * sigmoid(alpha * x)


def _relu(x: Array) -> Array:
    return np.where(x < 0.0, 0.0, x)  # lwtnn ReLULayer: x < 0 ? 0 : x (NaN passes through)


_SIMPLE: dict[str, Callable[[Array], Array]] = {
    "linear": lambda x: x,
    "sigmoid": sigmoid,
    "rectified": _relu,
    "softmax": _softmax,
    "tanh": np.tanh,
    "hard_sigmoid": _hard_sigmoid,
    "abs": np.abs,
    "sigmoid_legacy": sigmoid,
    "hard_sigmoid_legacy": _hard_sigmoid,
    "tanh_legacy": np.tanh,
    "rectified_legacy": _relu,
}
_WITH_ALPHA = {"elu": _elu, "leakyrelu": _leaky, "swish": _swish}


def activation_function(spec: Any, where: str = "activation") -> Callable[[Array], Array]:
    """The function (on arrays, softmax over the last axis) of an lwtnn activation entry."""
    if isinstance(spec, Mapping):
        if "function" not in spec or "alpha" not in spec:
            raise ValueError(f"{where}: the object form needs both 'function' and 'alpha', got {dict(spec)}")
        name = spec["function"]
        alpha = float(spec["alpha"])
    elif isinstance(spec, str):
        name, alpha = spec, None
    else:
        raise ValueError(f"{where}: expected a string or {{function, alpha}}, got {spec!r}")
    if name in _SIMPLE:
        return _SIMPLE[name]
    if name in _WITH_ALPHA:
        if alpha is None:
            if name == "elu":
                alpha = 1.0  # lwtnn's special case for a plain "elu"
            else:
                raise ValueError(f"{where}: {name!r} needs the object form {{'function': {name!r}, 'alpha': ...}}; "
                                 "as a plain string lwtnn sets alpha to NaN and returns NaN")
        if not np.isfinite(alpha):
            raise ValueError(f"{where}: {name!r} with a non-finite alpha {alpha}")
        return _WITH_ALPHA[name](alpha)
    raise ValueError(f"{where}: activation function {name!r} not recognized")


def matrix(weights: Any, n_in: int, where: str) -> Array:
    w = vector(weights, f"{where} weights")
    if n_in <= 0 or w.size % n_in != 0:
        raise ValueError(f"{where}: {w.size} weights are not divisible by the {n_in} inputs")
    return w.reshape(w.size // n_in, n_in)


def component(comp: Mapping[str, Any], n_in: int, where: str) -> tuple[Array, Array]:
    if "weights" not in comp or "bias" not in comp:
        raise ValueError(f"{where}: needs 'weights' and 'bias'")
    W = matrix(comp["weights"], n_in, where)
    b = vector(comp["bias"], f"{where} bias")
    if b.size != W.shape[0]:
        raise ValueError(f"{where}: {b.size} biases for {W.shape[0]} outputs")
    return W, b
