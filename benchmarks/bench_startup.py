"""Start-up cost of the commands a user types most: ``law index``, ``law run Training --help`` and
loading a configuration in a fresh Python (what every task does when it is created).

Each command runs ``--repeat`` times as a subprocess in the current environment (source env.sh
first); the median and the range are printed in seconds. Run it in two checkouts to compare them::

    source env.sh && python benchmarks/bench_startup.py --repeat 7
    python benchmarks/bench_startup.py --importtime   # also the largest imports of a config load
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOAD = "from taggerflow.config import load_config; load_config('configs/default.yaml')"
COMMANDS = {
    "law index": ["law", "index"],
    "law run Training --help": ["law", "run", "Training", "--help"],
    "load_config(default.yaml)": [sys.executable, "-c", LOAD],
}


def timed(cmd: list[str], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out.append(time.perf_counter() - t)
    return out


def largest_imports(n: int = 8) -> list[tuple[float, str]]:
    """The modules with the largest cumulative import time of a config load (python -X importtime)."""
    res = subprocess.run([sys.executable, "-X", "importtime", "-c", LOAD], cwd=REPO, check=True,
                         capture_output=True, text=True)
    rows = []
    for line in res.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]) / 1e6, parts[2].rstrip()))
    return sorted(rows, reverse=True)[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--importtime", action="store_true")
    args = ap.parse_args()
    print(f"{'command':<28} {'median s':>9} {'min s':>7} {'max s':>7}   ({args.repeat} runs, {REPO})")
    for name, cmd in COMMANDS.items():
        ts = timed(cmd, args.repeat)
        print(f"{name:<28} {statistics.median(ts):9.3f} {min(ts):7.3f} {max(ts):7.3f}")
    if args.importtime:
        print("largest cumulative imports of a config load:")
        for sec, mod in largest_imports():
            print(f"  {sec:6.3f} s {mod}")


if __name__ == "__main__":
    main()
