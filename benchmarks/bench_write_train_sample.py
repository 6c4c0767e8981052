"""WriteTrainSample alone against its floor: reading its input shards and writing its output with
no processing (the same bytes, datasets, chunks and compression, written with h5py).

    .venv/bin/python benchmarks/bench_write_train_sample.py [--candidates 1200000] [--workdir /tmp/tf_bench_wts]

Input: demo ntuples (taggerflow.demo) passed through the ShuffleMergeSpectral core taking every
candidate, and the scaling of the shards (prepared once, cached in --workdir, not timed).
Target: floor / WriteTrainSample >= 0.5.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import demo_shards, dump, peak_rss_mb, print_table, timed  # noqa: E402


def floor_read(cfg, shards) -> int:
    """Read the branches the writer reads, in the writer's chunks: uproot -> awkward, nothing else."""
    from taggerflow.formats.shards import open_shard
    from taggerflow.trainsample import _branches

    branches = sorted(_branches(cfg))
    n = 0
    for path in shards:
        with open_shard(path, cfg.tree) as shard:
            for chunk in shard.chunks(branches, cfg.chunk_size):
                n += len(chunk)
    return n


def load_outputs(paths: list[str]) -> list[dict]:
    import h5py

    out = []
    for p in paths:
        with h5py.File(p, "r") as f:
            arrays = {}
            for g in f:
                for name, ds in f[g].items():
                    arrays[f"{g}/{name}"] = (ds[:], ds.chunks, ds.compression, ds.compression_opts)
            out.append(arrays)
    return out


def floor_write(contents: list[dict], directory: str, block_rows: int) -> int:
    """Write the same arrays with h5py: same dtypes, chunks, compression; large whole-chunk slices."""
    import h5py

    nbytes = 0
    for i, arrays in enumerate(contents):
        with h5py.File(os.path.join(directory, f"floor_{i}.h5"), "w") as f:
            for key, (data, chunks, comp, opts) in arrays.items():
                kw = {"compression": comp, "compression_opts": opts} if comp else {}
                ds = f.create_dataset(key, shape=(0, *data.shape[1:]), maxshape=(None, *data.shape[1:]),
                                      dtype=data.dtype, chunks=chunks, **kw)
                ds.resize(len(data), axis=0)
                for s in range(0, len(data), block_rows):
                    ds[s:s + block_rows] = data[s:s + block_rows]
                nbytes += data.nbytes
    return nbytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", type=int, default=1_200_000)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--workdir", default="/tmp/tf_bench_wts")
    ap.add_argument("--compression", default="gzip", choices=["gzip", "lzf", "none"])
    ap.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = ap.parse_args()

    t0 = time.perf_counter()
    cfg, shards, scaling = demo_shards(args.workdir, args.candidates, args.shards)
    import h5py
    import uproot

    from taggerflow.config import config_from_dict
    from taggerflow.trainsample import options, write_train_sample

    raw = dict(cfg.raw)
    raw["train_sample"] = dict(raw["train_sample"], compression=None if args.compression == "none" else args.compression)
    cfg = config_from_dict(raw, cfg.path)
    n_in = sum(uproot.open(p)[cfg.tree].num_entries for p in shards)
    in_mb = sum(os.path.getsize(p) for p in shards) / 1e6
    print(f"input: {len(shards)} shards, {n_in} candidates, {in_mb:.0f} MB (prepared in {time.perf_counter() - t0:.1f} s)")

    out_dir = os.path.join(args.workdir, "out")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    times: dict = {}
    outputs = []
    with timed("WriteTrainSample", times):
        for j, shard in enumerate(shards):
            o = {s: os.path.join(out_dir, f"{s}_{j}.h5") for s in ("train", "validation", "test")}
            write_train_sample(cfg, [shard], scaling, o)
            outputs += list(o.values())
    out_mb = sum(os.path.getsize(p) for p in outputs) / 1e6

    floor_dir = os.path.join(args.workdir, "floor")
    shutil.rmtree(floor_dir, ignore_errors=True)
    os.makedirs(floor_dir)
    with timed("floor: read shards", times):
        n_read = floor_read(cfg, shards)
    assert n_read == n_in
    contents = load_outputs(outputs)  # not timed
    lay_rows = options(cfg).chunk_rows
    with timed("floor: write output", times):
        raw_bytes = floor_write(contents, floor_dir, block_rows=lay_rows * 32)
    floor_mb = sum(os.path.getsize(os.path.join(floor_dir, p)) for p in os.listdir(floor_dir)) / 1e6
    floor = times["floor: read shards"]["wall_s"] + times["floor: write output"]["wall_s"]
    ours = times["WriteTrainSample"]["wall_s"]
    rows = [(k, f"{v['wall_s']:.2f}", f"{v['cpu_s']:.2f}", f"{n_in / v['wall_s']:,.0f}") for k, v in times.items()]
    rows.append(("floor: read + write", f"{floor:.2f}", "", f"{n_in / floor:,.0f}"))
    print_table(f"WriteTrainSample on {n_in} candidates ({cfg.raw['train_sample']['compression']}, "
                f"{cfg.raw['train_sample']['precision']}, chunk_rows {lay_rows})", rows,
                ("step", "wall s", "cpu s", "candidates/s"))
    print(f"\noutput: {out_mb:.0f} MB on disk ({raw_bytes / 1e6:.0f} MB uncompressed); floor files {floor_mb:.0f} MB")
    print(f"peak RSS of this process: {peak_rss_mb():.0f} MB (includes the floor's in-memory copy of the output)")
    print(f"floor / WriteTrainSample = {floor / ours:.2f}   (target >= 0.5)")
    dump(args.json, {"candidates": n_in, "times": times, "floor_s": floor, "ours_s": ours,
                     "ratio": floor / ours, "out_mb": out_mb, "h5py": h5py.__version__})


if __name__ == "__main__":
    main()
