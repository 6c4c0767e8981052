"""The scaling file in the formats of umami (scale dict) and umami-preprocessing (norm dict)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from taggerflow.scaling.names import ScalingError, export_name, type_cones, variable_types

if TYPE_CHECKING:
    from taggerflow.config import Config


def umami_scale_dict(cfg: Config, scaling: dict) -> dict:
    """umami's scale dict: {input: [{name, shift, scale, default}, ...]} in variable order, with
    'jets' for the candidate and the sequence names ('pfcand', 'pfcand_inner', ...) for the
    collections. umami fills NaN with ``default`` *before* shifting, so default is given in raw
    units (mean + default * std); umami cannot clamp: the bounds stay in scaling.json."""
    out: dict = {}
    cones = type_cones(cfg)
    for t, variables in variable_types(cfg).items():
        for cone in cones[t]:
            name = export_name(t, cone)
            if name in out:
                raise ScalingError(f"export name '{name}' is used twice (rename the collection)")
            entries = []
            for var in variables:
                e = scaling[t][var.name][cone]
                entries.append({"name": var.name, "shift": float(e["mean"]), "scale": float(e["std"]),
                                "default": float(e["mean"] + e["default"] * e["std"])})
            out[name] = entries
    return out


def norm_dict(cfg: Config, scaling: dict) -> dict:
    """umami-preprocessing's norm dict (norm_dict.yaml): {input: {var: {mean, std}}}, with the same
    input names as :func:`umami_scale_dict`."""
    cones = type_cones(cfg)
    out: dict = {}
    for t, variables in variable_types(cfg).items():
        for cone in cones[t]:
            out[export_name(t, cone)] = {v.name: {"mean": float(scaling[t][v.name][cone]["mean"]),
                                                  "std": float(scaling[t][v.name][cone]["std"])}
                                         for v in variables}
    return out
