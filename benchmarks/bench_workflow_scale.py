"""Benchmark of a workflow of 10,000 branches on a login node (a script, not a test).

A demo configuration with ``--branches / 4`` files per dataset makes GenerateDemoSamples and Spectrum
workflows of ``--branches`` branches (Spectrum's branch map is built from GenerateDemoSamples'
outputs). Half of the GenerateDemoSamples outputs exist (empty files), so that the status shows a
partly done workflow. Every figure is taken in a fresh process, from the command's start to its end
(imports and law's start included), as a user sees it:

  submission files  law's job file creation for every branch (the workflow proxy's
                    create_job_file, grouped as law submits: one submit file, the wrapper with one
                    argument line per job), without submitting; with the time to build the branch map
  --print-status    `law run <Task> --workflow htcondor --print-status 1` (the task and its upstream
                    workflow: 2 x --branches branch outputs for Spectrum), and `--print-status 0`

Target: each under 30 s for 10,000 branches. Branch maps are built once per workflow (law's cache),
the configuration is parsed once per file, branch tasks are created without re-resolving parameters,
and output existence is checked with one directory listing per output directory
(law.NestedSiblingFileCollection) instead of one stat per branch.

    .venv/bin/python benchmarks/bench_workflow_scale.py [--branches 10000] [--workdir DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from _common import default_raw, dump, print_table  # noqa: E402

TASKS = ("GenerateDemoSamples", "Spectrum")
LIMIT_S = 30.0


def bench_config(workdir: str, n_branches: int) -> str:
    import yaml

    if n_branches % 4:
        raise SystemExit("--branches must be a multiple of 4 (the demo has 4 datasets)")
    raw = copy.deepcopy(default_raw())
    raw["name"] = "scale"
    for spec in raw["demo"]["datasets"].values():
        spec["n_files"] = n_branches // 4
        spec["entries_per_file"] = 100
    path = os.path.join(workdir, "scale.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(raw, f, sort_keys=False)
    return path


def environment(workdir: str) -> dict:
    return dict(os.environ, PYTHONPATH=REPO, LAW_CONFIG_FILE=os.path.join(REPO, "law.cfg"),
                LAW_HOME=os.path.join(workdir, "law_home"), TAGGERFLOW_DATA=os.path.join(workdir, "data"),
                CONDOR_CONFIG=os.devnull)


def child_job_files(family: str, config: str) -> None:
    """In a fresh process: law's submission files of every branch; prints timings as JSON."""
    t0 = time.perf_counter()
    import luigi

    import tasks.demo  # noqa: F401
    import tasks.spectrum  # noqa: F401
    from workflows.remote import job_files

    t_import = time.perf_counter()
    args = [family, "--version", "bench", "--config", config, "--workflow", "htcondor"]
    with luigi.cmdline_parser.CmdlineParser.global_instance(args) as cp:
        task = cp.get_task_obj()
        n = len(task.branch_map)
        t_map = time.perf_counter()
        res = job_files(task)
        t_files = time.perf_counter()
    with open(res[0]["job"]) as f:
        n_queued = sum(1 for line in f if line.startswith("    _"))
    print(json.dumps({"branches": n, "jobs": n_queued, "import_s": t_import - t0, "branch_map_s": t_map - t_import,
                      "job_files_s": t_files - t_map, "job_file": res[0]["job"]}))


def create_half_of_the_demo_outputs(workdir: str, config: str) -> int:
    """Empty files for every other GenerateDemoSamples branch (not timed)."""
    code = ("import json, luigi, tasks.demo as d\n"
            f"t = d.GenerateDemoSamples(version='bench', config={config!r})\n"
            "n = 0\n"
            "for b, task in t.get_branch_tasks().items():\n"
            "    if b % 2 == 0:\n"
            "        p = task.output().path\n"
            "        __import__('os').makedirs(__import__('os').path.dirname(p), exist_ok=True)\n"
            "        open(p, 'w').close(); n += 1\n"
            "print(n)\n")
    out = subprocess.run([sys.executable, "-c", code], env=environment(workdir), cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    return int(out.split()[-1])


def timed_run(cmd: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, proc.stdout + proc.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--branches", type=int, default=10_000)
    ap.add_argument("--workdir", default=None, help="default: a new temporary directory")
    ap.add_argument("--json", default=None, help="write the figures to this file")
    ap.add_argument("--child", nargs=2, metavar=("TASK", "CONFIG"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child_job_files(*args.child)

    workdir = args.workdir or tempfile.mkdtemp(prefix="taggerflow_bench_scale_")
    os.makedirs(workdir, exist_ok=True)
    config = bench_config(workdir, args.branches)
    env = environment(workdir)
    law_bin = os.path.join(os.path.dirname(sys.executable), "law")
    n_done = create_half_of_the_demo_outputs(workdir, config)
    print(f"workflows of {args.branches} branches in {workdir}; {n_done} GenerateDemoSamples outputs exist")

    results, rows = {}, []
    for family in TASKS:
        wall, out = timed_run([sys.executable, __file__, "--child", family, config], env)
        inner = json.loads(out.strip().splitlines()[-1])
        assert inner["branches"] == inner["jobs"] == args.branches, inner
        results[f"{family} submission files"] = {"wall_s": wall, **inner}
        rows.append((f"{family}: submission files", f"{wall:.1f}",
                     f"import {inner['import_s']:.1f} s, branch map {inner['branch_map_s']:.1f} s, "
                     f"job files {inner['job_files_s']:.1f} s"))
        for depth in (1, 0):
            wall, out = timed_run([law_bin, "run", f"tasks.{'demo' if family == TASKS[0] else 'spectrum'}.{family}",
                                   "--version", "bench", "--config", config, "--workflow", "htcondor",
                                   "--print-status", str(depth)], env)
            counts = [line.strip(" │") for line in out.splitlines() if re.search(r"\(\d+/\d+\)$", line.strip())]
            results[f"{family} --print-status {depth}"] = {"wall_s": wall, "status": counts}
            rows.append((f"{family}: --print-status {depth}", f"{wall:.1f}", "; ".join(counts)))

    print_table(f"{args.branches} branches (wall seconds, fresh process each; target < {LIMIT_S:.0f} s)",
                rows, ("command", "wall_s", "details"))
    worst = max(r["wall_s"] for r in results.values())
    print(f"\nslowest: {worst:.1f} s -> {'OK' if worst < LIMIT_S else 'ABOVE TARGET'} (< {LIMIT_S:.0f} s)")
    dump(args.json, results)


if __name__ == "__main__":
    main()
