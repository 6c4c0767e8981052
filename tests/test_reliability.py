"""Reliability: kill -9 the pipeline at a random point and rerun it.

A multi-stage part of the real pipeline (GenerateDemoSamples -> Spectrum -> ShuffleMergeSpectral ->
FeatureScaling -> MergeScaling -> WriteTrainSample, 30 files) runs with `law run ... --workflow local`
on the tiny configuration, once uninterrupted (the reference), then three times in fresh output
directories, each killed with SIGKILL (the whole process group) at a seeded pseudo-random point and
rerun to completion. Asserted:

- at the moment of the kill, every final output name that exists is complete: its bytes are those of
  the reference run (anything else present is a temporary name: a dot-name beside the output, a
  ``.<name>.*.tmp`` folder, or ``<name>.<pid>.tmp``);
- after the rerun, the same set of final outputs as the reference, byte for byte.

Byte comparison needs equal paths: outputs record the absolute paths of their inputs (manifests, train
files, scaling reports), so every run writes through the same ``TAGGERFLOW_DATA`` path, a symbolic link
that is pointed at the run's own directory before the run starts.

Every output is byte-reproducible, the demo input files included (taggerflow.io.reproducible_root
fixes the UUID and the clock uproot writes into ROOT files).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, tiny_raw, write_config

TASK = "WriteTrainSample"
SEED = 20240611
N_KILLS = 4

# temporary names of the writers: taggerflow.utils.atomic_path and the train-sample writer
# (".<name>.<random><suffix>" beside the output) and taggerflow.io.atomic_output (a ".<name>.<random>.tmp"
# folder beside it)
TEMPORARY = re.compile(r"(^|/)\.[^/]+")


def _law_bin() -> str:
    return shutil.which("law", path=os.path.dirname(sys.executable)) or shutil.which("law")


def _env(tmp, data_link) -> dict:
    env = dict(os.environ)
    env.update({"PYTHONPATH": REPO, "LAW_CONFIG_FILE": os.path.join(REPO, "law.cfg"),
                "LAW_HOME": str(tmp / "law_home"), "TAGGERFLOW_DATA": str(data_link),
                "TF_CPP_MIN_LOG_LEVEL": "2"})
    env.pop("SOURCE_DATE_EPOCH", None)
    return env


def _point(link, target) -> None:
    """Point the TAGGERFLOW_DATA link at ``target`` (atomically)."""
    os.makedirs(target, exist_ok=True)
    tmp = f"{link}.new"
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _files(root) -> dict[str, str]:
    """{path relative to root: absolute path} of every file below root."""
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            out[os.path.relpath(p, root)] = p
    return out


def _digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _same(rel, path, ref_path) -> bool:  # noqa: ARG001
    return _digest(path) == _digest(ref_path)


def _run(args, env, timeout=300) -> subprocess.CompletedProcess:
    proc = subprocess.run([_law_bin(), "run", *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"law run failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reliability")
    link = tmp / "data"
    env = _env(tmp, link)
    config = write_config(tiny_raw(), tmp)
    args = [TASK, "--version", "rel", "--config", config, "--workflow", "local"]
    subprocess.run([_law_bin(), "index", "-q"], env=env, cwd=REPO, check=True, timeout=120)
    _point(link, tmp / "reference")
    # the reference run, watched: the time from its first file to its end is what the kills spread over
    proc = subprocess.Popen([_law_bin(), "run", *args], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    first = None
    while proc.poll() is None:
        if first is None and _files(tmp / "reference"):
            first = time.monotonic()
        time.sleep(0.01)
    active = time.monotonic() - first
    out = proc.stdout.read()
    assert proc.returncode == 0, out[-4000:]
    files = _files(tmp / "reference")
    assert not [r for r in files if TEMPORARY.search(r)]  # an uninterrupted run leaves no temporary file
    # the whole chain ran: every stage wrote its outputs
    stages = {r.split("/")[0] for r in files}
    assert stages == {"GenerateDemoSamples", "Spectrum", "ShuffleMergeSpectral", "FeatureScaling",
                      "MergeScaling", "WriteTrainSample"}
    assert len(files) >= 30
    return {"tmp": tmp, "link": link, "env": env, "args": args, "files": files, "active": active}


def test_two_uninterrupted_runs_give_the_same_bytes(reference):
    """What the kill test relies on: every output of the chain is reproducible, byte for byte."""
    tmp, ref = reference["tmp"], reference["files"]
    _point(reference["link"], tmp / "second")
    _run(reference["args"], reference["env"])
    second = _files(tmp / "second")
    assert sorted(second) == sorted(ref)
    differ = sorted(r for r in ref if _digest(second[r]) != _digest(ref[r]))
    assert differ == []


def _kill_points(active: float) -> list[float]:
    """Seeded kill moments, in seconds after the run's first file appears, one in each of N_KILLS
    equal parts of the reference run's active time (first file to end), so that the kills land in
    different stages of the chain and at random moments of them (writing a file, computing, starting
    the next task). The last 15 % are left out: a run slightly faster than the reference must still
    be running at its kill."""
    rng = random.Random(SEED)
    part = 0.85 * active / N_KILLS
    return [round(rng.uniform(i * part, (i + 1) * part), 3) for i in range(N_KILLS)]


def _run_and_kill(args, env, run_dir, delay: float) -> int:
    """Start the run, SIGKILL its process group ``delay`` s after its first file appeared; its exit code."""
    proc = subprocess.Popen([_law_bin(), "run", *args], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not _files(run_dir) and proc.poll() is None:  # the first file: tasks are running
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(delay)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: law and any worker it started
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("kill", range(N_KILLS))
def test_kill_at_a_random_point_and_rerun(reference, kill):
    tmp, ref, env = reference["tmp"], reference["files"], reference["env"]
    delay = _kill_points(reference["active"])[kill]
    run_dir = tmp / f"killed_{kill}"

    # a run faster than the reference may finish before its kill: then the same point is tried again,
    # earlier (0.6 times the delay), in a fresh directory
    for attempt in range(4):
        shutil.rmtree(run_dir, ignore_errors=True)
        _point(reference["link"], run_dir)
        returncode = _run_and_kill(reference["args"], env, run_dir, delay)
        if returncode == -signal.SIGKILL and len([r for r in _files(run_dir) if r in ref]) < len(ref):
            break
        # finished, or killed after its last output while exiting: too late to test anything
        assert returncode in (0, -signal.SIGKILL)
        delay = round(delay * 0.6, 3)
    # the kill interrupted the run (it had not finished yet)
    assert returncode == -signal.SIGKILL

    # the moment of the kill: every existing final output is complete; all else is a temporary name
    present = _files(run_dir)
    final = {r: p for r, p in present.items() if r in ref}
    others = sorted(r for r in present if r not in ref)
    assert all(TEMPORARY.search(r) for r in others), others
    incomplete = sorted(r for r, p in final.items() if not _same(r, p, ref[r]))
    assert not incomplete, f"half-written outputs visible at a kill {delay} s into the run: {incomplete}"
    assert len(final) < len(ref)  # the kill landed inside the chain, not after it

    # the rerun completes the chain: the same final outputs, byte for byte (or by content, see above)
    _run(reference["args"], env)
    after = _files(run_dir)
    assert sorted(r for r in after if r in ref) == sorted(ref)
    differ = sorted(r for r in ref if not _same(r, after[r], ref[r]))
    assert not differ, differ
    # the rerun leaves no new temporary file (a temporary file of the killed run may stay: no writer
    # knows it was its own; it never carries a final name)
    leftover = sorted(r for r in after if r not in ref)
    assert set(leftover) <= set(others), leftover
