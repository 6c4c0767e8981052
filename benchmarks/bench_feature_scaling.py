"""Benchmark of the FeatureScaling job against the uproot read floor (a script, not a test).

Generates (or reuses) demo files, then in one run measures, over the same files, branches and
chunk size:

  (a) the read floor: taggerflow.io.read_range over the branches the job reads, doing nothing else;
  (b) the FeatureScaling job (taggerflow.scaling.feature_scaling_job: moments per cone, per-file
      quantiles, snapshots);

and prints candidates/s of both, their ratio (target >= 0.6) and the peak RSS of each (the peak is
reset between the measurements through /proc/self/clear_refs), plus the job's peak RSS over the
first file alone: equal peaks for 1 and N files show that memory does not grow with the data.

The configuration is configs/default.yaml with a cone added to pfcand (so that the inner/outer
path is measured), inputs.chunk_size as in that file unless --chunk-size is given.

    .venv/bin/python benchmarks/bench_feature_scaling.py --workdir /tmp/taggerflow_bench_scaling
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import sys
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from taggerflow.config import config_from_dict  # noqa: E402
from taggerflow.demo import generate_demo_file  # noqa: E402
from taggerflow.io import num_entries, read_range  # noqa: E402
from taggerflow.scaling import feature_scaling_job, scaling_branches  # noqa: E402

CONE = {"coef": 3.0, "min_pt": 30.0, "min_radius": 0.05, "outer_dR": 0.5}


def bench_config(chunk_size: int | None):
    with open(os.path.join(REPO, "configs", "default.yaml")) as f:
        raw = yaml.safe_load(f)
    raw = copy.deepcopy(raw)
    raw["features"]["collections"]["pfcand"]["cone"] = dict(CONE)
    raw["export"]["sequence_names"] = {"pfcand_inner": "pfcand_inner", "pfcand_outer": "pfcand_outer"}
    if chunk_size:
        raw["inputs"]["chunk_size"] = int(chunk_size)
    return config_from_dict(raw, path=os.path.join(REPO, "configs", "default.yaml") + " (+ pfcand cone)"), raw


def make_files(raw: dict, workdir: str, n_files: int, entries: int) -> list[str]:
    os.makedirs(workdir, exist_ok=True)
    datasets = list(raw["demo"]["datasets"].items())
    paths = []
    for i in range(n_files):
        ds, spec = datasets[i % len(datasets)]
        path = os.path.join(workdir, f"bench_{ds}_{i}_{entries}.root")
        if not (os.path.exists(path) and num_entries(path, raw["demo"].get("tree", "candidates")) == entries):
            t0 = time.perf_counter()
            generate_demo_file(path, ds, entries, spec["class_fractions"], spec["pt_scale"], spec["eta_width"],
                               seed=1000 + i, file_index=i)
            print(f"generated {path} in {time.perf_counter() - t0:.1f} s", flush=True)
        paths.append(path)
    return paths


def _status(key: str) -> int:
    """A value (kB) from /proc/self/status, e.g. VmHWM (peak RSS) or VmRSS."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not possible."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def read_floor(cfg, paths: list[str]) -> int:
    branches = sorted(scaling_branches(cfg))
    n = 0
    for p in paths:
        for chunk in read_range(p, cfg.tree, branches, 0, num_entries(p, cfg.tree), cfg.chunk_size):
            n += len(chunk)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/taggerflow_bench_scaling", help="where the demo files are (reused)")
    ap.add_argument("--files", type=int, default=5, help="number of files (default 5)")
    ap.add_argument("--entries", type=int, default=1_000_000, help="candidates per file (default 1M)")
    ap.add_argument("--chunk-size", type=int, default=None, help="default: inputs.chunk_size of the config")
    ap.add_argument("--repeat", type=int, default=2, help="repetitions; the best time of each is reported")
    ap.add_argument("--profile", action="store_true", help="cProfile one job run and print the top functions")
    args = ap.parse_args()

    cfg, raw = bench_config(args.chunk_size)
    paths = make_files(raw, args.workdir, args.files, args.entries)
    total = args.files * args.entries
    print(f"{args.files} files x {args.entries:,} candidates = {total:,}; chunk_size {cfg.chunk_size:,}; "
          f"{len(scaling_branches(cfg))} branches; pfcand cone {CONE}", flush=True)

    read_floor(cfg, paths[:1])  # warm the page cache and the imports
    rss0 = _status("VmRSS")
    t_read, t_job, peak_read, peak_job = [], [], [], []
    result = None
    for _ in range(args.repeat):
        reset_peak()
        t0 = time.perf_counter()
        n = read_floor(cfg, paths)
        t_read.append(time.perf_counter() - t0)
        peak_read.append(_status("VmHWM"))
        assert n == total, (n, total)
        result = None
        reset_peak()
        t0 = time.perf_counter()
        result = feature_scaling_job(cfg, paths)
        t_job.append(time.perf_counter() - t0)
        peak_job.append(_status("VmHWM"))
    result = None
    reset_peak()
    feature_scaling_job(cfg, paths[:1])
    peak_one = _status("VmHWM")

    r_read, r_job = total / min(t_read), total / min(t_job)
    print(f"read floor (read_range, same branches/chunks): {min(t_read):7.2f} s  {r_read:12,.0f} candidates/s")
    print(f"FeatureScaling job (moments/cone, quantiles): {min(t_job):7.2f} s  {r_job:12,.0f} candidates/s")
    print(f"ratio job/read floor: {r_job / r_read:.2f} (target >= 0.6)")
    print(f"RSS after imports: {rss0 / 1024:.0f} MiB; peak RSS: read floor {max(peak_read) / 1024:.0f} MiB, "
          f"job over {args.files} files {max(peak_job) / 1024:.0f} MiB, job over 1 file {peak_one / 1024:.0f} MiB")
    print(f"all times: read {[round(t, 2) for t in t_read]}, job {[round(t, 2) for t in t_job]}")

    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        feature_scaling_job(cfg, paths[:1])
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
