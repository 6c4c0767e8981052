"""Scaling type ``one_hot``: a categorical code (e.g. a tau's decay mode) as N indicator inputs.

.. code-block:: yaml

    features:
      candidate:
        decayMode: {scaling: one_hot, categories: [0, 1, 10, 11]}

makes four model inputs, ``decayMode_is_0``, ``decayMode_is_1``, ``decayMode_is_10`` and
``decayMode_is_11`` (a negative code ``-1`` is named ``_is_m1``), in the order of ``categories``: each
is 1.0 where the code (the variable's ``expression``, by default the branch of its name) equals the
category, else 0.0. A code that is none of the categories (decayMode 2), NaN or inf gives all zeros:
there is no 'other' slot, so an unexpected code reads as "none of the known ones" and a model never
sees a code it was not trained for as one it was (list a code to give it its own input).

The configuration expands the variable into its indicators (:func:`expand`), so every later stage
sees N ordinary variables: the scaling file has an entry per indicator (mean 0, std 1, no clamp,
default 0: already in model units), the training files a column per indicator, lwtnn and ONNX an
input per indicator (same names). Deployment computes the indicators from the raw code as training
did (:func:`recipe`), then applies the usual input recipe (nothing to clamp, nothing non-finite).
"""

from __future__ import annotations

from typing import Callable

SCALING = "one_hot"


def indicator_name(name: str, code: int) -> str:
    """``decayMode``, 10 -> ``decayMode_is_10``; -1 -> ``decayMode_is_m1`` (names stay identifiers)."""
    return f"{name}_is_{code}" if code >= 0 else f"{name}_is_m{-code}"


def indicator_expression(expression: str, code: int) -> str:
    """1.0 where the code equals ``code``, else 0.0 (NaN and inf compare unequal to every code)."""
    return f"1.0 * (({expression}) == {code})"


def check(key: str, spec: dict, err: Callable[[str, str], Exception]) -> None:
    """The one_hot options of the variable at config key ``key``."""
    cats = spec.get("categories")
    if cats is None:
        raise err(f"{key}.categories", "one_hot scaling needs categories: [code, ...] (e.g. [0, 1, 10, 11])")
    if not isinstance(cats, list) or not cats or \
            not all(isinstance(c, int) and not isinstance(c, bool) for c in cats):
        raise err(f"{key}.categories", f"expected a non-empty list of integer codes, got {cats!r}")
    if len(set(cats)) != len(cats):
        raise err(f"{key}.categories", f"codes must be distinct, got {cats!r}")
    if "default" in spec:
        raise err(f"{key}.default", "makes no sense for one_hot scaling (an unknown or non-finite code "
                                    "gives all indicators 0)")


def check_not_one_hot(key: str, spec: dict, err: Callable[[str, str], Exception]) -> None:
    if "categories" in spec:
        raise err(f"{key}.categories", f"only for scaling one_hot (this variable has '{spec['scaling']}')")


def expand(name: str, spec: dict, make: Callable[[str, dict], object]) -> list:
    """The indicator variables of one configured one_hot variable: ``make(name, spec)`` builds each
    (:func:`taggerflow.config._variable`) from a spec with the indicator's expression."""
    code_expr = spec.get("expression", name)
    out = []
    cats = spec.get("categories")
    for code in cats if isinstance(cats, list) else []:   # (checked by check(); config validation may ask first)
        ind = {"expression": indicator_expression(code_expr, int(code)), "scaling": SCALING}
        if "selection" in spec:
            ind["selection"] = spec["selection"]
        out.append(make(indicator_name(name, int(code)), ind, one_hot=(name, code_expr, int(code))))
    return out


def recipe(source: str, code_expression: str, code: int) -> str:
    """How deployment computes one indicator from the raw code (model card, lwtnn notes)."""
    return (f"1 if {code_expression} == {code} else 0 (every other code, NaN or inf: 0; "
            f"one_hot indicator of '{source}')")


def parameters(key: str, var, cone: str, moments) -> tuple:
    """An indicator is already in model units: mean 0, std 1, nothing to clamp."""
    return 0.0, 1.0, None, None
