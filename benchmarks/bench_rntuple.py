"""RNTuple against TTree: Spectrum of the same NanoAOD events stored both ways (issue 17 item 5).

coffea's nano_dy.root and its RNTuple twin nano_dy_rntuple.root (tests/data/coffea), each copied
N times (N files = N separate opens, as a dataset of many files is read). Each format is measured in
a fresh Python process (uproot caches nothing across processes), best of R repeats; the figure is
the RNTuple/TTree wall-time ratio of Spectrum (file_spectrum over every file: open, integrity check,
counts), which the issue wants within 1.5x, plus the ratio of reading the training variables.

    python benchmarks/bench_rntuple.py [--files 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COFFEA = os.path.join(REPO, "tests", "data", "coffea")
TWINS = {"ttree": "nano_dy.root", "rntuple": "nano_dy_rntuple.root"}

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
from taggerflow.config import config_from_dict
from taggerflow.spectrum import file_spectrum
from taggerflow.readers import input_spec, open_source, read_prepared
from test_diagnostics import nano_raw
files = sys.argv[3:]
cfg = config_from_dict(nano_raw({"DY": files}), sys.argv[2])
t_import = time.perf_counter() - t0
t0 = time.perf_counter()
cands = sum(file_spectrum(cfg, f, "DY")["candidates"] for f in files)
t_spectrum = time.perf_counter() - t0
spec = input_spec(cfg, "DY")
t0 = time.perf_counter()
n = 0
for f in files:
    src = open_source(spec, f)
    try:
        n += len(read_prepared(spec, src, 0, src.num_entries, ["pt", "eta", "genPartFlav"])[0])
    finally:
        src.close()
t_read = time.perf_counter() - t0
print(json.dumps({"import_s": t_import, "spectrum_s": t_spectrum, "read_s": t_read, "candidates": cands, "read": n}))
"""


def measure(files: list[str], config_path: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, REPO, config_path, *files], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench_rntuple_")
    try:
        best: dict[str, dict] = {}
        for fmt, name in TWINS.items():
            files = []
            for i in range(args.files):
                dst = os.path.join(work, f"{fmt}_{i}.root")
                shutil.copyfile(os.path.join(COFFEA, name), dst)
                files.append(dst)
            runs = [measure(files, os.path.join(work, "c.yaml")) for _ in range(args.repeats)]
            best[fmt] = {k: min(r[k] for r in runs) for k in ("spectrum_s", "read_s")}
            best[fmt]["candidates"] = runs[0]["candidates"]
            best[fmt]["read"] = runs[0]["read"]
        assert best["ttree"]["candidates"] == best["rntuple"]["candidates"]
        print(f"{args.files} files x 40 events ({best['ttree']['candidates']} taus), best of {args.repeats}")
        for fmt in TWINS:
            b = best[fmt]
            print(f"  {fmt:8s} Spectrum {b['spectrum_s']:.3f} s   read variables {b['read_s']:.3f} s")
        for k, label in (("spectrum_s", "Spectrum"), ("read_s", "read")):
            print(f"  RNTuple/TTree {label}: {best['rntuple'][k] / best['ttree'][k]:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
