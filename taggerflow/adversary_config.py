"""The ``training.adversary`` section of a training variant (taggerflow.adversarial): its keys,
defaults and validation, without TensorFlow (taggerflow.config validates with it).

Keys: lambda (>= 0, required: the weight of the adversary loss), ramp_up_epochs (linear ramp-up of
lambda, 0: none), layers (the adversary's dense widths), inputs (candidate variables the adversary
reads beside the main outputs), learning_rate (null: the main one), control_batch_size (null:
batch_size), balance_classes (class-balancing weights in both losses), ks_cut ({output: class,
max: KS} an epoch must pass to be selected; null: every epoch), select_by (val_loss, val_accuracy
or ks: which selected epoch is exported), plot_every (0: no plots), pt_bins (four edges; null:
tertiles of the control validation pT).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SELECT_BY = {"val_loss": "min", "val_accuracy": "max", "ks": "min"}  # ks: of the cut's output
DEFAULTS = {"ramp_up_epochs": 0, "layers": [32, 32], "inputs": [], "ks_cut": None, "select_by": "val_loss",
            "plot_every": 1, "pt_bins": None, "balance_classes": True, "learning_rate": None,
            "control_batch_size": None}
#: the section in taggerflow.schema's legacy form: keys, required, defaults (the values are checked
#: by validate_adversary_section, with messages of their own)
SCHEMA = {"training.adversary": {"lambda": (object, True), **{k: (object, False, v) for k, v in DEFAULTS.items()}}}


# ----------------------------------------------------------------------------------------------
# configuration


def validate_adversary_section(section, where: str, classes: Sequence[str] | None = None,
                               candidate_variables: Sequence[str] | None = None) -> tuple[str, str] | None:
    """The first problem of a ``training.adversary`` section as (config key, message), or None.
    ``classes``/``candidate_variables``: the names the section may use (None: not checked)."""
    if not isinstance(section, dict):
        return where, "expected a mapping"
    allowed = {"lambda", *DEFAULTS}
    for key in section:
        if key not in allowed:
            return f"{where}.{key}", f"unknown key (allowed: {', '.join(sorted(allowed))})"

    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)

    if "lambda" not in section:
        return f"{where}.lambda", "missing required key (the weight of the adversary loss, >= 0)"
    section = {**DEFAULTS, **section}  # the defaults: DEFAULTS only
    if not number(section["lambda"]) or section["lambda"] < 0:
        return f"{where}.lambda", f"expected a number >= 0, got {section['lambda']!r}"
    ramp = section["ramp_up_epochs"]
    if isinstance(ramp, bool) or not isinstance(ramp, int) or ramp < 0:
        return f"{where}.ramp_up_epochs", f"expected an integer >= 0 (0: no ramp-up), got {ramp!r}"
    layers = section["layers"]
    if not isinstance(layers, list) or not layers or \
            not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in layers):
        return f"{where}.layers", f"expected a non-empty list of layer widths >= 1, got {layers!r}"
    inputs = section["inputs"]
    if not isinstance(inputs, list) or len(set(map(str, inputs))) != len(inputs):
        return f"{where}.inputs", "expected a list of distinct candidate variable names"
    for v in inputs:
        if candidate_variables is not None and v not in candidate_variables:
            return f"{where}.inputs", f"'{v}' is not a candidate variable ({', '.join(candidate_variables)})"
    cut = section["ks_cut"]
    if cut is not None:
        if not isinstance(cut, dict) or set(cut) != {"output", "max"}:
            return f"{where}.ks_cut", "expected {output: <class>, max: <KS statistic in (0, 1]>} or null"
        if classes is not None and cut["output"] not in classes:
            return f"{where}.ks_cut.output", f"'{cut['output']}' is not a class ({', '.join(classes)})"
        if not number(cut["max"]) or not 0 < cut["max"] <= 1:
            return f"{where}.ks_cut.max", f"expected a KS statistic in (0, 1], got {cut['max']!r}"
    sel = section["select_by"]
    if sel not in SELECT_BY:
        return f"{where}.select_by", f"unknown {sel!r} (allowed: {', '.join(SELECT_BY)})"
    if sel == "ks" and cut is None:
        return f"{where}.select_by", "'ks' needs a ks_cut (its output is the one compared)"
    every = section["plot_every"]
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        return f"{where}.plot_every", f"expected an integer >= 0 (0: no plots), got {every!r}"
    bins = section["pt_bins"]
    if bins is not None and (not isinstance(bins, list) or len(bins) != 4 or not all(map(number, bins))
                             or any(b <= a for a, b in zip(bins, bins[1:]))):
        return f"{where}.pt_bins", "expected four increasing pT edges (three bins) or null (tertiles)"
    if not isinstance(section["balance_classes"], bool):
        return f"{where}.balance_classes", "expected true or false"
    lr = section["learning_rate"]
    if lr is not None and (not number(lr) or lr <= 0):
        return f"{where}.learning_rate", f"expected a number > 0 or null (the main one), got {lr!r}"
    cb = section["control_batch_size"]
    if cb is not None and (isinstance(cb, bool) or not isinstance(cb, int) or cb < 1):
        return f"{where}.control_batch_size", f"expected an integer >= 1 or null (batch_size), got {cb!r}"
    return None
