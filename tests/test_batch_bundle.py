"""Jobs without a shared filesystem: the repository bundle is keyed on the content of the code (commit
plus a hash of the files as they are, uncommitted changes included), so changed code never ships a
stale bundle under the same --version; the submit file gives the job a PATH (a bare job cannot even
create a venv without one) and a disk request sized by where the environment comes from."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from batch_jobs import as_user, job_user
from test_batch_htcondor import batch_env, environment, expand, make_job_files  # noqa: F401  (fixture)

import law  # noqa: E402
import luigi  # noqa: E402

from workflows import bundle as bundle_mod  # noqa: E402
from workflows.bundle import DISK_MB_JOB, DISK_MB_VENV_IN_JOB, BundleRepository, code_key, write_bundle  # noqa: E402


def _git(repo, *args) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """A small git checkout: two tracked files, one commit, an ignored directory."""
    r = tmp_path / "checkout"
    (r / "pkg").mkdir(parents=True)
    (r / "pkg" / "core.py").write_text("X = 1\n")
    (r / "run.sh").write_text("echo hi\n")
    (r / ".gitignore").write_text("data/\n")
    _git(tmp_path, "init", "-q", str(r))
    _git(r, "add", "-A")
    _git(r, "commit", "-q", "-m", "one")
    return r


def test_code_key_follows_the_content_of_the_code(repo):
    commit = _git(repo, "rev-parse", "HEAD")[:12]
    clean = code_key(str(repo))
    assert clean.startswith(commit + "-") and clean == code_key(str(repo))
    # an uncommitted change of a tracked file: same commit, another key
    (repo / "pkg" / "core.py").write_text("X = 2\n")
    edited = code_key(str(repo))
    assert edited.startswith(commit + "-") and edited != clean
    # back as committed: the committed key again
    (repo / "pkg" / "core.py").write_text("X = 1\n")
    assert code_key(str(repo)) == clean
    # an untracked file a job would receive counts; an ignored one does not
    (repo / "pkg" / "new.py").write_text("Y = 1\n")
    with_new = code_key(str(repo))
    assert with_new != clean
    (repo / "data").mkdir()
    (repo / "data" / "big.root").write_bytes(b"\0" * 100)
    assert code_key(str(repo)) == with_new
    # a script made executable is another code
    os.chmod(repo / "run.sh", 0o755)
    assert code_key(str(repo)) not in (clean, with_new)
    # a new commit of the same files: a new commit part
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "two")
    assert code_key(str(repo)).split("-")[0] == _git(repo, "rev-parse", "HEAD")[:12] != commit


def test_a_changed_tracked_file_ships_a_new_bundle(batch_env, repo, monkeypatch):
    """The same --version, a tracked file edited (not committed) between two submissions: the second
    submission sends another bundle, which holds the edited file."""
    monkeypatch.setattr(bundle_mod, "BASE_DIR", str(repo))
    args = ["Spectrum", "--version", "b1", "--config", batch_env["config"], "--workflow", "htcondor",
            "--htcondor-shared-fs", "False", "--branches", "0"]

    def submitted_bundle():
        task, res = make_job_files(args)
        req = task.workflow_proxy.requires()["bundle"]
        ad = expand(res["job"])[0]
        assert req.output().path in ad["TransferInput"].split(",")
        return req

    first = submitted_bundle()
    assert luigi.build([first], local_scheduler=True, log_level="WARNING")
    (repo / "pkg" / "core.py").write_text("X = 2\n")
    second = submitted_bundle()
    assert second.code_key != first.code_key and second.output().path != first.output().path
    assert not second.complete()  # the first bundle is not reused
    assert luigi.build([second], local_scheduler=True, log_level="WARNING")
    for req, value in ((first, b"X = 1\n"), (second, b"X = 2\n")):
        with tarfile.open(req.output().path) as tar:
            assert tar.extractfile("taggerflow/pkg/core.py").read() == value
            assert sorted(tar.getnames()) == ["taggerflow/.gitignore", "taggerflow/pkg/core.py", "taggerflow/run.sh"]


def test_a_bundle_is_never_written_with_other_code_than_its_key(batch_env, repo, monkeypatch):
    monkeypatch.setattr(bundle_mod, "BASE_DIR", str(repo))
    stale = BundleRepository.of_checkout()
    (repo / "pkg" / "core.py").write_text("X = 3\n")  # edited after the jobs were prepared
    with pytest.raises(RuntimeError, match=r"changed while the jobs were prepared .* run the command again"):
        write_bundle(stale.output().path, expect_key=stale.code_key)
    assert not os.path.exists(stale.output().path) and not os.listdir(os.path.dirname(stale.output().path))


@pytest.mark.parametrize("setting,disk_mb", [(None, DISK_MB_VENV_IN_JOB), ("job_venv", DISK_MB_JOB),
                                             ("venv_dir", DISK_MB_JOB)])
def test_disk_request_follows_where_the_environment_comes_from(batch_env, setting, disk_mb):
    cfg = law.config.Config.instance()
    if setting:
        cfg.set("taggerflow_htcondor", setting, str(batch_env["tmp"] / "venvs"))
    try:
        _, res = make_job_files(["Spectrum", "--version", "b1", "--config", batch_env["config"], "--workflow",
                                 "htcondor", "--htcondor-shared-fs", "False", "--branches", "0"])
    finally:
        if setting:
            cfg.set("taggerflow_htcondor", setting, "")
    ad = expand(res["job"])[0]
    assert ad["RequestDisk"] == disk_mb * 1024  # KiB
    assert environment(ad).get("TAGGERFLOW_VENV") == (str(batch_env["tmp"] / "venvs") if setting == "job_venv" else None)


def test_the_job_environment_lets_python_create_a_venv(batch_env, tmp_path):
    """The failure of a vanilla pool (getenv = false): without PATH, ``python3 -m venv`` cannot find
    its interpreter; with the submit file's environment it can, as an unprivileged user."""
    _, res = make_job_files(["Spectrum", "--version", "b1", "--config", batch_env["config"], "--workflow",
                             "htcondor", "--htcondor-shared-fs", "False", "--branches", "0"])
    env = environment(expand(res["job"])[0])
    user = job_user()
    work = tmp_path / "w"
    if user is not None:  # pytest's directory is root's only: one the job user can enter
        work = Path(tempfile.mkdtemp(prefix="taggerflow_venv_"))
        os.chmod(work, 0o777)
    else:
        work.mkdir()
    script = 'cd "$1" && python3 -m venv --without-pip venv && ./venv/bin/python -c "import sys; print(sys.prefix)"'

    def bare(*assignments):
        return subprocess.run(as_user(["/usr/bin/env", "-i", *assignments, "/bin/bash", "-c", script, "-", str(work)],
                                      user), capture_output=True, text=True)

    without = bare()
    assert without.returncode != 0 and "Unable to determine path to the running Python interpreter" in without.stderr
    with_env = bare(*[f"{k}={v}" for k, v in env.items()])
    assert with_env.returncode == 0, with_env.stderr
    assert with_env.stdout.strip() == str(work / "venv")
    if user is not None:
        shutil.rmtree(work)
