"""taggerflow against umami-preprocessing (UPP) on the same TDD-style HDF5 input.

    .venv/bin/python benchmarks/bench_vs_upp.py [--jets 2000000] [--workdir /tmp/tf_bench_upp]

Input (prepared once, cached, not timed): atlas-ftag-tools' ``ftag.get_mock_file`` in chunks of
--chunk jets with 40 tracks each, a different seed per chunk (get_mock_file fixes seed 42 inside:
the seed is swapped in while each chunk is made). taggerflow reads ROOT candidate trees only, so
the same jets are converted to our layout (jet branches; the valid tracks as the jagged collection
``tracks``; pt in GeV; event = jet index), also not timed.

Timed, each in its own process, one after the other:
- taggerflow: Spectrum + ShuffleMergeSpectral + FeatureScaling + MergeScaling + WriteTrainSample
  (benchmarks/_ours_chain.py; lzf output, float32);
- UPP: ``preprocess --config ... --no-plot`` (prep, resample, merge, norm of the train split) in its
  own virtualenv (--upp-venv, created with pip when missing: umami-preprocessing==0.3.3).
Equivalent configuration: classes b/c/light (HadronConeExclTruthLabelID 5/4/0), 50 pt bins in
[20, 400) GeV x 10 |eta| bins in [0, 2.5), the same jet and track variables, and UPP asked for
as many jets per class as taggerflow wrote (all splits together).
Prints input jets/s of both, the ratio, and the peak RSS of each.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
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
            continue
        ftag.mock.np.random.default_rng = lambda *a, _s=1000 + i, **k: real(_s)  # seed per chunk
        try:
            _, f = ftag.get_mock_file(min(chunk, n_jets - start), fname=path + ".tmp", num_tracks=40)
            f.close()
        finally:
            ftag.mock.np.random.default_rng = real
        os.replace(path + ".tmp", path)
    return paths


def to_root(h5_path: str, root_path: str, first_event: int) -> int:
    """One TDD HDF5 file -> our candidate tree (not timed)."""
    import awkward as ak
    import h5py
    import uproot

    if os.path.exists(root_path):
        with uproot.open(root_path) as f:
            return int(f["candidates"].num_entries)
    with h5py.File(h5_path, "r") as f:
        jets, tracks = f["jets"][:], f["tracks"][:]
    n = len(jets)
    valid = tracks["valid"]
    counts = valid.sum(axis=1)
    data = {"pt": (jets["pt"] / 1000).astype(np.float32), "eta": jets["eta"].astype(np.float32),
            "mass": (jets["mass"] / 1000).astype(np.float32),
            "event": np.arange(first_event, first_event + n, dtype=np.uint64),
            "HadronConeExclTruthLabelID": jets["HadronConeExclTruthLabelID"].astype(np.int32)}
    for v in JET_VARS:
        data[v] = jets[v]
    data["tracks"] = ak.zip({v: ak.unflatten(tracks[v][valid], counts) for v in FLOAT_TRACK_VARS + HIT_VARS})
    tmp = root_path + ".tmp"
    with uproot.recreate(tmp, compression=uproot.ZSTD(5)) as out:
        out.mktree("candidates", {k: (v.type.content if isinstance(v, ak.Array) else v.dtype) for k, v in data.items()})
        out["candidates"].extend(data)
    os.replace(tmp, root_path)
    return n


def taggerflow_raw(root_glob: str, chunk_size: int = 50_000, mix_buffer: int = 50_000) -> dict:
    pt_bins = [round(float(x), 6) for x in np.linspace(*PT_RANGE, N_PT + 1)]
    eta_bins = [round(float(x), 6) for x in np.linspace(0, ETA_MAX, N_ETA + 1)]
    track_vars = {v: {"scaling": "normal", "limits": [-5, 5]} for v in FLOAT_TRACK_VARS}
    track_vars.update({v: {"scaling": "normal"} for v in VARIED_HITS})
    return {
        "name": "vs_upp", "seed": 1,
        "inputs": {"format": "candidate_tree", "tree": "candidates", "chunk_size": chunk_size,
                   "datasets": {"mock": {"files": [root_glob]}}},
        "classes": {"truth_branch": "HadronConeExclTruthLabelID", "labels": {k: [v] for k, v in CLASSES.items()}},
        # fine bins of 0.2 GeV x 0.05 so that the 50 x 10 resampling bins lie on their edges
        "spectrum": {"pt_fine": {"start": PT_RANGE[0], "stop": PT_RANGE[1], "n_bins": 1900},
                     "abs_eta_fine": {"start": 0.0, "stop": ETA_MAX, "n_bins": 50}},
        "resampling": {"n_jobs": 4, "pt_bins": pt_bins, "eta_bins": eta_bins,
                       "class_ratio": {k: 1 for k in CLASSES}, "mix_buffer": mix_buffer},
        "features": {"candidate": {v: {"scaling": "normal", "limits": [-5, 5]} for v in JET_VARS},
                     "collections": {"tracks": {"n_max": 40, "variables": track_vars}}},
        "train_sample": {"split": {"train": 0.7, "validation": 0.15, "test": 0.15}, "precision": "float32",
                         "compression": "lzf", "chunk_rows": 1024},
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
    os.makedirs(os.path.join(w, "root"), exist_ok=True)
    n_jets, first = 0, 0
    for h5 in h5s:
        n = to_root(h5, os.path.join(w, "root", os.path.basename(h5).replace(".h5", ".root")), first)
        first += n
        n_jets += n
    tdd_mb = sum(os.path.getsize(p) for p in h5s) / 1e6
    root_mb = sum(os.path.getsize(p) for p in glob.glob(os.path.join(w, "root", "*.root"))) / 1e6
    print(f"input: {n_jets} jets x 40 track slots in {len(h5s)} TDD-style files ({tdd_mb:.0f} MB), converted to "
          f"our ROOT layout ({root_mb:.0f} MB); prepared in {time.perf_counter() - t:.0f} s (not timed)", flush=True)

    # taggerflow
    cfg_path = os.path.join(w, "taggerflow.yaml")
    with open(cfg_path, "w") as f:
        yaml.safe_dump(taggerflow_raw(os.path.join(w, "root", "mock_*.root"), args.chunk_size, args.mix_buffer), f,
                       sort_keys=False)
    ours_m, text = measured([sys.executable, os.path.join(HERE, "_ours_chain.py"), "--config", cfg_path,
                             "--out", os.path.join(w, "ours_out")], os.path.join(w, "ours.log"))
    ours = json.loads([line for line in text.splitlines() if line.startswith("RESULT ")][-1][7:])
    n_out = sum(ours["written"].values())
    print(f"taggerflow: {ours_m['wall_s']:.0f} s, {n_out} jets written {ours['per_class']}, "
          f"peak RSS {ours_m['peak_rss_mb']:.0f} MB; stages {({k: round(v, 1) for k, v in ours['times'].items()})}",
          flush=True)

    result = {"jets": n_jets, "ours": {**ours_m, **ours}}
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
        print(f"\ntaggerflow / UPP input jets/s = {upp_m['wall_s'] / ours_m['wall_s']:.2f}; "
              f"peak RSS taggerflow / UPP = {ours_m['peak_rss_mb'] / upp_m['peak_rss_mb']:.2f}")
    dump(args.json, result)


if __name__ == "__main__":
    main()
