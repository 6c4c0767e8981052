"""Run a command; print its wall time and the peak RSS of its largest process as one JSON line
``MEASURE {...}`` (RUSAGE_CHILDREN of this small wrapper covers only the command)."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

if __name__ == "__main__":
    t0 = time.perf_counter()
    rc = subprocess.call(sys.argv[1:])
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print("MEASURE " + json.dumps({"rc": rc, "wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024,
                                   "cpu_s": usage.ru_utime + usage.ru_stime}), flush=True)
    sys.exit(rc)
