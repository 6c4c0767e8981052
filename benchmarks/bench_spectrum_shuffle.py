"""Benchmark of Spectrum and ShuffleMergeSpectral against the I/O floor (a script, not a test).

Generates (or reuses) demo files (taggerflow.demo.generate_demo_file, ~10 constituents per candidate),
then measures in one run, over the same files, branches and chunk size:

  (a) Spectrum read floor: uproot reading pt, eta and the truth branch of every file in chunks of
      inputs.chunk_size, doing nothing else (with Python's garbage collector paused while a file is
      opened and read, as the stage does);
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

The floors open the files as the stages' readers do (taggerflow.io.uproot_open_options: uproot's plain
file source read in the calling thread, no caches) and read flat branches as numpy arrays (the
Spectrum floor; library="np", what the Spectrum stage reads them as) or every branch as awkward arrays
(the ShuffleMergeSpectral floor), so that a stage is never compared with a slower way of reading the
same data. Every file is read once untimed first (the page cache is warm for every measurement), and
each floor and stage is measured --repeat times (Spectrum: --spectrum-repeat times), alternately,
keeping the fastest of each (other processes share the CPU); the Spectrum ratio is also printed per
round (a floor and a stage run back to back). The job of (e) gets the spectra as Spectrum writes
them (one .npz per file) and loads them as the ShuffleMergeSpectral task does (keeping only the
coarse counts of each file).

    .venv/bin/python benchmarks/bench_spectrum_shuffle.py --workdir /tmp/taggerflow_bench_smsp
"""

from __future__ import annotations

import argparse
import contextlib
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
                    "counts_flow": (r["counts_flow"] if "counts_flow" in r else np.stack([r["hists"][c].values(flow=True) for c in cfg.class_names]))})
    return out


def open_options(path: str) -> dict:
    """uproot.open options of the stages' readers (older checkouts: uproot's defaults)."""
    try:
        from taggerflow.io import uproot_open_options
    except ImportError:
        return {}
    return uproot_open_options(path, direct=True)


def read_floor(files, branches, step: int, library: str) -> None:
    """Read ``branches`` of every file in chunks of ``step``. The numpy reads (the Spectrum floor) are
    done as the Spectrum stage does them: with the garbage collector paused while a file is opened
    and while it is read (taggerflow.utils.gc_paused); the awkward reads as the shuffle does them."""
    pause = gc_pause() if library == "np" else contextlib.nullcontext
    for _, p in files:
        with pause():
            f = uproot_open(p)
            t = f["candidates"]
        with pause():
            for start in range(0, t.num_entries, step):
                t.arrays(branches, entry_start=start, entry_stop=start + step, library=library)
        f.close()


def gc_pause():
    """taggerflow.utils.gc_paused (older checkouts: no pause, as their stages)."""
    try:
        from taggerflow.utils import gc_paused
    except ImportError:
        return contextlib.nullcontext
    return gc_paused


def shard_level(cfg) -> int:
    """The ZSTD level of the stage's shards (older checkouts: 5), so that the floor writes the same."""
    try:
        from taggerflow.shards import ROOT_LEVEL
    except ImportError:
        return 5
    return int(cfg.raw["resampling"].get("compression_level", ROOT_LEVEL))


def uproot_open(path: str):
    import uproot

    return uproot.open(path, **open_options(path))


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
    try:
        from taggerflow.resample import spectrum_summary
    except ImportError:  # older checkouts: the whole spectra
        spectrum_summary = lambda cfg, s: s  # noqa: E731
    spectra = []
    for s in job["spectra"]:  # as tasks/shuffle.py loads them
        with np.load(s["npz"]) as d:
            spectra.append(spectrum_summary(cfg, {"dataset": s["dataset"], "path": s["path"],
                                                  "entries": int(d["entries"]), "counts_flow": d["counts_flow"],
                                                  "pt_edges": d["pt_edges"], "abs_eta_edges": d["abs_eta_edges"]}))
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
    ap.add_argument("--repeat", type=int, default=3, help="measurements of each floor and stage (fastest kept)")
    ap.add_argument("--spectrum-repeat", type=int, default=15,
                    help="measurements of the Spectrum floor and stage (fastest kept; a round takes < 1 s)")
    ap.add_argument("--json", default=None, help="write the figures to this file")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    import numpy as np
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

    # warm the page cache: every measurement below reads files that are in memory
    for _, p in files:
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass
    rep = max(1, args.repeat)

    def timed(fn):
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out

    # (a) Spectrum read floor and (b) Spectrum, alternately
    flat = ["pt", "eta", cfg.truth_branch]
    floors, stages = [], []
    for _ in range(max(1, args.spectrum_repeat)):
        floors.append(timed(lambda: read_floor(files, flat, step, "np"))[0])
        dt, spectra = timed(lambda: spectra_of(cfg, files))
        stages.append(dt)
    res["spectrum_floor_s"], res["spectrum_s"] = min(floors), min(stages)
    res["spectrum_ratio"] = res["spectrum_floor_s"] / res["spectrum_s"]
    # each round's floor and stage run back to back: their ratio shows the spread that the shared
    # machine adds to the ratio of the fastest
    res["spectrum_round_ratios"] = sorted(f / s for f, s in zip(floors, stages))

    # (d) ShuffleMergeSpectral, one job over everything, and (c) its read floor, alternately
    shard = os.path.join(args.workdir, "shard_0.root")
    res["shuffle_s"] = res["read_floor_s"] = float("inf")
    for _ in range(rep):
        dt, m = timed(lambda: run_shuffle(cfg, spectra, shard, os.path.join(args.workdir, "manifest_0.json")))
        res["shuffle_s"] = min(res["shuffle_s"], dt)
        dt, _ = timed(lambda: read_floor(files, None, step, "ak"))
        res["read_floor_s"] = min(res["read_floor_s"], dt)
    res["written"] = m["entries_written"]
    out_t = uproot.open(shard)["candidates"]
    colls = {"pfcand": [k[len("pfcand_"):] for k in out_t.keys() if k.startswith("pfcand_")]}
    content = out_t.arrays([k for k in out_t.keys() if k != "npfcand"], library="ak")
    batch = max(args.chunk_size, args.mix_buffer)
    floor_path = os.path.join(args.workdir, "floor_shard.root")

    def write_floor():
        with reproducible_root("floor") as opts, \
                uproot.recreate(floor_path, compression=uproot.ZSTD(shard_level(cfg)), **opts) as f:
            made = False
            for start in range(0, len(content), batch):
                w = to_writable(content[start:start + batch], colls)
                if not made:
                    f.mktree("candidates", writable_types(w))
                    made = True
                f["candidates"].extend(w)

    res["write_floor_s"] = min(timed(write_floor)[0] for _ in range(rep))
    del content
    res["shuffle_floor_s"] = res["read_floor_s"] + res["write_floor_s"]
    res["shuffle_ratio"] = res["shuffle_floor_s"] / res["shuffle_s"]

    # (e) peak RSS of a job at 1x and 10x input, each in its own process
    def spectrum_npz(s: dict) -> str:
        """The spectrum of one file as Spectrum writes it (the arrays the job reads)."""
        path = os.path.join(args.workdir, "spectra", os.path.basename(s["path"]) + ".npz")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            np.savez(f, counts_flow=s["counts_flow"], pt_edges=s["pt_edges"], abs_eta_edges=s["abs_eta_edges"],
                     entries=np.int64(s["entries"]))
        return path

    if not args.skip_rss:
        n1 = max(1, args.n_files // 10)
        for label, sub in (("1x", files[:n1]), ("10x", files[: n1 * 10])):
            sub_raw = bench_raw(sub, args.chunk_size, args.mix_buffer, args.mix_streams)
            job = {"raw": sub_raw, "spectra": [{"dataset": s["dataset"], "path": s["path"], "npz": spectrum_npz(s)}
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
    print(f"  read floor         {res['spectrum_floor_s']:7.2f} s  {mc(n_total, res['spectrum_floor_s'])}"
          f"  (best of {len(floors)}, page cache warm)")
    rr = res["spectrum_round_ratios"]
    print(f"  ratio floor/stage  {res['spectrum_ratio']:7.2f}   (target >= 0.8; per round: median "
          f"{rr[len(rr) // 2]:.2f}, {rr[0]:.2f}-{rr[-1]:.2f})")
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
