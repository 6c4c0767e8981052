"""taggerflow's chain Spectrum + ShuffleMergeSpectral + FeatureScaling + MergeScaling + WriteTrainSample,
run through the core functions the law tasks call, one stage after the other in one process (as
`law run WriteTrainSample --workers 1` would). Prints one line ``RESULT {...}`` with the time of each
stage and the candidates written. Used by bench_vs_upp.py."""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import numpy as np

    from taggerflow.config import load_config
    from taggerflow.resample import acceptance, run_job, split_entries
    from taggerflow.scaling import accumulate, merge_statistics, scaling_parameters
    from taggerflow.spectrum import coarse_counts, fine_edges, file_spectrum
    from taggerflow.trainsample import write_train_sample
    from taggerflow.utils import write_json

    cfg = load_config(args.config)
    rs = cfg.raw["resampling"]
    os.makedirs(args.out, exist_ok=True)
    times = {}
    peaks = {}

    def peak_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    t = time.perf_counter()
    pt_e, eta_e = fine_edges(cfg)
    files: dict[str, list] = {}
    coarse: dict = {}
    n_in = 0
    for ds, paths in cfg.dataset_files().items():
        for path in paths:
            res = file_spectrum(cfg, path)
            counts = res["counts_flow"]
            coarse[ds] = coarse.get(ds, 0) + coarse_counts(counts, pt_e, eta_e, rs["pt_bins"], rs["eta_bins"])
            files.setdefault(ds, []).append((path, res["entries"]))
            n_in += int(res["entries"])
    times["Spectrum"] = time.perf_counter() - t
    peaks["Spectrum"] = peak_mb()

    t = time.perf_counter()
    P, p = acceptance(coarse, cfg.class_names, rs["class_ratio"], bool(rs["enable_emptybin"]),
                      rs["pt_bins"], rs["eta_bins"])
    shards = []
    for j in range(int(rs["n_jobs"])):
        segs = {ds: split_entries(f, int(rs["n_jobs"]))[j] for ds, f in files.items()}
        shard = os.path.join(args.out, f"shard_{j}.root")
        run_job(cfg, j, segs, P, p, shard, os.path.join(args.out, f"manifest_{j}.json"))
        shards.append(shard)
    times["ShuffleMergeSpectral"] = time.perf_counter() - t
    peaks["ShuffleMergeSpectral"] = peak_mb()

    t = time.perf_counter()
    stats = [accumulate(cfg, [s]) for s in shards]
    times["FeatureScaling"] = time.perf_counter() - t
    peaks["FeatureScaling"] = peak_mb()
    t = time.perf_counter()
    scaling = scaling_parameters(cfg, merge_statistics(stats))
    write_json(os.path.join(args.out, "scaling.json"), scaling)
    times["MergeScaling"] = time.perf_counter() - t
    peaks["MergeScaling"] = peak_mb()

    t = time.perf_counter()
    written = {"train": 0, "validation": 0, "test": 0}
    per_class = np.zeros(len(cfg.class_names), dtype=np.int64)
    for j, shard in enumerate(shards):
        outputs = {s: os.path.join(args.out, f"{s}_{j}.h5") for s in written}
        for s in outputs.values():
            if os.path.exists(s):
                os.remove(s)
        for s, n in write_train_sample(cfg, [shard], scaling, outputs).items():
            written[s] += n
    times["WriteTrainSample"] = time.perf_counter() - t
    peaks["WriteTrainSample"] = peak_mb()
    for j in range(len(shards)):
        m = json.load(open(os.path.join(args.out, f"manifest_{j}.json")))
        per_class += np.array([m["written_per_class"][c] for c in cfg.class_names])
    out_bytes = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out) if f.endswith(".h5"))
    print("RESULT " + json.dumps({"times": times, "peak_rss_mb_after": peaks, "input": n_in, "written": written,
                                  "per_class": dict(zip(cfg.class_names, per_class.tolist())),
                                  "out_mb": out_bytes / 1e6}), flush=True)


if __name__ == "__main__":
    main()
