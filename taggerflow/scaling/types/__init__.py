"""Scaling types: one module each, registered by one line in :data:`TYPES`.

Each module ``taggerflow.scaling.types.<name>`` defines

* ``SCALING``: the name a variable's ``scaling:`` gives (config refuses any other);
* ``parameters(key, var, cone, moments) -> (mean, std, lim_min, lim_max)``: the offset and scale
  (scaled = (raw - mean) / std) and the clamp bounds in scaled units (None = unbounded) of variable
  ``var`` in ``cone`` from its raw ``moments`` (:class:`taggerflow.scaling.moments.Moments`); it
  raises :class:`~taggerflow.scaling.names.ScalingError` naming ``key`` when the type cannot be
  computed from these values.

Every later stage reads only mean, std and the bounds from scaling.json, so each type is applied
(:mod:`taggerflow.scaling.apply`) and exported (umami/UPP shift and scale, lwtnn offset and scale)
the same way. These modules import nothing heavy: config imports them.
"""

from __future__ import annotations

from taggerflow.scaling.types import categorical, linear, no_scaling, normal, one_hot

#: scaling type name -> its module (in the order config's error message lists them)
TYPES = {m.SCALING: m for m in (no_scaling, categorical, linear, normal, one_hot)}
NAMES = tuple(TYPES)


def module(name: str):
    return TYPES[name]
