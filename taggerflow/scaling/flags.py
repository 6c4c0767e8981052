"""Flags of suspicious variables in the merged scaling (written to scaling_report.json and shown in
the range plots)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from taggerflow.scaling.names import input_name, type_cones, variable_types

if TYPE_CHECKING:
    from taggerflow.config import Config

TINY_STD_RATIO = 1e-4      # std / |mean| below this: float32 inputs resolve the spread poorly
OUTLIER_SIGMAS = 20.0      # unbounded 'normal' variable with values this many sigmas away


def suspicious_variables(cfg: Config, scaling: dict, quantiles: Sequence[dict] = ()) -> list[dict]:
    """Flags: [{input, type, variable, cone, code, message}]. Codes:

    - ``nan_inf``: NaN or inf values were found (excluded from the moments, replaced by the default);
    - ``empty``: no finite value at all; ``constant``: a single distinct value (std 0);
    - ``tiny_std``: std < 1e-4 |mean| (the raw values' spread is lost in float32 precision);
    - ``clamp_low`` / ``clamp_high``: in some file the clamp bound lies inside the Phi(-3) / Phi(+3)
      quantile, i.e. the clamp cuts away more than Phi(-3) = 0.135 % of the data on that side;
    - ``outliers``: 'normal' scaling without limits and values beyond 20 sigma.
    """
    flags: list[dict] = []
    cones = type_cones(cfg)

    def flag(t, v, c, code, msg):
        flags.append({"input": input_name(t, c), "type": t, "variable": v, "cone": c, "code": code,
                      "message": f"{input_name(t, c)}.{v}: {msg}"})

    for t, variables in variable_types(cfg).items():
        for var in variables:
            for c in cones[t]:
                e = scaling[t][var.name][c]
                if e["nan"] or e["inf"]:
                    flag(t, var.name, c, "nan_inf", f"{e['nan']} NaN and {e['inf']} inf values (excluded "
                         f"from the moments, set to the default {e['default']} when scaled)")
                if e["num"] == 0:
                    flag(t, var.name, c, "empty", "no finite value")
                    continue
                lo_raw, hi_raw = e.get("min"), e.get("max")
                if lo_raw is not None and lo_raw == hi_raw:
                    flag(t, var.name, c, "constant", f"all {e['num']} values equal {lo_raw}")
                    continue
                raw_mean, raw_std = e.get("raw_mean"), e.get("raw_std")
                if var.scaling != "categorical" and raw_std is not None and raw_mean is not None and \
                        raw_std < TINY_STD_RATIO * abs(raw_mean):
                    flag(t, var.name, c, "tiny_std", f"std {raw_std:.3g} is tiny relative to |mean| "
                         f"{abs(raw_mean):.6g} (ratio {raw_std / abs(raw_mean):.2g} < {TINY_STD_RATIO:g})")
                mean, std = e["mean"], e["std"]
                for side, lim, qname, code in (("low", e["lim_min"], "q_m3", "clamp_low"),
                                               ("high", e["lim_max"], "q_p3", "clamp_high")):
                    if lim is None:
                        continue
                    bound = mean + lim * std
                    bad = []
                    for pf in quantiles:
                        q = pf["quantiles"].get(t, {}).get(var.name, {}).get(c, {}).get(qname)
                        if q is None:
                            continue
                        if (side == "low" and q < bound) or (side == "high" and q > bound):
                            bad.append((pf["file"], (q - mean) / std))
                    if bad:
                        worst = min(z for _, z in bad) if side == "low" else max(z for _, z in bad)
                        flag(t, var.name, c, code, f"the clamp at {lim:g} (raw {bound:.6g}) cuts away more "
                             f"than Phi({'-' if side == 'low' else '+'}3) of the data in {len(bad)} of "
                             f"{len(quantiles)} files (Phi({'-' if side == 'low' else '+'}3) quantile at "
                             f"{worst:.3g} in scaled units)")
                if var.scaling == "normal" and e["lim_min"] is None and lo_raw is not None and \
                        (mean - lo_raw) / std > OUTLIER_SIGMAS:
                    flag(t, var.name, c, "outliers", f"unbounded, minimum at {(lo_raw - mean) / std:.3g} sigma")
                if var.scaling == "normal" and e["lim_max"] is None and hi_raw is not None and \
                        (hi_raw - mean) / std > OUTLIER_SIGMAS:
                    flag(t, var.name, c, "outliers", f"unbounded, maximum at {(hi_raw - mean) / std:.3g} sigma")
    return flags
