"""A job run as an HTCondor worker runs it: the submit file law wrote is expanded into the job's
ClassAd by HTCondor's bindings, and the ClassAd is executed like condor_starter does: in an empty
sandbox directory holding only the transferred input files, with an empty environment plus the
ClassAd's Environment (tests/batch_jobs.py), the ClassAd's Cmd and Args; afterwards only the
ClassAd's output files are transferred back (remapped). The job is a branch of the real
pipeline (Spectrum of a tiny configuration whose GenerateDemoSamples outputs exist); its output must
appear where the task expects it.

Shared-filesystem mode runs the checkout's env.sh; bundle mode unpacks the repository bundle built by
BundleRepository and creates the environment with env.sh from the bundle, reusing this checkout's
virtual environment through a small overlay environment (``[taggerflow_htcondor] job_venv``): a full
install of the dependencies (TensorFlow) in a test would take minutes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from batch_jobs import overlay_venv, run_condor_job, show
from conftest import REPO, tiny_raw, write_config
from test_batch_htcondor import environment, expand, make_job_files

import law  # noqa: E402
import luigi  # noqa: E402

pytestmark = pytest.mark.slow
VERSION = "sandbox"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A tiny configuration whose GenerateDemoSamples outputs exist (run with `law run`, locally)."""
    tmp = tmp_path_factory.mktemp("sandbox")
    config = write_config(tiny_raw(entries_per_file=400, n_files=1), tmp)
    env = dict(os.environ, PYTHONPATH=REPO, LAW_CONFIG_FILE=os.path.join(REPO, "law.cfg"),
               LAW_HOME=str(tmp / "law_home"), TAGGERFLOW_DATA=str(tmp / "data"))
    law_bin = os.path.join(os.path.dirname(sys.executable), "law")
    proc = subprocess.run([law_bin, "run", "tasks.demo.GenerateDemoSamples", "--version", VERSION, "--config", config,
                           "--workflow", "local"], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"tmp": tmp, "config": config, "data": str(tmp / "data"), "law_home": str(tmp / "law_home")}


@pytest.fixture
def submit_env(demo, monkeypatch):
    monkeypatch.setenv("TAGGERFLOW_DATA", demo["data"])
    monkeypatch.setenv("LAW_HOME", demo["law_home"])
    monkeypatch.delenv("TAGGERFLOW_VENV", raising=False)
    return demo


def run_like_a_worker(ad, sandbox: str, timeout: int = 240) -> dict:
    """The job ClassAd ``ad`` run as condor_starter runs it (tests/batch_jobs.py), as this user."""
    return run_condor_job(ad, sandbox, user=None, timeout=timeout)


def _check_branch_output(task, branch: int) -> None:
    out = task.as_branch(branch).output()
    with np.load(out["npz"].path) as d:
        assert int(d["entries"]) == 400
    assert os.path.getsize(out["root"].path) > 0
    for other in (0,):  # a branch no test runs
        assert not task.as_branch(other).complete()


_show = show


def test_shared_filesystem_job_in_a_scrubbed_sandbox(submit_env, tmp_path):
    task, res = make_job_files(["Spectrum", "--version", VERSION, "--config", submit_env["config"],
                                "--workflow", "htcondor"], job_nums=[2])  # job 2: branch 1
    ad = expand(res["job"], clusterid=4242)[0]
    assert ad["Args"] == "_1To2 stdall_1To2.4242.0.txt"
    result = run_like_a_worker(ad, str(tmp_path / "scratch"))
    assert result["code"] == 0, _show(result)
    _check_branch_output(task, 1)
    # the bootstrap found the checkout through the rendered base path and set up everything
    assert f"bootstrap: taggerflow at {REPO} (shared filesystem: true)" in result["log"]
    assert "job exit code : 0" in result["log"]
    # the branch runs with the default --workflow local: a job never submits jobs itself
    assert re.search(r"running\s+Spectrum\(effective_workflow=local, branch=1,", result["log"])
    # nothing but the log is left in the sandbox for HTCondor to bring back (no file named '')
    assert result["new_files"] == {"stdall_1To2.4242.0.txt"}
    log_dir = os.path.join(task.local_path(), "htcondor_jobs", "logs")
    assert sorted(os.listdir(log_dir)) == ["stdall_1To2.4242.0.txt", "stderr_1To2.4242.0.txt",
                                           "stdout_1To2.4242.0.txt"]


def test_bundle_job_without_shared_filesystem(submit_env, tmp_path):
    from workflows.bundle import BUNDLE_NAME, DISK_MB_JOB, BundleRepository, code_key

    venv = overlay_venv(str(tmp_path / "worker_venv"), None)
    cfg = law.config.Config.instance()
    cfg.set("taggerflow_htcondor", "job_venv", venv)
    try:
        task, res = make_job_files(["Spectrum", "--version", VERSION, "--config", submit_env["config"],
                                    "--workflow", "htcondor", "--htcondor-shared-fs", "False"], job_nums=[3])
    finally:
        cfg.set("taggerflow_htcondor", "job_venv", "")
    # the bundle is the upstream requirement of the workflow; built once per state of the code
    bundle = task.workflow_proxy.requires()["bundle"]
    assert not bundle.complete()
    assert luigi.build([bundle], local_scheduler=True, log_level="WARNING")
    assert bundle.complete() and bundle.output().path.endswith(os.path.join(code_key(), BUNDLE_NAME))
    mtime = os.path.getmtime(bundle.output().path)
    assert BundleRepository.of_checkout().complete() and os.path.getmtime(bundle.output().path) == mtime

    ad = expand(res["job"], clusterid=4343)[0]
    assert environment(ad)["TAGGERFLOW_VENV"] == venv
    assert ad["RequestDisk"] == DISK_MB_JOB * 1024  # KiB: the environment is not built in the job
    result = run_like_a_worker(ad, str(tmp_path / "scratch"))
    assert result["code"] == 0, _show(result)
    _check_branch_output(task, 2)
    # the job ran the unpacked bundle, not the checkout
    m = re.search(r"bootstrap: taggerflow at (\S+) \(shared filesystem: false\)", result["log"])
    assert m and m.group(1).startswith(str(tmp_path / "scratch")) and m.group(1).endswith("/repo/taggerflow")
    assert re.search(rf"PYTHONPATH\s*: {re.escape(str(tmp_path / 'scratch'))}/job_\w+/repo/taggerflow", result["log"])
    assert result["new_files"] == {"stdall_2To3.4343.0.txt"}


def test_failing_job_ends_fast_and_each_attempt_keeps_its_log(submit_env, tmp_path):
    """A task failing inside a job ends the job at once (law's local scheduler, no luigi retry delay),
    the job's log still comes back, and the resubmission (a new cluster) writes a new log beside it."""
    args = ["Spectrum", "--version", VERSION, "--config", submit_env["config"], "--workflow", "htcondor"]
    task, first = make_job_files(args, job_nums=[4])  # branch 3
    demo_file = tasks_demo_output(task, 3)
    backup = str(tmp_path / "backup.root")
    shutil.copy2(demo_file, backup)
    try:
        with open(demo_file, "r+b") as f:
            f.truncate(200)  # an unreadable input: the branch fails
        ad = expand(first["job"], clusterid=5000)[0]
        result = run_like_a_worker(ad, str(tmp_path / "scratch1"), timeout=120)
    finally:
        shutil.copy2(backup, demo_file)
    assert result["code"] == 60, _show(result)  # law's job script: the task failed
    assert result["seconds"] < 60  # not held for luigi's retry delay (15 min)
    assert "execution of task branch 3 failed" in result["log"]
    assert result["new_files"] == {"stdall_3To4.5000.0.txt"}
    assert not task.as_branch(3).complete()
    # what law reports of the failed job (workflows.joblog): the task's own error from the transferred
    # log, naming the unreadable file, and law's exit reason; not "task execution failed" alone
    from workflows.joblog import log_error

    excerpt = log_error(result["fetched"]["stdall_3To4.5000.0.txt"]).splitlines()
    assert os.path.basename(demo_file) in excerpt[0] and re.match(r"^[\w.]+(Error|Exception)\b", excerpt[0]), excerpt
    assert re.fullmatch(r"execution of task branch 3 failed \(exit code \d+\), stop job", excerpt[-1]), excerpt

    # law resubmits: a new submission of the same job; the input is fine again
    _, retry = make_job_files(args, job_nums=[4])
    ad = expand(retry["job"], clusterid=5001)[0]
    result = run_like_a_worker(ad, str(tmp_path / "scratch2"))
    assert result["code"] == 0, _show(result)
    assert task.as_branch(3).complete()
    logs = sorted(os.listdir(os.path.join(task.local_path(), "htcondor_jobs", "logs")))
    assert {"stdall_3To4.5000.0.txt", "stdall_3To4.5001.0.txt"} <= set(logs)
    failed_log = open(os.path.join(task.local_path(), "htcondor_jobs", "logs", "stdall_3To4.5000.0.txt")).read()
    assert "execution of task branch 3 failed" in failed_log  # the failed attempt's log is intact


def tasks_demo_output(task, branch: int) -> str:
    from tasks.demo import GenerateDemoSamples

    demo = GenerateDemoSamples.req_different_branching(task, branch=-1)
    return demo.as_branch(branch).output().path


def _venv_dir_job(submit_env, venv_dir: str, job_num: int, forward: dict[str, str] | None = None):
    """The submit file of one Spectrum job without a shared filesystem, environment from ``venv_dir``."""
    cfg = law.config.Config.instance()
    cfg.set("taggerflow_htcondor", "venv_dir", venv_dir)
    cfg.set("taggerflow_htcondor", "forward_env", " ".join(forward or {}))
    saved = {k: os.environ.get(k) for k in forward or {}}
    os.environ.update(forward or {})
    try:
        task, res = make_job_files(["Spectrum", "--version", VERSION, "--config", submit_env["config"],
                                    "--workflow", "htcondor", "--htcondor-shared-fs", "False"], job_nums=[job_num])
    finally:
        cfg.set("taggerflow_htcondor", "venv_dir", "")
        cfg.set("taggerflow_htcondor", "forward_env", "")
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert luigi.build([task.workflow_proxy.requires()["bundle"]], local_scheduler=True, log_level="WARNING")
    return task, res


def _keyed_venv(venv_dir: str) -> str:
    import hashlib

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return os.path.join(venv_dir, "taggerflow-" + hashlib.sha256(f.read()).hexdigest()[:16])


def test_venv_dir_job_waits_for_the_environment_another_job_builds(submit_env, tmp_path):
    import threading

    venv_dir = str(tmp_path / "venvs")
    venv = _keyed_venv(venv_dir)
    os.makedirs(venv + ".lock")
    with open(os.path.join(venv + ".lock", "owner"), "w") as f:
        f.write("othernode 4711 2026-01-01T00:00:00Z\n")
    task, res = _venv_dir_job(submit_env, venv_dir, job_num=1)
    ad = expand(res["job"], clusterid=4444)[0]
    assert ad["RequestDisk"] == 200 * 1024  # the environment is not built in the job's scratch directory

    def other_job_finishes():
        time.sleep(4)
        overlay_venv(venv, None)  # its install stamp last
        shutil.rmtree(venv + ".lock")

    builder = threading.Thread(target=other_job_finishes)
    builder.start()
    result = run_like_a_worker(ad, str(tmp_path / "scratch"))
    builder.join()
    assert result["code"] == 0, _show(result)
    assert f"bootstrap: waiting for the environment {venv} another job builds (othernode 4711" in result["log"]
    assert re.search(rf"\(shared filesystem: false\) on \S+, environment {re.escape(venv)},", result["log"])
    with np.load(task.as_branch(0).output()["npz"].path) as d:  # the branch no other test runs
        assert int(d["entries"]) == 400


def test_venv_dir_failed_build_leaves_neither_lock_nor_half_environment(submit_env, tmp_path):
    venv_dir = str(tmp_path / "venvs")
    venv = _keyed_venv(venv_dir)
    # the interpreter env.sh builds with does not exist: the build fails at once
    _, res = _venv_dir_job(submit_env, venv_dir, job_num=2,
                           forward={"TAGGERFLOW_PYTHON": str(tmp_path / "no" / "python3")})
    result = run_like_a_worker(ad := expand(res["job"], clusterid=4545)[0], str(tmp_path / "scratch"), timeout=120)
    assert environment(ad)["TAGGERFLOW_PYTHON"] == str(tmp_path / "no" / "python3")
    assert result["code"] != 0
    assert f"bootstrap: building the environment {venv}" in result["log"]
    assert "bootstrap file failed" in result["log"]
    assert os.listdir(venv_dir) == []  # the next job builds it afresh
