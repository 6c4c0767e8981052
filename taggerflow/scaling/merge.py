"""MergeScaling's core: merge FeatureScaling job results exactly (:func:`merge_jobs`, refusing jobs
computed with other variables, scaling types, limits or cones, or with corrupt moments) and write
the scaling file with its exports, report and plots (:func:`write_scaling_outputs`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import yaml

from taggerflow.integrity import check_moments
from taggerflow.paths import portable_path
from taggerflow.scaling.flags import suspicious_variables
from taggerflow.scaling.formats import norm_dict, umami_scale_dict
from taggerflow.scaling.jobio import _log_step, job_signature, statistics_from_json, statistics_to_json
from taggerflow.scaling.moments import Moments
from taggerflow.scaling.names import ScalingError, type_cones, variable_types
from taggerflow.scaling.parameters import scaling_parameters
from taggerflow.scaling.plots import plot_all
from taggerflow.utils import atomic_path, read_json, write_json

if TYPE_CHECKING:
    from taggerflow.config import Config


def merge_statistics(jobs: list[dict], sources: list[str] | None = None) -> dict:
    """Merge job results ({type: {var: {cone: Moments}}}); all jobs must have the same keys."""
    if not jobs:
        raise ScalingError("no job results to merge")
    ref = _keys(jobs[0])
    for i, job in enumerate(jobs[1:], 1):
        if _keys(job) != ref:
            name = sources[i] if sources else f"job {i}"
            diff = sorted(ref ^ _keys(job))
            raise ScalingError(f"{name}: variables differ from the first job's: {diff[:5]}")
    out = {}
    for t, vs in jobs[0].items():
        out[t] = {}
        for v, cones in vs.items():
            out[t][v] = {}
            for c in cones:
                m = Moments()
                for job in jobs:
                    m = m.merge(job[t][v][c])
                out[t][v][c] = m
    return out


def _keys(stats: dict) -> set[str]:
    return {f"{t}.{v}.{c}" for t, vs in stats.items() for v, cones in vs.items() for c in cones}


def _signature_diff(a: dict, b: dict) -> list[str]:
    """Human-readable differences between two job signatures (first few)."""
    out = []
    va, vb = a.get("variables", {}), b.get("variables", {})
    for t in sorted(set(va) | set(vb)):
        for v in sorted(set(va.get(t, {})) | set(vb.get(t, {}))):
            ea, eb = va.get(t, {}).get(v), vb.get(t, {}).get(v)
            if ea is None or eb is None:
                out.append(f"{t}.{v}: {'missing' if eb is None else 'extra'}")
                continue
            for key in ("expression", "scaling", "limits", "selection"):
                if ea.get(key) != eb.get(key):
                    out.append(f"{t}.{v}.{key}: {ea.get(key)!r} vs {eb.get(key)!r}")
    ca, cb = a.get("cones", {}), b.get("cones", {})
    for c in sorted(set(ca) | set(cb)):
        if ca.get(c) != cb.get(c):
            out.append(f"cone of {c}: {ca.get(c)!r} vs {cb.get(c)!r}")
    return out or ["(signatures differ)"]


def merge_jobs(cfg: Config, job_results: Sequence[dict], sources: Sequence[str] | None = None,
               log_step: int | None = None) -> dict:
    """Merge FeatureScaling job results exactly (Chan). Checks that every job has the same variable
    keys and was computed with the same expressions, scaling types, limits and cones (each other's
    and the configuration's); errors name the job. Returns {'scaling': the scaling file content,
    'umami': umami scale dict, 'norm_dict': UPP norm dict, 'report': {flags, ...}, 'snapshots':
    cumulative moments every log_step files over all jobs (in job order), 'quantiles': per file}."""
    names = list(sources) if sources is not None else [f"job {i}" for i in range(len(job_results))]
    if not job_results:
        raise ScalingError("no job results to merge")
    step = _log_step(cfg, log_step)
    sigs = []
    for job, name in zip(job_results, names):
        sig = job.get("signature")
        if sig is None:
            raise ScalingError(f"{name}: no signature (variables, scaling types, limits) recorded; "
                               "not a FeatureScaling job result, or an old one: rerun FeatureScaling")
        sigs.append(sig)
    for sig, name in zip(sigs[1:], names[1:]):
        if sig != sigs[0]:
            raise ScalingError(f"{name}: computed with other variables, scaling types or limits than "
                               f"{names[0]}: {'; '.join(_signature_diff(sigs[0], sig)[:5])}")
    expected = job_signature(cfg)
    if sigs[0] != expected:
        raise ScalingError(f"{names[0]}: computed with other variables, scaling types or limits than the "
                           f"configuration {cfg.path}: {'; '.join(_signature_diff(expected, sigs[0])[:5])}")
    stats_list = [statistics_from_json(j["moments"]) for j in job_results]
    expected_keys = {f"{t}.{v}.{c}" for t, vs in variable_types(cfg).items() for v in (x.name for x in vs)
                     for c in type_cones(cfg)[t]}
    for s, name in zip(stats_list, names):
        if _keys(s) != expected_keys:
            diff = sorted(expected_keys ^ _keys(s))
            raise ScalingError(f"{name}: variables differ from the configuration's: {diff[:5]}")
    for job, name in zip(job_results, names):
        _check_job_moments(job, name)
    merged = merge_statistics(stats_list, names)
    scaling = scaling_parameters(cfg, merged)

    # convergence: cumulative moments over the files of all jobs, in order
    snapshots, quantiles = [], []
    running: dict | None = None
    n_files = 0
    files_seen: list[str] = []
    for job in job_results:
        for pf in job.get("per_file", []):
            n_files += 1
            files_seen.append(pf["file"])
            fm = statistics_from_json(pf["moments"])
            running = fm if running is None else merge_statistics([running, fm])
            if n_files % step == 0:
                snapshots.append({"n_files": n_files, "file": pf["file"], "moments": statistics_to_json(running)})
            quantiles.append({"file": pf["file"], "entries": pf.get("entries"), "quantiles": pf["quantiles"]})
    if running is None:  # jobs without per-file results: one point per job
        for job in job_results:
            fm = statistics_from_json(job["moments"])
            running = fm if running is None else merge_statistics([running, fm])
            n_files += len(job.get("files", [])) or 1
            snapshots.append({"n_files": n_files, "file": None, "moments": statistics_to_json(running)})
    elif not snapshots or snapshots[-1]["n_files"] != n_files:
        snapshots.append({"n_files": n_files, "file": files_seen[-1], "moments": statistics_to_json(running)})
    outside: dict = {}
    for job in job_results:
        for c, v in (job.get("outside_cones") or {}).items():
            outside[c] = outside.get(c, 0) + int(v)
    flags = suspicious_variables(cfg, scaling, quantiles)
    report = {"flags": flags, "n_jobs": len(job_results), "n_files": n_files, "sources": names,
              "outside_cones": outside, "log_step": step,
              "quantile_method": job_results[0].get("quantile_method")}
    return {"scaling": scaling, "umami": umami_scale_dict(cfg, scaling), "norm_dict": norm_dict(cfg, scaling),
            "report": report, "snapshots": snapshots, "quantiles": quantiles}


def _check_job_moments(job: dict, name: str) -> None:
    """Refuse non-finite or absurd moments (a corrupt shard or input: see taggerflow.integrity), naming
    the job, the shard, the variable and the cone: per shard first, then the job's total."""
    for pf in job.get("per_file", []):
        check_moments(pf["moments"], f"{name}: shard {pf['file']}", ScalingError)
    check_moments(job["moments"], name, ScalingError)


def write_scaling_outputs(cfg: Config, job_paths: Sequence[str], out_dir: str, plots: bool = True) -> dict:
    """MergeScaling's core: read the job JSON files, merge them (:func:`merge_jobs`) and write into
    ``out_dir``: ``scaling_umami.json``, ``norm_dict.yaml``, ``scaling_report.json`` (flags,
    convergence snapshots, per-file quantiles), ``plots/*.png`` and, last, ``scaling.json``; every
    file is written atomically, so an existing scaling.json means a complete set. Returns the
    merge result with 'paths' added."""
    jobs = [read_json(p) for p in job_paths]
    merged = merge_jobs(cfg, jobs, list(job_paths))
    paths = {"umami": os.path.join(out_dir, "scaling_umami.json"),
             "norm_dict": os.path.join(out_dir, "norm_dict.yaml"),
             "report": os.path.join(out_dir, "scaling_report.json"),
             "scaling": os.path.join(out_dir, "scaling.json")}
    write_json(paths["umami"], merged["umami"])
    with atomic_path(paths["norm_dict"], suffix=".yaml") as tmp:
        with open(tmp, "w") as f:
            yaml.safe_dump(merged["norm_dict"], f, sort_keys=False)
    write_json(paths["report"], {**merged["report"], "snapshots": merged["snapshots"],
                                 "quantiles": merged["quantiles"],
                                 "sources": [portable_path(p, cfg.base_dir) for p in job_paths]})
    if plots:
        paths["plots"] = plot_all(cfg, merged, os.path.join(out_dir, "plots"))
    write_json(paths["scaling"], merged["scaling"])
    return {**merged, "paths": paths}
