"""Task runs through `law run` (subprocesses): two runs of one task on the same outputs at once (the
second waits for the first's lock, then finds the outputs complete and does nothing); a real task's
outputs honour the umask."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time

import pytest

from conftest import REPO, tiny_raw, write_config

TESTS = os.path.dirname(os.path.abspath(__file__))


def _law_env(tmp) -> dict:
    env = dict(os.environ)
    env.update({"PYTHONPATH": f"{REPO}:{TESTS}", "LAW_CONFIG_FILE": os.path.join(REPO, "law.cfg"),
                "LAW_HOME": str(tmp / "law_home"), "TAGGERFLOW_DATA": str(tmp / "data"),
                "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"})
    return env


def _law_bin() -> str:
    return shutil.which("law", path=os.path.dirname(sys.executable)) or shutil.which("law")


def _wait_for(predicate, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_second_concurrent_run_waits_and_does_not_redo_the_work(tmp_path):
    env = _law_env(tmp_path)
    log, release = tmp_path / "work.log", tmp_path / "release"
    args = [_law_bin(), "run", "lock_task.SlowOutput", "--version", "lock", "--work-log", str(log),
            "--release", str(release)]
    outs = [open(tmp_path / f"run{i}.out", "w+") for i in range(2)]
    first = subprocess.Popen(args, env=env, cwd=REPO, stdout=outs[0], stderr=subprocess.STDOUT)
    second = None
    try:
        _wait_for(lambda: log.exists() and log.read_text(), "the first run to start its work")
        second = subprocess.Popen(args, env=env, cwd=REPO, stdout=outs[1], stderr=subprocess.STDOUT)
        _wait_for(lambda: "waiting for" in (tmp_path / "run1.out").read_text(), "the second run to wait")
        release.touch()
        assert first.wait(timeout=120) == 0
        assert second.wait(timeout=120) == 0
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    text = [(tmp_path / f"run{i}.out").read_text() for i in range(2)]
    # the work was done once, by the first run; the second waited for its lock, then had nothing to do
    assert log.read_text() == f"{first.pid}\n"
    lock_file = next(line for line in text[1].splitlines() if "waiting for" in line)
    assert "/SlowOutput/lock/" in lock_file and lock_file.rstrip().endswith(f" {first.pid}")
    assert "outputs were completed by a concurrent run, nothing to do" in text[1]
    out_dir = next((tmp_path / "data" / "SlowOutput" / "lock").iterdir())
    assert (out_dir / "out.txt").read_text() == f"written by {first.pid}\n"
    assert os.listdir(out_dir) == ["out.txt"]   # neither lock file nor temporary file stays


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_task_outputs_honour_the_umask(tmp_path, umask, file_mode, dir_mode):
    env = _law_env(tmp_path)
    config = write_config(tiny_raw(entries_per_file=200), tmp_path)
    proc = subprocess.run([_law_bin(), "run", "tasks.spectrum.Spectrum", "--version", "modes", "--config", config,
                           "--branch", "0"], env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
                          umask=umask)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files, dirs = [], []
    for root, dnames, fnames in os.walk(tmp_path / "data"):
        dirs += [os.path.join(root, d) for d in dnames]
        files += [os.path.join(root, f) for f in fnames]
    names = sorted(os.path.basename(f) for f in files)
    # the demo inputs (ROOT, through the temporary folder) and the spectrum (npz and ROOT)
    assert names == sorted(["DY_0.root", "TT_0.root", "WJets_0.root", "QCD_0.root", "spectrum_0.npz",
                            "spectrum_0.root"])
    assert {f: oct(stat.S_IMODE(os.stat(f).st_mode)) for f in files} == {f: oct(file_mode) for f in files}
    assert {d: oct(stat.S_IMODE(os.stat(d).st_mode)) for d in dirs} == {d: oct(dir_mode) for d in dirs}


def test_rerun_after_sigkill_leaves_nothing_hidden(tmp_path):
    """`law run` killed (SIGKILL, whole process group) while writing a demo file: the kill leaves the
    temporary folder and the lock file; the rerun writes the file and removes both."""
    import signal

    import uproot

    env = _law_env(tmp_path)
    config = write_config(tiny_raw(entries_per_file=200_000), tmp_path)
    args = [_law_bin(), "run", "tasks.demo.GenerateDemoSamples", "--version", "kill", "--config", config,
            "--branch", "0"]
    data = tmp_path / "data"

    def hidden() -> list[str]:
        return sorted(os.path.relpath(os.path.join(root, n), data) for root, dnames, fnames in os.walk(data)
                      for n in dnames + fnames if n.startswith("."))

    proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        def writing() -> bool:   # the ROOT file in the temporary folder has got its first basket
            return any(n.endswith("DY_0.root") and os.path.getsize(os.path.join(r, n)) > 100_000
                       for r, _, names in os.walk(data) for n in names if ".tmp-" in r)
        _wait_for(writing, "the demo file to be half written")
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    left = hidden()
    assert [os.path.basename(p).split(".tmp-")[0] for p in left] == [".lock-0", ".DY_0.root"], left
    assert os.listdir(data / left[1]) == ["DY_0.root"]          # the half-written file, in the temp folder
    assert not (data / left[1]).parent.joinpath("DY_0.root").exists()   # nothing under the final name

    rerun = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert hidden() == []
    (out,) = data.rglob("DY_0.root")
    assert uproot.open(out)["candidates"].num_entries == 200_000
