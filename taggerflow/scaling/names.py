"""The names shared by every scaling module: variable types (the candidate and each constituent
collection), their cones, the input and export names, and :class:`ScalingError`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:   # (config imports the scaling types, so this package never imports config)
    from taggerflow.config import Config

GLOBAL_CONE = "global"
CANDIDATE = "candidate"
# name of the candidate inputs in the training files and in the exported umami / UPP dictionaries
EXPORT_CANDIDATE_NAME = "jets"


class ScalingError(ValueError):
    """Scaling cannot be computed or applied; names the variable (type.variable.cone)."""


def variable_types(cfg: Config) -> dict[str, list]:
    """Variable type -> its variables: 'candidate' and one entry per constituent collection."""
    out = {CANDIDATE: list(cfg.candidate_variables)}
    for coll in cfg.collections:
        out[coll.name] = list(coll.variables)
    return out


def type_cones(cfg: Config) -> dict[str, tuple[str, ...]]:
    """Variable type -> its cones: ('global',) for the candidate and collections without a cone."""
    out = {CANDIDATE: (GLOBAL_CONE,)}
    for coll in cfg.collections:
        out[coll.name] = coll.cones
    return out


def input_name(type_name: str, cone: str) -> str:
    """Unambiguous name of one (type, cone): 'candidate', 'pfcand' or 'pfcand_inner'."""
    return type_name if cone == GLOBAL_CONE else f"{type_name}_{cone}"


def export_name(type_name: str, cone: str) -> str:
    """Name of one (type, cone) in the training files and exported dictionaries: 'jets' for the
    candidate, the sequence name ('pfcand', 'pfcand_inner') for a collection."""
    return EXPORT_CANDIDATE_NAME if type_name == CANDIDATE else input_name(type_name, cone)
