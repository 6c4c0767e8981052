"""Benchmark of Spectrum and ShuffleMergeSpectral against the I/O floor (a script, not a test).

Generates (or reuses) demo files (taggerflow.demo.generate_demo_file, ~10 constituents per candidate),
then measures in one run, over the same files, branches and chunk size:

  (a) Spectrum read floor: uproot reading pt, eta and the truth branch of every file in chunks of
      inputs.chunk_size, doing nothing else;
  (b) Spectrum: taggerflow.spectrum.file_spectrum of every file (histograms per class);
  (c) ShuffleMergeSpectral read+write floor: uproot reading every branch of every file in chunks,
      plus writing the job's output rows (the shard's content, read back untimed) to a new ROOT file
      with the same compression and batch size, with no processing;
  (d) ShuffleMergeSpectral: one job (n_jobs 1) over every file, configs/default.yaml's resampling
      (flattening, class ratio 1:1:1:1, data groups per dataset), writing the shard and manifest;
  (e) peak RSS of a ShuffleMergeSpectral job (its own process) over 1/10 of the files and over all
      of them (10x the input).

Prints candidates/s and the ratios floor/stage (targets: Spectrum >= 0.8, ShuffleMergeSpectral >= 0.5)
and the peak RSS figures (targets: 10x input < 10 % more, < 2 GiB).

    .venv/bin/python benchmarks/bench_spectrum_shuffle.py --workdir /tmp/taggerflow_bench_smsp
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


def bench_raw(files: list[tuple[str, str]], chunk_size: int, mix_buffer: int, mix_streams: int) -> dict:
    with open(os.path.join(REPO, "configs", "default.yaml")) as f:
        raw = yaml.safe_load(f)
    raw = copy.deepcopy(raw)
    raw.pop("demo")
    raw["name"] = "bench"
    datasets: dict = {}
    for ds, p in files:
        datasets.setdefault(ds, {"files": []})["files"].append(p)
    raw["inputs"]["datasets"] = datasets
    raw["inputs"]["chunk_size"] = chunk_size
    rs = raw["resampling"]
    rs["n_jobs"] = 1
    rs["mix_buffer"] = mix_buffer
    rs["mix_streams"] = mix_streams
    rs["groups"] = [g for g in rs.get("groups", []) if g["name"] in datasets] or None
    if rs["groups"] is None:
        rs.pop("groups")
    return raw


def make_files(workdir: str, n_files: int, entries: int) -> list[tuple[str, str]]:
    from taggerflow.demo import generate_demo_file
    from taggerflow.io import num_entries

    with open(os.path.join(REPO, "configs", "default.yaml")) as f:
        demo = yaml.safe_load(f)["demo"]["datasets"]
    names = list(demo)
    out = []
    for i in range(n_files):
        ds = names[i % len(names)]
        spec = demo[ds]
        path = os.path.join(workdir, ds, f"{ds}_{i}_{entries}.root")
        if not (os.path.exists(path) and num_entries(path, "candidates") == entries):
            t0 = time.perf_counter()
            generate_demo_file(path, ds, entries, spec["class_fractions"], spec["pt_scale"], spec["eta_width"],
                               seed=1000 + i, file_index=i)
            print(f"  generated {path} ({time.perf_counter() - t0:.1f} s)", flush=True)
        out.append((ds, path))
    return out


def spectra_of(cfg, files):
    from taggerflow.spectrum import fine_edges, file_spectrum
    import numpy as np

    pt_e, eta_e = fine_edges(cfg)
    out = []
    for ds, p in files:
        r = file_spectrum(cfg, p, ds)
        out.append({"dataset": ds, "path": p, "entries": r["entries"], "pt_edges": pt_e, "abs_eta_edges": eta_e,
                    "counts_flow": np.stack([r["hists"][c].values(flow=True) for c in cfg.class_names])})
    return out


def run_shuffle(cfg, spectra, shard: str, manifest: str) -> dict:
    from taggerflow.resample import plan_job, run_job

    plan = plan_job(cfg, spectra, 0, 1)
    return run_job(cfg, 0, plan.segments, plan.P, plan.p_class, shard, manifest, group_classes=plan.group_classes,
                   N=plan.N)


def peak_rss_mb() -> float:
    """Peak RSS of this process (VmHWM: getrusage's ru_maxrss keeps the parent's peak across exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args) -> None:
    """One ShuffleMergeSpectral job in this process; prints its peak RSS (the spectra come from a file)."""
    import numpy as np

    from taggerflow.config import config_from_dict

    with open(args.child) as f:
        job = json.load(f)
    cfg = config_from_dict(job["raw"], os.path.join(args.workdir, "bench.yaml"))
    spectra = [dict(s, counts_flow=np.asarray(s["counts_flow"]), pt_edges=np.asarray(s["pt_edges"]),
                    abs_eta_edges=np.asarray(s["abs_eta_edges"])) for s in job["spectra"]]
    t0 = time.perf_counter()
    m = run_shuffle(cfg, spectra, job["shard"], job["manifest"])
    print(json.dumps({"peak_rss_mb": peak_rss_mb(),
                      "wall_s": time.perf_counter() - t0, "written": m["entries_written"],
                      "read": sum(e["read"] for e in m["files"].values())}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/taggerflow_bench_smsp")
    ap.add_argument("--n-files", type=int, default=20)
    ap.add_argument("--entries-per-file", type=int, default=250_000)
    ap.add_argument("--chunk-size", type=int, default=50_000)
    ap.add_argument("--mix-buffer", type=int, default=50_000)
    ap.add_argument("--mix-streams", type=int, default=4)
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--json", default=None, help="write the figures to this file")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    import awkward as ak
    import uproot

    from taggerflow.config import config_from_dict
    from taggerflow.io import reproducible_root, to_writable, writable_types

    os.makedirs(args.workdir, exist_ok=True)
    files = make_files(args.workdir, args.n_files, args.entries_per_file)
    raw = bench_raw(files, args.chunk_size, args.mix_buffer, args.mix_streams)
    cfg = config_from_dict(raw, os.path.join(args.workdir, "bench.yaml"))
    n_total = args.n_files * args.entries_per_file
    step = args.chunk_size
    res: dict = {"candidates": n_total, "files": args.n_files, "chunk_size": step,
                 "mix_buffer": args.mix_buffer, "mix_streams": args.mix_streams}

    # (a) Spectrum read floor
    t0 = time.perf_counter()
    for _, p in files:
        t = uproot.open(p)["candidates"]
        for start in range(0, t.num_entries, step):
            t.arrays(["pt", "eta", cfg.truth_branch], entry_start=start, entry_stop=start + step, library="ak")
    res["spectrum_floor_s"] = time.perf_counter() - t0
    # (b) Spectrum
    t0 = time.perf_counter()
    spectra = spectra_of(cfg, files)
    res["spectrum_s"] = time.perf_counter() - t0
    res["spectrum_ratio"] = res["spectrum_floor_s"] / res["spectrum_s"]

    # (d) ShuffleMergeSpectral, one job over everything
    shard = os.path.join(args.workdir, "shard_0.root")
    t0 = time.perf_counter()
    m = run_shuffle(cfg, spectra, shard, os.path.join(args.workdir, "manifest_0.json"))
    res["shuffle_s"] = time.perf_counter() - t0
    res["written"] = m["entries_written"]
    # (c) read + write floor
    t0 = time.perf_counter()
    branches = None
    for _, p in files:
        t = uproot.open(p)["candidates"]
        for start in range(0, t.num_entries, step):
            t.arrays(branches, entry_start=start, entry_stop=start + step, library="ak")
    res["read_floor_s"] = time.perf_counter() - t0
    out_t = uproot.open(shard)["candidates"]
    colls = {"pfcand": [k[len("pfcand_"):] for k in out_t.keys() if k.startswith("pfcand_")]}
    content = out_t.arrays([k for k in out_t.keys() if k != "npfcand"], library="ak")
    batch = max(args.chunk_size, args.mix_buffer)
    t0 = time.perf_counter()
    floor_path = os.path.join(args.workdir, "floor_shard.root")
    with reproducible_root("floor") as opts, uproot.recreate(floor_path, compression=uproot.ZSTD(5), **opts) as f:
        made = False
        for start in range(0, len(content), batch):
            w = to_writable(content[start:start + batch], colls)
            if not made:
                f.mktree("candidates", writable_types(w))
                made = True
            f["candidates"].extend(w)
    res["write_floor_s"] = time.perf_counter() - t0
    del content
    res["shuffle_floor_s"] = res["read_floor_s"] + res["write_floor_s"]
    res["shuffle_ratio"] = res["shuffle_floor_s"] / res["shuffle_s"]

    # (e) peak RSS of a job at 1x and 10x input, each in its own process
    if not args.skip_rss:
        n1 = max(1, args.n_files // 10)
        for label, sub in (("1x", files[:n1]), ("10x", files[: n1 * 10])):
            sub_raw = bench_raw(sub, args.chunk_size, args.mix_buffer, args.mix_streams)
            job = {"raw": sub_raw, "spectra": [dict(s, counts_flow=s["counts_flow"].tolist(),
                                                    pt_edges=list(s["pt_edges"]), abs_eta_edges=list(s["abs_eta_edges"]))
                                               for s in spectra if (s["dataset"], s["path"]) in set(sub)],
                   "shard": os.path.join(args.workdir, f"rss_{label}.root"),
                   "manifest": os.path.join(args.workdir, f"rss_{label}.json")}
            jpath = os.path.join(args.workdir, f"rss_{label}_job.json")
            with open(jpath, "w") as f:
                json.dump(job, f)
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--workdir", args.workdir,
                                   "--child", jpath], capture_output=True, text=True, check=True)
            res[f"rss_{label}"] = json.loads(proc.stdout.strip().splitlines()[-1])
        res["rss_growth"] = res["rss_10x"]["peak_rss_mb"] / res["rss_1x"]["peak_rss_mb"] - 1

    mc = lambda n, s: f"{n / s / 1e6:.2f} M cand/s"  # noqa: E731
    print(f"\ninput: {n_total} candidates in {args.n_files} files (~10 constituents each), chunk {step}, "
          f"mix_buffer {args.mix_buffer}, mix_streams {args.mix_streams}")
    print(f"Spectrum             {res['spectrum_s']:7.2f} s  {mc(n_total, res['spectrum_s'])}")
    print(f"  read floor         {res['spectrum_floor_s']:7.2f} s  {mc(n_total, res['spectrum_floor_s'])}")
    print(f"  ratio floor/stage  {res['spectrum_ratio']:7.2f}   (target >= 0.8)")
    print(f"ShuffleMergeSpectral {res['shuffle_s']:7.2f} s  {mc(n_total, res['shuffle_s'])} "
          f"({res['written']} written)")
    print(f"  read+write floor   {res['shuffle_floor_s']:7.2f} s  (read {res['read_floor_s']:.2f} s, write "
          f"{res['write_floor_s']:.2f} s)")
    print(f"  ratio floor/stage  {res['shuffle_ratio']:7.2f}   (target >= 0.5)")
    if not args.skip_rss:
        print(f"peak RSS of a job    1x: {res['rss_1x']['peak_rss_mb']:.0f} MB ({res['rss_1x']['read']} read), "
              f"10x: {res['rss_10x']['peak_rss_mb']:.0f} MB ({res['rss_10x']['read']} read), "
              f"growth {100 * res['rss_growth']:+.1f} % (target < 10 %, < 2048 MB)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1, default=str)


if __name__ == "__main__":
    main()
