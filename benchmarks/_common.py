"""Helpers shared by the benchmark scripts: demo input at scale, timing, peak memory."""

from __future__ import annotations

import copy
import json
import os
import resource
import sys
import time
from contextlib import contextmanager

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def default_raw() -> dict:
    with open(os.path.join(REPO, "configs", "default.yaml")) as f:
        return yaml.safe_load(f)


@contextmanager
def timed(label: str, out: dict):
    t0 = time.perf_counter()
    c0 = time.process_time()
    yield
    out[label] = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def demo_shards(workdir: str, n_candidates: int, n_shards: int = 2) -> tuple[object, list[str], dict]:
    """Demo ntuples (4 datasets) resampled with ShuffleMergeSpectral taking every candidate (class
    ratio -1, so the shards hold all n_candidates), and the scaling computed from the shards.
    Cached in ``workdir``. Returns (config, shard paths, scaling)."""
    from taggerflow.config import config_from_dict
    from taggerflow.demo import generate_demo_file
    from taggerflow.resample import acceptance, run_job, split_entries
    from taggerflow.scaling import accumulate, scaling_parameters
    from taggerflow.spectrum import coarse_counts, file_spectrum, fine_edges
    from taggerflow.utils import read_json, write_json

    os.makedirs(workdir, exist_ok=True)
    raw = copy.deepcopy(default_raw())
    demo = raw.pop("demo")
    per_file = -(-n_candidates // len(demo["datasets"]))
    files = {}
    for i, (ds, spec) in enumerate(demo["datasets"].items()):
        path = os.path.join(workdir, f"{ds}.root")
        if not os.path.exists(path):
            generate_demo_file(path, ds, per_file, spec["class_fractions"], spec["pt_scale"], spec["eta_width"],
                               seed=7 + i, file_index=i)
        files[ds] = path
    raw["name"] = "bench"
    raw["inputs"]["datasets"] = {ds: {"files": [p]} for ds, p in files.items()}
    raw["resampling"]["class_ratio"] = {c: -1 for c in raw["classes"]["labels"]}  # take all
    raw["resampling"]["n_jobs"] = n_shards
    raw["resampling"]["mix_buffer"] = 50_000
    cfg = config_from_dict(raw, os.path.join(workdir, "bench.yaml"))
    shards = [os.path.join(workdir, f"shard_{j}.root") for j in range(n_shards)]
    scaling_path = os.path.join(workdir, "scaling.json")
    if not all(os.path.exists(p) for p in shards + [scaling_path]):
        import numpy as np

        rs = raw["resampling"]
        pt_e, eta_e = fine_edges(cfg)
        coarse, per_ds = {}, {}
        for ds, path in files.items():
            res = file_spectrum(cfg, path)
            counts = res["counts_flow"]
            coarse[ds] = coarse_counts(counts, pt_e, eta_e, rs["pt_bins"], rs["eta_bins"])
            per_ds[ds] = [(path, res["entries"])]
        P, p = acceptance(coarse, cfg.class_names, rs["class_ratio"], False, rs["pt_bins"], rs["eta_bins"])
        for j, shard in enumerate(shards):
            segs = {ds: split_entries(f, n_shards)[j] for ds, f in per_ds.items()}
            run_job(cfg, j, segs, P, p, shard, os.path.join(workdir, f"manifest_{j}.json"))
        write_json(scaling_path, scaling_parameters(cfg, accumulate(cfg, shards)))
    return cfg, shards, read_json(scaling_path)


def print_table(title: str, rows: list[tuple], header: tuple) -> None:
    print(f"\n{title}")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  " + "  ".join(str(v).rjust(w) for v, w in zip(r, widths)))


def dump(path: str | None, obj: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(obj, f, indent=1, default=str)
