"""Feature scaling: per-variable moments computed in parallel jobs and merged exactly.

Moments are kept in float64 as (count, mean, M2) and merged with Chan et al.'s pairwise formula,
so the merged result equals a single pass over all data to rounding (the peers' sum/sum-of-squares
merge of rounded means loses a std of 0.5 around a mean of 50 entirely). NaN and inf values are
excluded from the moments and counted.

Cones. A constituent collection with a ``cone`` has its moments computed per cone: 'inner'
(dR <= r(pt)) and 'outer' (r < dR < outer_dR); constituents at dR >= outer_dR are in no cone and
are excluded (their number is reported as ``outside_cones``). Without a cone: 'global'.

One FeatureScaling job (:func:`feature_scaling_job`) streams its files chunk by chunk and returns
a JSON-able dict with

* ``moments``: {type: {var: {cone: {num, mean, m2, min, max, nan, inf, cut}}}} over all its files
  (``cut``: values left out by the variable's ``selection``);
* ``per_file``: per input file its entries, its own moments and its quantiles (below);
* ``snapshots``: the cumulative moments after every ``log_step`` files (and after the last one),
  for convergence studies;
* ``signature``: the variables, expressions, scaling types, limits and cones it was computed with
  (:func:`merge_jobs` refuses to merge jobs whose signatures or keys differ).

Per-file quantiles (median, min, max and the quantiles at the normal-CDF probabilities
Phi(+-1), Phi(+-2), Phi(+-3), Phi(+-5)) are computed in bounded memory per input (candidate, or
collection and cone) and file:

* **exact** while the file's rows of that input fit ``quantile_cap`` (default 32768): all values are
  kept and ``numpy.quantile`` (linear interpolation) is used;
* beyond the cap: the ``tail_size`` (default 4096) smallest and largest finite values of every
  variable are kept exactly, so every quantile whose interpolation ranks lie within the outermost
  ``tail_size`` ranks is still exact (Phi(+-3) up to 3 million values per file, Phi(+-5) up to
  10^10); the other quantiles come from a deterministic uniform sample without replacement of
  ``quantile_cap`` rows (bottom-k of a 64-bit hash of the row's index within the file: the sample
  does not depend on the chunk size, and the same file gives the same sample every time).
  The rank of such an estimate has a standard deviation of sqrt(p (1 - p) / cap) in probability:
  0.0028 at the median, 0.0020 at Phi(+-1), 0.00082 at Phi(+-2) for the default cap. Estimated
  quantiles are listed per variable in ``approximate``; min and max are always exact.

Memory per input and file is bounded by about (2 cap (n_vars + 1) + 4 tail_size n_vars) * 8 bytes
(7 MB for 10 variables with the defaults), whatever the file size.

The package, by concern: :mod:`~taggerflow.scaling.names` (variable types, cones, input and export
names, :class:`ScalingError`), :mod:`~taggerflow.scaling.moments`, :mod:`~taggerflow.scaling.quantiles`
(the sketch), :mod:`~taggerflow.scaling.expressions` (one chunk's values), :mod:`~taggerflow.scaling.jobio`
(the FeatureScaling job), :mod:`~taggerflow.scaling.merge` (MergeScaling and its outputs),
:mod:`~taggerflow.scaling.parameters` (the scaling file), :mod:`~taggerflow.scaling.types` (one module
per scaling type, registered by one line), :mod:`~taggerflow.scaling.formats` (umami / UPP),
:mod:`~taggerflow.scaling.flags`, :mod:`~taggerflow.scaling.plots` and :mod:`~taggerflow.scaling.apply`
(the input recipe).

Every public name stays importable from ``taggerflow.scaling``; the submodules are imported on first
use of a name (PEP 562), because config imports :mod:`taggerflow.scaling.types` while the job
modules import config's cones: importing them all here would be an import cycle (and would load
uproot for every configuration read).
"""

from __future__ import annotations

import importlib

#: submodule -> the public names it defines
_MODULES = {
    "names": ("GLOBAL_CONE", "CANDIDATE", "EXPORT_CANDIDATE_NAME", "ScalingError", "variable_types", "type_cones",
              "input_name", "export_name"),
    "moments": ("Moments",),
    "quantiles": ("QUANTILES", "DEFAULT_QUANTILE_CAP", "DEFAULT_TAIL_SIZE"),
    "expressions": ("scaling_branches",),
    "jobio": ("JOB_FORMAT", "job_signature", "feature_scaling_job", "accumulate", "statistics_to_json",
              "statistics_from_json"),
    "merge": ("merge_statistics", "merge_jobs", "write_scaling_outputs"),
    "parameters": ("scaling_parameters",),
    "formats": ("umami_scale_dict", "norm_dict"),
    "flags": ("TINY_STD_RATIO", "OUTLIER_SIGMAS", "suspicious_variables"),
    "apply": ("SCALED_INPUT_RECIPE", "RAW_INPUT_RECIPE", "clamp_then_default", "scaling_arrays", "raw_recipe_arrays",
              "apply_raw_recipe", "apply_scaling"),
}
#: public name -> the submodule that defines it
_WHERE = {name: module for module, names in _MODULES.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'taggerflow.scaling' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"taggerflow.scaling.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
