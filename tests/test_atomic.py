"""Atomic writes (taggerflow.utils.AtomicOutput, atomic_path and its folder mode): what a writer killed with
SIGKILL leaves is removed by the next write of the same output, and only that; outputs get the modes
the umask gives; the per-output lock of task runs."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from conftest import REPO
from taggerflow.utils import atomic_path, output_lock, remove_stale_temps, temp_name

# a writer that stops inside the atomic block (after writing part of its output) until it is killed
WRITER = """
import sys, time
from taggerflow.utils import atomic_path
out, mode = sys.argv[1], sys.argv[2]
block = atomic_path(out, folder=mode == "folder")
with block as tmp:
    with open(tmp, "wb") as f:
        f.write(b"partial")
    print(tmp, flush=True)
    time.sleep(600)
"""


def _start_writer(out: str, mode: str) -> tuple[subprocess.Popen, str]:
    """A writer of ``out`` stopped inside its atomic block; returns it and its temporary path."""
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, out, mode], stdout=subprocess.PIPE, text=True, env=env)
    tmp = proc.stdout.readline().strip()
    assert tmp and os.path.exists(tmp), (out, tmp, proc.poll())
    return proc, tmp


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def _entry(tmp: str, folder: str) -> str:
    """The name directly in ``folder`` of a temporary path (the temporary folder in folder mode)."""
    return os.path.relpath(tmp, folder).split(os.sep)[0]


@pytest.mark.parametrize("mode", ["file", "folder"])
def test_next_write_removes_only_the_killed_writers_temps(tmp_path, mode):
    name = "DY_0.root" if mode == "folder" else "train_3.h5"
    out, other = str(tmp_path / name), str(tmp_path / f"x{name}")
    killed, killed_tmp = _start_writer(out, mode)
    killed_other, other_tmp = _start_writer(other, mode)
    live, live_tmp = _start_writer(out, mode)
    try:
        _kill(killed)
        _kill(killed_other)
        # what the kills left: a hidden temp of each output, named after output, host and writer
        assert os.path.exists(killed_tmp) and os.path.exists(other_tmp)
        host = socket.gethostname().replace(".", "_")
        assert _entry(killed_tmp, str(tmp_path)).startswith(f".{name}.tmp-{host}-{killed.pid}-")
        before = set(os.listdir(tmp_path))
        assert len(before) == 3

        # the next write of `out` (this process) removes the killed writer's temp, only that one
        block = atomic_path(out, folder=mode == "folder")
        with block as tmp:
            with open(tmp, "wb") as f:
                f.write(b"complete")
        with open(out, "rb") as f:
            assert f.read() == b"complete"
        assert not os.path.exists(killed_tmp)
        assert os.path.exists(live_tmp) and os.path.exists(other_tmp)   # a live writer, another output
        assert set(os.listdir(tmp_path)) == before - {_entry(killed_tmp, str(tmp_path))} | {name}

        # the live writer, killed in turn, is cleaned up by the next write; the other output's temp
        # only by a write of the other output
        _kill(live)
        assert remove_stale_temps(out) == [os.path.join(str(tmp_path), _entry(live_tmp, str(tmp_path)))]
        assert remove_stale_temps(out) == []
        assert set(os.listdir(tmp_path)) == {name, _entry(other_tmp, str(tmp_path))}
        with atomic_path(other) as tmp:
            open(tmp, "wb").close()
        assert sorted(os.listdir(tmp_path)) == sorted([name, f"x{name}"])
    finally:
        for p in (killed, killed_other, live):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_temps_of_other_hosts_only_removed_under_the_lock(tmp_path):
    out = tmp_path / "model.onnx"
    # a temp that a writer on another host left (its pid cannot be asked), one of a writer of this
    # host that is gone (a pid above the kernel's maximum), and files that only look like temps
    foreign = tmp_path / ".model.onnx.tmp-wn042-1234-0123abcd.onnx"
    gone = tmp_path / f".model.onnx.tmp-{socket.gethostname().replace('.', '_')}-99999999-89abcdef.onnx"
    lookalikes = [tmp_path / ".model.onnx.tmp-notes", tmp_path / ".model.onnx.tmp-wn042-1234-0123abcd-x",
                  tmp_path / ".model.onnx.tmp-wn042.tmp-wn042-1234-0123abcd.onnx"]  # output "model.onnx.tmp-wn042"
    for p in (foreign, gone, *lookalikes):
        p.write_bytes(b"x")
    assert remove_stale_temps(out) == [str(gone)]
    assert foreign.exists()
    with output_lock(tmp_path / ".lock-0"):
        assert remove_stale_temps(out) == [str(foreign)]
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in lookalikes)
    assert temp_name("model.onnx", ".onnx").startswith(".model.onnx.tmp-")


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_outputs_honour_the_umask(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        plain = tmp_path / "new" / "sub" / "a.json"
        with atomic_path(plain) as tmp:
            os.chmod(tmp, 0o600)          # as a library writing through mkstemp would leave it
            with open(tmp, "w") as f:
                f.write("{}")
        root = tmp_path / "new" / "DY_0.root"
        with atomic_path(str(root), folder=True) as tmp:
            assert stat.S_IMODE(os.stat(os.path.dirname(tmp)).st_mode) == dir_mode
            with open(tmp, "wb") as f:
                f.write(b"root")
        tree = tmp_path / "new" / "saved_model"
        with atomic_path(str(tree), folder=True) as tmp:   # a directory as output (folder mode)
            os.makedirs(os.path.join(tmp, "variables"), mode=0o700)
            with open(os.path.join(tmp, "variables", "w.bin"), "wb") as f:
                f.write(b"w")
    finally:
        os.umask(old)
    for path in (plain, root, tree / "variables" / "w.bin"):
        assert stat.S_IMODE(os.stat(path).st_mode) == file_mode, path
    for path in (tmp_path / "new", tmp_path / "new" / "sub", tree, tree / "variables"):
        assert stat.S_IMODE(os.stat(path).st_mode) == dir_mode, path
    assert sorted(os.listdir(tmp_path / "new")) == ["DY_0.root", "saved_model", "sub"]


def test_output_lock_is_exclusive_and_leaves_no_file(tmp_path):
    lock = tmp_path / "out" / ".lock-3"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom taggerflow.utils import output_lock\n"
        "with output_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)\n"), str(lock)],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=REPO))
    try:
        assert holder.stdout.readline() == "held\n"
        assert lock.read_text() == f"{socket.gethostname()} {holder.pid}\n"
        messages: list[str] = []
        waiter_started = time.monotonic()
        killer = subprocess.Popen(["sh", "-c", f"sleep 1; kill -9 {holder.pid}"])
        with output_lock(lock, on_wait=messages.append):
            waited = time.monotonic() - waiter_started
            assert holder.wait(timeout=30) == -signal.SIGKILL   # it got the lock once the holder died
            with output_lock(lock):                              # re-entrant
                pass
            assert lock.read_text() == f"{socket.gethostname()} {os.getpid()}\n"
        killer.wait()
        assert waited >= 0.9
        assert messages == [f"waiting for {lock}, held by {socket.gethostname()} {holder.pid}"]
        assert os.listdir(lock.parent) == []
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_taking_a_lock_removes_the_unheld_locks_beside_it(tmp_path):
    """A run killed between its last output and its release leaves its lock file: the next lock taken
    in that output directory removes it, never one that a live process holds."""
    out = tmp_path / "out"
    code = ("import sys, time\nfrom taggerflow.utils import output_lock\n"
            "with output_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)\n")
    env = dict(os.environ, PYTHONPATH=REPO)
    killed = subprocess.Popen([sys.executable, "-c", code, str(out / ".lock-2")], stdout=subprocess.PIPE,
                              text=True, env=env)
    live = subprocess.Popen([sys.executable, "-c", code, str(out / ".lock-1")], stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert killed.stdout.readline() == "held\n" and live.stdout.readline() == "held\n"
        _kill(killed)
        (out / ".locksmith").write_text("not a lock of ours")
        assert sorted(os.listdir(out)) == [".lock-1", ".lock-2", ".locksmith"]
        with output_lock(out / ".lock-0"):
            assert sorted(os.listdir(out)) == [".lock-0", ".lock-1", ".locksmith"]
        assert (out / ".lock-1").read_text() == f"{socket.gethostname()} {live.pid}\n"
    finally:
        for proc in (killed, live):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
