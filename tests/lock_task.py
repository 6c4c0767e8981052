"""A task for tests/test_task_lock.py (not a test module): its run records that it ran, waits until the
file named by ``--release`` exists, then writes its output."""

from __future__ import annotations

import os
import time

import luigi

from taggerflow.utils import atomic_path
from workflows import Task


class SlowOutput(Task):
    work_log = luigi.Parameter(description="file to which every run appends its pid")
    release = luigi.Parameter(description="the run writes its output once this file exists")

    def output(self):
        return self.local_target("out.txt")

    def run(self):
        with open(self.work_log, "a") as f:
            f.write(f"{os.getpid()}\n")
        deadline = time.monotonic() + 120
        while not os.path.exists(self.release) and time.monotonic() < deadline:
            time.sleep(0.05)
        with atomic_path(self.output().path) as tmp:
            with open(tmp, "w") as f:
                f.write(f"written by {os.getpid()}\n")
