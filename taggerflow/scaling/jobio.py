"""The FeatureScaling job: stream the shards chunk by chunk into moments, per-file quantiles and
cumulative snapshots (:func:`feature_scaling_job`, a JSON-able dict), or moments only
(:func:`accumulate`); the job signature and the JSON form of the moments."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from taggerflow.cones import cone_masks
from taggerflow.formats.shards import open_shard
from taggerflow.paths import portable_path
from taggerflow.scaling.expressions import _candidate_block, _ChunkArrays, _collection_block, scaling_branches
from taggerflow.scaling.moments import Moments, _MomentBlock
from taggerflow.scaling.names import (CANDIDATE, GLOBAL_CONE, ScalingError, input_name, type_cones,
                                      variable_types)
from taggerflow.scaling.quantiles import (DEFAULT_QUANTILE_CAP, DEFAULT_TAIL_SIZE, QUANTILES, _QuantileSketch,
                                         _take_columns)
from taggerflow.utils import stable_hash64

if TYPE_CHECKING:
    from taggerflow.config import Config

JOB_FORMAT = "taggerflow.feature_scaling/1"


@dataclass(frozen=True)


class _Input:
    type_name: str
    cone: str
    names: tuple[str, ...]

    @property
    def name(self) -> str:
        return input_name(self.type_name, self.cone)


def _inputs(cfg: Config) -> list[_Input]:
    out = [_Input(CANDIDATE, GLOBAL_CONE, tuple(v.name for v in cfg.candidate_variables))]
    for coll in cfg.collections:
        for cone in coll.cones:
            out.append(_Input(coll.name, cone, tuple(coll.variable_names)))
    return out


def job_signature(cfg: Config) -> dict:
    """What a job's moments depend on and what the merge needs to agree: per type and variable its
    expression, scaling type and limits per cone; per collection its cone (or null)."""
    cones = type_cones(cfg)
    variables: dict = {}
    for t, vs in variable_types(cfg).items():
        variables[t] = {}
        for v in vs:
            lims = {}
            for c in cones[t]:
                lim = v.limits_for(c)
                lims[c] = None if lim is None else [float(lim[0]), float(lim[1])]
            variables[t][v.name] = {"expression": v.expression, "scaling": v.scaling, "limits": lims,
                                    "selection": v.selection}
    coll_cones = {c.name: (None if c.cone is None else asdict(c.cone)) for c in cfg.collections}
    return {"variables": variables, "cones": coll_cones}


def _log_step(cfg: Config, log_step: int | None) -> int:
    if log_step is None:
        log_step = int(cfg.resolved["scaling"]["log_step"])
    if log_step < 1:
        raise ScalingError(f"log_step must be >= 1, got {log_step}")
    return int(log_step)


def _stats_json(inputs: list[_Input], blocks: list[_MomentBlock]) -> dict:
    out: dict = {}
    for inp, blk in zip(inputs, blocks):
        tv = out.setdefault(inp.type_name, {})
        for j, name in enumerate(inp.names):
            tv.setdefault(name, {})[inp.cone] = blk.moments(j).to_dict()
    return out


def _scan(cfg: Config, shard_paths: Iterable[str], quantiles: bool, log_step: int,
          quantile_cap: int, tail_size: int) -> dict:
    inputs = _inputs(cfg)
    index = {(i.type_name, i.cone): n for n, i in enumerate(inputs)}
    colls = cfg.collections
    cand_vars = cfg.candidate_variables
    need = scaling_branches(cfg)
    branches = sorted(need)
    total = [_MomentBlock(len(i.names)) for i in inputs]
    per_file, snapshots, files = [], [], []
    outside_total = {c.name: 0 for c in colls if c.cone is not None}
    for n_file, path in enumerate(shard_paths, 1):
        stored = portable_path(path, cfg.base_dir)   # as stored: no absolute path of the data directory
        files.append(stored)
        shard = open_shard(path, cfg.tree)
        shard.check_fields(need)
        entries = shard.num_entries
        blocks = [_MomentBlock(len(i.names)) for i in inputs]
        sketches = [_QuantileSketch(len(i.names), quantile_cap, tail_size,
                                    stable_hash64(f"quantile-sample:{cfg.seed}:{i.name}")) for i in inputs] \
            if quantiles else None
        outside = {c: 0 for c in outside_total}
        cand_offset = 0
        coll_offset = {c.name: 0 for c in colls}
        for chunk in shard.chunks(branches, cfg.chunk_size):
            arrs = _ChunkArrays(chunk)
            n = len(chunk)
            x, rejected = _candidate_block(cand_vars, arrs, n)
            k = index[(CANDIDATE, GLOBAL_CONE)]
            finite = blocks[k].add(x, None if rejected is None else np.count_nonzero(rejected, axis=1))
            if sketches is not None:
                sketches[k].add(x, np.arange(cand_offset, cand_offset + n, dtype=np.int64), finite)
            cand_offset += n
            for coll in colls:
                x, counts, rejected = _collection_block(coll, arrs)
                m = x.shape[1]
                if coll.cone is None:
                    k = index[(coll.name, GLOBAL_CONE)]
                    finite = blocks[k].add(x, None if rejected is None else np.count_nonzero(rejected, axis=1))
                    if sketches is not None:
                        off = coll_offset[coll.name]
                        sketches[k].add(x, np.arange(off, off + m, dtype=np.int64), finite)
                else:
                    deta = arrs.jagged(f"{coll.name}_{coll.cone.deta}")
                    dphi = arrs.jagged(f"{coll.name}_{coll.cone.dphi}")
                    masks = cone_masks(cand_pt=arrs.flat("pt"), deta=deta, dphi=dphi, counts=counts,
                                       cone=coll.cone)
                    in_cones = 0
                    for cone in coll.cones:
                        idx = np.flatnonzero(masks[cone])
                        in_cones += len(idx)
                        xc = _take_columns(x, idx)
                        k = index[(coll.name, cone)]
                        finite = blocks[k].add(xc, None if rejected is None else
                                               np.count_nonzero(rejected[:, idx], axis=1))
                        if sketches is not None:
                            sketches[k].add(xc, idx + coll_offset[coll.name], finite)
                    outside[coll.name] += m - in_cones
                coll_offset[coll.name] += m
        for blk, tot in zip(blocks, total):
            tot.merge_block(blk)
        for c, v in outside.items():
            outside_total[c] += v
        if quantiles:
            q: dict = {}
            for inp, blk, sk in zip(inputs, blocks, sketches):
                tv = q.setdefault(inp.type_name, {})
                for j, name in enumerate(inp.names):
                    tv.setdefault(name, {})[inp.cone] = sk.result(j, blk.moments(j))
            per_file.append({"file": stored, "entries": entries, "outside_cones": outside,
                             "moments": _stats_json(inputs, blocks), "quantiles": q})
            del sketches
        shard.close()
        if n_file % log_step == 0:
            snapshots.append({"n_files": n_file, "file": stored, "moments": _stats_json(inputs, total)})
    if files and (not snapshots or snapshots[-1]["n_files"] != len(files)):
        snapshots.append({"n_files": len(files), "file": files[-1], "moments": _stats_json(inputs, total)})
    return {"inputs": inputs, "total": total, "files": files, "per_file": per_file, "snapshots": snapshots,
            "outside_cones": outside_total}


def feature_scaling_job(cfg: Config, shard_paths: Sequence[str], log_step: int | None = None,
                        quantile_cap: int = DEFAULT_QUANTILE_CAP, tail_size: int = DEFAULT_TAIL_SIZE) -> dict:
    """One FeatureScaling job over ``shard_paths``, streamed in chunks of ``cfg.chunk_size``:
    moments, per-file quantiles and cumulative snapshots (every ``log_step`` files; default
    ``scaling.log_step`` of the config, else 1). Returns a JSON-able dict (module docstring)."""
    step = _log_step(cfg, log_step)
    r = _scan(cfg, list(shard_paths), True, step, quantile_cap, tail_size)
    return {
        "format": JOB_FORMAT,
        "files": r["files"],
        "signature": job_signature(cfg),
        "moments": _stats_json(r["inputs"], r["total"]),
        "outside_cones": r["outside_cones"],
        "per_file": r["per_file"],
        "snapshots": r["snapshots"],
        "log_step": step,
        "quantile_method": {"cap": int(quantile_cap), "tail_size": int(tail_size),
                            "probabilities": dict(QUANTILES), "interpolation": "linear (numpy default)"},
    }


def accumulate(cfg: Config, shard_paths: Iterable[str]) -> dict:
    """Moments of every variable over the given shards: {type: {var: {cone: Moments}}} (per cone
    for collections with a cone). No quantiles, no snapshots."""
    r = _scan(cfg, list(shard_paths), False, 1, DEFAULT_QUANTILE_CAP, DEFAULT_TAIL_SIZE)
    out: dict = {t: {v.name: {} for v in vs} for t, vs in variable_types(cfg).items()}
    for inp, blk in zip(r["inputs"], r["total"]):
        for j, name in enumerate(inp.names):
            out[inp.type_name][name][inp.cone] = blk.moments(j)
    return out


def statistics_to_json(stats: dict) -> dict:
    return {t: {v: {c: m.to_dict() for c, m in cones.items()} for v, cones in vs.items()} for t, vs in stats.items()}


def statistics_from_json(d: dict) -> dict:
    return {t: {v: {c: Moments.from_dict(m) for c, m in cones.items()} for v, cones in vs.items()} for t, vs in d.items()}
