"""Benchmark of the FeatureScaling job against the uproot read floor (a script, not a test).

Generates (or reuses) demo files, then in one run measures, over the same files, branches and
chunk size:

  (a) the read floor: the shard source (taggerflow.formats.shards) over the branches the job reads, doing nothing else;
  (b) the FeatureScaling job (taggerflow.scaling.feature_scaling_job: moments per cone, per-file
      quantiles, snapshots);

and prints candidates/s of both (wall clock, best of --repeat; CPU time beside it: the machine may
be shared), their ratio (target >= 0.6) and the peak RSS of each. Every measurement runs in a fresh
process (after the files were read once, so both read from the page cache), so that its peak RSS is
its own; the job is also run over the first file alone: equal peaks for 1 and N files (and close to
the read floor's) show that memory does not grow with the data.

The configuration is configs/default.yaml with a cone added to pfcand (so that the inner/outer
path is measured), inputs.chunk_size as in that file unless --chunk-size is given.

    .venv/bin/python benchmarks/bench_feature_scaling.py --workdir /tmp/taggerflow_bench_scaling
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from taggerflow.config import config_from_dict  # noqa: E402
from taggerflow.demo import generate_demo_file  # noqa: E402
from taggerflow.formats.shards import open_shard  # noqa: E402
from taggerflow.io import num_entries  # noqa: E402
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
    """A value (kB) from /proc/self/status, e.g. VmRSS."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def read_floor(cfg, paths: list[str]) -> int:
    branches = sorted(scaling_branches(cfg))
    n = 0
    for p in paths:
        with open_shard(p, cfg.tree) as shard:
            for chunk in shard.chunks(branches, cfg.chunk_size):
                n += len(chunk)
    return n


def measure(kind: str, cfg, paths: list[str]) -> dict:
    """One measurement in this (fresh) process: wall and CPU time, and the peak RSS."""
    base = _status("VmRSS")
    t0, c0 = time.perf_counter(), time.process_time()
    if kind == "read":
        n = read_floor(cfg, paths)
    else:
        result = feature_scaling_job(cfg, paths)
        n = sum(f["entries"] for f in result["per_file"])
    return {"kind": kind, "n": n, "wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
            "rss_before_kib": base, "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def run_child(kind: str, args, paths: list[str]) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--measure", kind, *paths]
    if args.chunk_size:
        cmd += ["--chunk-size", str(args.chunk_size)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/taggerflow_bench_scaling", help="where the demo files are (reused)")
    ap.add_argument("--files", type=int, default=5, help="number of files (default 5)")
    ap.add_argument("--entries", type=int, default=1_000_000, help="candidates per file (default 1M)")
    ap.add_argument("--chunk-size", type=int, default=None, help="default: inputs.chunk_size of the config")
    ap.add_argument("--repeat", type=int, default=2, help="repetitions; the best time of each is reported")
    ap.add_argument("--profile", action="store_true", help="cProfile one job over the first file, print the top")
    ap.add_argument("--measure", choices=("read", "job"), help=argparse.SUPPRESS)
    ap.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()

    cfg, raw = bench_config(args.chunk_size)
    if args.measure:  # child process: one measurement, JSON on the last line
        print(json.dumps(measure(args.measure, cfg, args.paths)))
        return
    paths = make_files(raw, args.workdir, args.files, args.entries)
    total = args.files * args.entries
    print(f"{args.files} files x {args.entries:,} candidates = {total:,}; chunk_size {cfg.chunk_size:,}; "
          f"{len(scaling_branches(cfg))} branches; pfcand cone {CONE}", flush=True)
    read_floor(cfg, paths)  # warm the page cache: both measurements read from memory
    runs: dict[str, list[dict]] = {"read": [], "job": []}
    for _ in range(args.repeat):
        for kind in ("read", "job"):
            r = run_child(kind, args, paths)
            assert r["n"] == total, r
            runs[kind].append(r)
    one = run_child("job", args, paths[:1])

    best = {k: min(v, key=lambda r: r["wall"]) for k, v in runs.items()}
    cpu = {k: min(r["cpu"] for r in v) for k, v in runs.items()}
    rate = {k: total / best[k]["wall"] for k in best}
    mib = 1024.0
    print(f"read floor (shard source, same branches and chunks): {best['read']['wall']:6.2f} s "
          f"{rate['read']:11,.0f} candidates/s (cpu {cpu['read']:.2f} s)")
    print(f"FeatureScaling job (moments per cone, quantiles):  {best['job']['wall']:6.2f} s "
          f"{rate['job']:11,.0f} candidates/s (cpu {cpu['job']:.2f} s)")
    print(f"ratio job / read floor: {rate['job'] / rate['read']:.2f} (target >= 0.6); "
          f"from CPU times: {cpu['read'] / cpu['job']:.2f}")
    print(f"peak RSS, each in a fresh process (after imports {best['read']['rss_before_kib'] / mib:.0f} MiB): "
          f"read floor {max(r['peak_rss_kib'] for r in runs['read']) / mib:.0f} MiB, "
          f"job over {args.files} files {max(r['peak_rss_kib'] for r in runs['job']) / mib:.0f} MiB, "
          f"job over 1 file {one['peak_rss_kib'] / mib:.0f} MiB")
    print(f"all wall times: read {[round(r['wall'], 2) for r in runs['read']]}, "
          f"job {[round(r['wall'], 2) for r in runs['job']]}")

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
