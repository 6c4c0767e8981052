"""Variable expressions: which names an expression reads (validated at config load) and their
evaluation on numpy/awkward arrays. Below config, io and the readers, so that each can use them."""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:   # awkward takes half a second to import: not needed to validate a configuration
    import awkward as ak

# functions allowed in variable expressions (numpy ufuncs, work on awkward arrays)
EXPRESSION_FUNCTIONS = ("abs", "sqrt", "log", "log1p", "exp", "sin", "cos", "tanh", "arctan2", "hypot",
                        "minimum", "maximum", "where", "isfinite")
_FUNCTIONS = {name: getattr(np, name) for name in EXPRESSION_FUNCTIONS}   # abs -> np.abs, ...


def expression_names(expr: str) -> tuple[str, ...]:
    """The variable names an expression reads (functions excluded); raises SyntaxError."""
    tree = ast.parse(expr, mode="eval")
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name)
                                               and node.func.id in EXPRESSION_FUNCTIONS):
            called = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise ValueError(f"unknown function '{called}' (only {', '.join(EXPRESSION_FUNCTIONS)} may be called)")
        if isinstance(node, (ast.Attribute, ast.Subscript, ast.Lambda)):
            raise ValueError("attributes, subscripts and lambdas are not allowed")
        if isinstance(node, ast.Name) and node.id not in EXPRESSION_FUNCTIONS:
            names.append(node.id)
    return tuple(dict.fromkeys(names))


def evaluate(expression: str, namespace: dict) -> ak.Array | np.ndarray:
    """Evaluate a validated variable expression (see :func:`expression_names`) on arrays."""
    return eval(compile(expression, "<expression>", "eval"), {"__builtins__": {}}, {**_FUNCTIONS, **namespace})
