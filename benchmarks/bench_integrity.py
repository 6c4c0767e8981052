"""Cost of the integrity checks (taggerflow.integrity) against the stages they guard (a script, not a test).

Over demo files (configs/default.yaml's datasets, generated once, page cache warm), the fastest of
--repeat rounds of:

  * Spectrum: taggerflow.spectrum.file_spectrum of every file, with the basket check and with the
    check replaced by a no-op, and the check alone (check_input_baskets of the opened files);
  * the shard sha256 (taggerflow.utils.file_sha256) of the shard of one ShuffleMergeSpectral job over
    every file, against that job (run_job: it computes the sha256 once, for the manifest) and the
    stages that verify it before reading it: FeatureScaling (feature_scaling_job), WriteTrainSample
    (write_train_sample) and ShardValidation (validate_shards, without and with its plots).

Prints each time and the fraction check / stage.

    .venv/bin/python benchmarks/bench_integrity.py --workdir /tmp/taggerflow_bench_integrity
"""

from __future__ import annotations

import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/taggerflow_bench_integrity")
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--entries", type=int, default=30000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from bench_spectrum_shuffle import bench_raw, make_files, spectra_of

    import taggerflow.spectrum as spectrum
    from taggerflow.config import config_from_dict
    from taggerflow.integrity import check_input_baskets
    from taggerflow.readers import input_spec, open_source
    from taggerflow.resample import plan_job, run_job
    from taggerflow.scaling import feature_scaling_job, scaling_parameters, statistics_from_json
    from taggerflow.trainsample import write_train_sample
    from taggerflow.utils import file_sha256
    from taggerflow.validation import validate_shards

    os.makedirs(args.workdir, exist_ok=True)
    files = make_files(args.workdir, args.files, args.entries)
    raw = bench_raw(files, 20000, 10000, 8)
    cfg = config_from_dict(raw, os.path.join(args.workdir, "bench.yaml"))
    for _, p in files:   # warm the page cache
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass

    def spectra():
        for ds, p in files:
            spectrum.file_spectrum(cfg, p, ds)

    def check_alone() -> float:
        """The checks of every file, timed alone (the files opened beforehand, untimed)."""
        opened = [(input_spec(cfg, ds), p) for ds, p in files]
        opened = [(spec, open_source(spec, p)) for spec, p in opened]
        t0 = time.perf_counter()
        for spec, src in opened:
            check_input_baskets(cfg, spec, src)
        dt = time.perf_counter() - t0
        for _, src in opened:
            src.close()
        return dt

    with_check = best(spectra, args.repeat)
    real = spectrum.check_input_baskets
    spectrum.check_input_baskets = lambda *a: None
    try:
        without = best(spectra, args.repeat)
    finally:
        spectrum.check_input_baskets = real
    check = min(check_alone() for _ in range(max(args.repeat, 5)))
    size = sum(os.path.getsize(p) for _, p in files)
    print(f"Spectrum over {len(files)} files ({size / 1e6:.1f} MB, {args.files * args.entries} entries):")
    print(f"  with the basket check {with_check:.3f} s, without {without:.3f} s "
          f"(difference {(with_check - without) / without:+.1%})")
    print(f"  the check alone {check * 1e3:.2f} ms = {check / without:.2%} of the stage")

    spec_list = spectra_of(cfg, files)
    plan = plan_job(cfg, spec_list, 0, 1)
    shard = os.path.join(args.workdir, "shard_0.root")
    manifest = os.path.join(args.workdir, "manifest_0.json")

    def shuffle():
        run_job(cfg, 0, plan.segments, plan.P, plan.p_class, shard, manifest, group_classes=plan.group_classes,
                N=plan.N)

    t_shuffle = best(shuffle, args.repeat)
    t_sha = best(lambda: file_sha256(shard), max(args.repeat, 5))
    job = feature_scaling_job(cfg, [shard])
    t_fs = best(lambda: feature_scaling_job(cfg, [shard]), args.repeat)
    scaling = scaling_parameters(cfg, statistics_from_json(job["moments"]))
    outs = {s: os.path.join(args.workdir, f"{s}_0.h5") for s in ("train", "validation", "test")}
    t_wts = best(lambda: write_train_sample(cfg, [shard], scaling, outs), args.repeat)
    t_val = best(lambda: validate_shards(cfg, [shard], os.path.join(args.workdir, "val"), plots=False),
                 args.repeat)
    t_val_plots = best(lambda: validate_shards(cfg, [shard], os.path.join(args.workdir, "val")), args.repeat)
    mb = os.path.getsize(shard) / 1e6
    print(f"shard {mb:.1f} MB: sha256 {t_sha * 1e3:.1f} ms ({mb / t_sha:.0f} MB/s)")
    for name, t in (("ShuffleMergeSpectral job (writes it)", t_shuffle), ("FeatureScaling", t_fs),
                    ("WriteTrainSample", t_wts), ("ShardValidation (no plots)", t_val),
                    ("ShardValidation (with its plots, as the task)", t_val_plots)):
        print(f"  {name}: {t:.3f} s, sha256 = {t_sha / t:.2%} of it")


if __name__ == "__main__":
    main()
