"""taggerflow against umami-preprocessing (UPP) on the same TDD-style HDF5 input.

    .venv/bin/python benchmarks/bench_vs_upp.py [--jets 2000000] [--workdir /tmp/tf_bench_upp]

Input (prepared once, cached, not timed): atlas-ftag-tools' ``ftag.get_mock_file`` in chunks of
--chunk jets with 40 tracks each, a different seed per chunk (get_mock_file fixes seed 42 inside:
the seed is swapped in while each chunk is made), plus an ``eventNumber`` jet field (the jet's index
over all files: the mock has none, real TDD files do; taggerflow's split hashes it). Both tools read
these same files: taggerflow through its HDF5 reader (``inputs.format: h5``).

Timed, each in its own process, one after the other:
- taggerflow: Spectrum + ShuffleMergeSpectral + FeatureScaling + MergeScaling + WriteTrainSample
  (benchmarks/_ours_chain.py; lzf output, float32);
- UPP: ``preprocess --config ... --no-plot`` (prep, resample, merge, norm of the train split) in its
  own virtualenv (--upp-venv, created with pip when missing: umami-preprocessing==0.3.3).
Equivalent configuration: classes b/c/light (HadronConeExclTruthLabelID 5/4/0), 50 pt bins in
[20, 400) GeV x 10 |eta| bins in [0, 2.5), the same jet and track variables (the other input
fields disabled in our shuffle, as UPP reads only the variables of its config), and UPP asked for
as many jets per class as taggerflow wrote (all splits together).

Also measured: the one-pass I/O floor, reading the input fields the chain needs once (h5py, in the
chain's chunks) plus writing the chain's output files once (same datasets, chunks and compression),
with no processing. No chain can be faster than that on this machine, so UPP's time / the floor is
the highest ratio any implementation could reach here.
Prints input jets/s of both, the ratio, the bound, and the peak RSS of each.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from _common import dump, print_table  # noqa: E402

JET_VARS = ["pt_btagJes", "eta_btagJes"]
FLOAT_TRACK_VARS = ["d0", "z0SinTheta", "dphi", "deta", "qOverP", "IP3D_signed_d0_significance",
                    "IP3D_signed_z0_significance", "phiUncertainty", "thetaUncertainty", "qOverPUncertainty"]
HIT_VARS = ["numberOfPixelHits", "numberOfSCTHits", "numberOfInnermostPixelLayerHits",
            "numberOfNextToInnermostPixelLayerHits", "numberOfInnermostPixelLayerSharedHits",
            "numberOfInnermostPixelLayerSplitHits", "numberOfPixelSharedHits", "numberOfPixelSplitHits",
            "numberOfSCTSharedHits", "numberOfPixelHoles", "numberOfSCTHoles"]
# the mock's other hit counts are all 0: UPP's normalisation (std 0) and our 'normal' scaling refuse
# constant inputs, so both use the 10 float variables and these two
VARIED_HITS = ("numberOfPixelSharedHits", "numberOfSCTSharedHits")
CLASSES = {"bjets": 5, "cjets": 4, "ujets": 0}
PT_RANGE, ETA_MAX, N_PT, N_ETA = (20.0, 400.0), 2.5, 50, 10
CHUNK_ROWS = 1024  # our train_sample.chunk_rows


def add_event_number(path: str, first: int) -> int:
    """Give the jets of one mock file an ``eventNumber`` field (first, first + 1, ...), in place."""
    import h5py

    with h5py.File(path, "r+") as f:
        jets = f["jets"][:]
        if "eventNumber" not in jets.dtype.names:
            dt = np.dtype(jets.dtype.descr + [("eventNumber", "<i8")])
            out = np.empty(len(jets), dtype=dt)
            for name in jets.dtype.names:
                out[name] = jets[name]
            out["eventNumber"] = np.arange(first, first + len(jets))
            attrs = dict(f["jets"].attrs)
            del f["jets"]
            ds = f.create_dataset("jets", data=out)
            for k, v in attrs.items():
                ds.attrs[k] = v
        return len(jets)


def make_mock_files(ntuple_dir: str, n_jets: int, chunk: int) -> list[str]:
    """TDD-like HDF5 files, one per chunk, each from get_mock_file with its own seed."""
    import ftag
    import ftag.mock

    os.makedirs(ntuple_dir, exist_ok=True)
    paths = []
    real = np.random.default_rng
    for i, start in enumerate(range(0, n_jets, chunk)):
        path = os.path.join(ntuple_dir, f"mock_{i:03d}.h5")
        paths.append(path)
        if os.path.exists(path):
            add_event_number(path, start)   # files cached by an older version of this benchmark
            continue
        ftag.mock.np.random.default_rng = lambda *a, _s=1000 + i, **k: real(_s)  # seed per chunk
        try:
            _, f = ftag.get_mock_file(min(chunk, n_jets - start), fname=path + ".tmp", num_tracks=40)
            f.close()
        finally:
            ftag.mock.np.random.default_rng = real
        add_event_number(path + ".tmp", start)
        os.replace(path + ".tmp", path)
    return paths


def used_fields() -> tuple[list[str], list[str]]:
    """(jet fields, track fields) that the chain reads: everything else is disabled in the shuffle."""
    return (["pt", "eta", "eventNumber", "HadronConeExclTruthLabelID", *JET_VARS],
            FLOAT_TRACK_VARS + list(VARIED_HITS))


def disabled_fields(h5_path: str) -> list[str]:
    import h5py

    jet_used, track_used = used_fields()
    with h5py.File(h5_path, "r") as f:
        jets = [n for n in f["jets"].dtype.names if n not in jet_used]
        tracks = [f"tracks_{n}" for n in f["tracks"].dtype.names if n not in track_used and n != "valid"]
    return jets + tracks


def taggerflow_raw(h5_glob: str, disabled: list[str], chunk_size: int = 50_000, mix_buffer: int = 50_000) -> dict:
    pt_bins = [round(float(x), 6) for x in np.linspace(*PT_RANGE, N_PT + 1)]
    eta_bins = [round(float(x), 6) for x in np.linspace(0, ETA_MAX, N_ETA + 1)]
    track_vars = {v: {"scaling": "normal", "limits": [-5, 5]} for v in FLOAT_TRACK_VARS}
    track_vars.update({v: {"scaling": "normal"} for v in VARIED_HITS})
    return {
        "name": "vs_upp", "seed": 1,
        "inputs": {"format": "h5", "chunk_size": chunk_size, "datasets": {"mock": {"files": [h5_glob]}},
                   "h5": {"candidates": "jets", "constituents": {"tracks": "tracks"}, "valid": "valid"},
                   # GeV from MeV (UPP's cuts and bins are in MeV); the jet's event number for the split
                   "aliases": {"pt": "pt / 1000", "event": "eventNumber"}},
        "classes": {"truth_branch": "HadronConeExclTruthLabelID", "labels": {k: [v] for k, v in CLASSES.items()}},
        # fine bins of 0.2 GeV x 0.05 so that the 50 x 10 resampling bins lie on their edges
        "spectrum": {"pt_fine": {"start": PT_RANGE[0], "stop": PT_RANGE[1], "n_bins": 1900},
                     "abs_eta_fine": {"start": 0.0, "stop": ETA_MAX, "n_bins": 50}},
        "resampling": {"n_jobs": 4, "pt_bins": pt_bins, "eta_bins": eta_bins,
                       "class_ratio": {k: 1 for k in CLASSES}, "mix_buffer": mix_buffer,
                       "disabled_branches": disabled},
        "features": {"candidate": {v: {"scaling": "normal", "limits": [-5, 5]} for v in JET_VARS},
                     "collections": {"tracks": {"n_max": 40, "variables": track_vars}}},
        "train_sample": {"split": {"train": 0.7, "validation": 0.15, "test": 0.15}, "precision": "float32",
                         "compression": "lzf", "chunk_rows": CHUNK_ROWS},
        "records": {"chunk_size": 256},
        "training": {"batch_size": 256, "epochs": 1, "learning_rate": 0.001,
                     "model": {"type": "deepsets", "phi_layers": [8], "f_layers": [8]}},
        "export": {"n_check": 100, "tolerance": 1e-5},
    }


def upp_config(workdir: str, n_jets: int, per_class: dict[str, int], n_out: int) -> dict:
    cut = [["pt", ">=", PT_RANGE[0] * 1000], ["pt", "<", PT_RANGE[1] * 1000], ["abs_eta", "<", ETA_MAX]]
    sample = {"name": "mock", "pattern": "mock_*.h5"}
    region = {"name": "all", "cuts": cut}
    return {
        "global_cuts": {"train": [["pt", ">", 0]], "val": [["pt", ">", 0]], "test": [["pt", ">", 0]]},
        "components": [{"region": region, "sample": sample, "classes": [k], "num_global_objects": int(per_class[k])}
                       for k in CLASSES],
        "resampling": {"target": "cjets", "method": "pdf", "sampling_fraction": "auto",
                       "variables": {"pt": {"bins": [[PT_RANGE[0] * 1000, PT_RANGE[1] * 1000, N_PT]]},
                                     "abs_eta": {"bins": [[0, ETA_MAX, N_ETA]]}}},
        "global": {"batch_size": 100_000, "num_global_objects_estimate": n_jets,
                   "num_global_objects_estimate_norm": n_out,
                   "base_dir": workdir, "ntuple_dir": "ntuples", "out_dir": "upp_out"},
        "variables": {"jets": {"inputs": JET_VARS, "labels": ["pt", "eta", "HadronConeExclTruthLabelID"]},
                      "tracks": {"inputs": FLOAT_TRACK_VARS + list(VARIED_HITS)}},
    }


def io_floor(h5s: list[str], ours_out: str, floor_dir: str, chunk: int, block_rows: int) -> dict:
    """Seconds to read the input fields the chain uses once (h5py, ``chunk`` jets at a time) and to
    write the chain's output files once (bench_write_train_sample's write floor: the same datasets,
    dtypes, chunks and compression, from memory): what a chain with no processing at all would cost
    (see the module doc)."""
    import h5py

    from bench_write_train_sample import floor_write, load_outputs

    jet_used, track_used = used_fields()
    t0 = time.perf_counter()
    for p in h5s:
        with h5py.File(p, "r") as f:
            jets, tracks = f["jets"], f["tracks"]
            for start in range(0, jets.shape[0], chunk):
                jets.fields(jet_used)[start:start + chunk]
                tracks.fields(track_used + ["valid"])[start:start + chunk]
    read_s = time.perf_counter() - t0
    contents = load_outputs(sorted(glob.glob(os.path.join(ours_out, "*.h5"))))
    os.makedirs(floor_dir, exist_ok=True)
    t0 = time.perf_counter()
    floor_write(contents, floor_dir, block_rows)
    write_s = time.perf_counter() - t0
    shutil.rmtree(floor_dir, ignore_errors=True)
    return {"read_s": read_s, "write_s": write_s, "total_s": read_s + write_s}


def measured(cmd: list[str], log_path: str, env: dict | None = None) -> tuple[dict, str]:
    """Run cmd under _measure.py; its output goes to log_path; returns (measure, output)."""
    with open(log_path, "w") as log:
        rc = subprocess.call([sys.executable, os.path.join(HERE, "_measure.py"), *cmd], stdout=log,
                             stderr=subprocess.STDOUT, env=env)
    text = open(log_path).read()
    m = json.loads([line for line in text.splitlines() if line.startswith("MEASURE ")][-1][8:])
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd[:3])}... failed (rc {rc}); see {log_path}:\n{text[-3000:]}")
    return m, text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jets", type=int, default=2_000_000)
    ap.add_argument("--chunk", type=int, default=100_000, help="jets per mock file (one seed each)")
    ap.add_argument("--workdir", default="/tmp/tf_bench_upp")
    ap.add_argument("--upp-venv", default="/tmp/upp-venv")
    ap.add_argument("--chunk-size", type=int, default=50_000, help="our inputs.chunk_size (candidates per read)")
    ap.add_argument("--mix-buffer", type=int, default=50_000, help="our resampling.mix_buffer")
    ap.add_argument("--skip-upp", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    w = os.path.abspath(args.workdir)
    os.makedirs(w, exist_ok=True)

    t = time.perf_counter()
    h5s = make_mock_files(os.path.join(w, "ntuples"), args.jets, args.chunk)
    import h5py

    n_jets = 0
    for p in h5s:
        with h5py.File(p, "r") as f:
            n_jets += f["jets"].shape[0]
    tdd_mb = sum(os.path.getsize(p) for p in h5s) / 1e6
    print(f"input: {n_jets} jets x 40 track slots in {len(h5s)} TDD-style files ({tdd_mb:.0f} MB); prepared in "
          f"{time.perf_counter() - t:.0f} s (not timed)", flush=True)

    # taggerflow
    cfg_path = os.path.join(w, "taggerflow.yaml")
    with open(cfg_path, "w") as f:
        yaml.safe_dump(taggerflow_raw(os.path.join(w, "ntuples", "mock_*.h5"), disabled_fields(h5s[0]),
                                      args.chunk_size, args.mix_buffer), f, sort_keys=False)
    ours_m, text = measured([sys.executable, os.path.join(HERE, "_ours_chain.py"), "--config", cfg_path,
                             "--out", os.path.join(w, "ours_out")], os.path.join(w, "ours.log"))
    ours = json.loads([line for line in text.splitlines() if line.startswith("RESULT ")][-1][7:])
    n_out = sum(ours["written"].values())
    print(f"taggerflow: {ours_m['wall_s']:.0f} s, {n_out} jets written {ours['per_class']}, "
          f"peak RSS {ours_m['peak_rss_mb']:.0f} MB; stages {({k: round(v, 1) for k, v in ours['times'].items()})}",
          flush=True)

    result = {"jets": n_jets, "ours": {**ours_m, **ours}}
    # the writer's flush size (chunk_rows x 32), as bench_write_train_sample.py writes its floor
    floor = io_floor(h5s, os.path.join(w, "ours_out"), os.path.join(w, "floor_out"), args.chunk_size,
                     block_rows=CHUNK_ROWS * 32)
    result["floor"] = floor
    print(f"one-pass I/O floor: {floor['total_s']:.1f} s (read the input fields once {floor['read_s']:.1f} s, "
          f"write the output files once {floor['write_s']:.1f} s; no processing)", flush=True)
    if not args.skip_upp:
        venv = os.path.abspath(args.upp_venv)
        if not os.path.exists(os.path.join(venv, "bin", "preprocess")):
            subprocess.check_call([sys.executable, "-m", "venv", "--clear", venv])
            subprocess.check_call([os.path.join(venv, "bin", "pip"), "install", "-q", "umami-preprocessing==0.3.3"])
        upp_cfg = os.path.join(w, "upp.yaml")
        with open(upp_cfg, "w") as f:
            yaml.safe_dump(upp_config(w, n_jets, ours["per_class"], n_out), f, sort_keys=False)
        out_dir = os.path.join(w, "upp_out")
        for p in glob.glob(os.path.join(out_dir, "*")):
            if os.path.isfile(p):
                os.remove(p)
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        env["PATH"] = os.path.join(venv, "bin") + os.pathsep + env.get("PATH", "")
        upp_m, _ = measured([os.path.join(venv, "bin", "preprocess"), "--config", upp_cfg, "--no-plot"],
                            os.path.join(w, "upp.log"), env=env)
        import h5py

        upp_files = sorted(glob.glob(os.path.join(out_dir, "pp_output_train*.h5")))
        upp_n = sum(h5py.File(p, "r")["jets"].shape[0] for p in upp_files)
        upp_mb = sum(os.path.getsize(p) for p in upp_files) / 1e6
        result["upp"] = {**upp_m, "written": upp_n, "out_mb": upp_mb}
        rows = [("taggerflow", f"{ours_m['wall_s']:.0f}", f"{n_jets / ours_m['wall_s']:,.0f}", n_out,
                 f"{ours['out_mb']:.0f}", f"{ours_m['peak_rss_mb']:.0f}"),
                ("UPP preprocess", f"{upp_m['wall_s']:.0f}", f"{n_jets / upp_m['wall_s']:,.0f}", upp_n,
                 f"{upp_mb:.0f}", f"{upp_m['peak_rss_mb']:.0f}")]
        print_table(f"{n_jets} input jets, 40 tracks each (1 process each, {os.cpu_count()} CPUs, "
                    f"load average {os.getloadavg()[0]:.1f})", rows,
                    ("", "wall s", "input jets/s", "jets written", "output MB", "peak RSS MB"))
        print(f"\ntaggerflow / UPP input jets/s = {upp_m['wall_s'] / ours_m['wall_s']:.2f} (target >= 5); "
              f"peak RSS taggerflow / UPP = {ours_m['peak_rss_mb'] / upp_m['peak_rss_mb']:.2f}")
        print(f"UPP / one-pass I/O floor = {upp_m['wall_s'] / floor['total_s']:.2f}: the highest ratio that any "
              f"chain reading this input and writing this output could reach on this machine")
        result["ratio"] = upp_m["wall_s"] / ours_m["wall_s"]
        result["ratio_bound"] = upp_m["wall_s"] / floor["total_s"]
    dump(args.json, result)


if __name__ == "__main__":
    main()
