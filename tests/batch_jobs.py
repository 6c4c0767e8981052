"""Run batch jobs as a worker node runs them, without a pool (no HTCondor daemon exists in Debian or
on PyPI): the submission files are law's own (``workflows.remote.job_files``, as ``law run ...
--workflow htcondor|slurm`` writes them), and each job is executed as its own process

- HTCondor: the submit file is expanded into job ClassAds by HTCondor's Python bindings; each job
  runs in an empty scratch directory holding only the files the ClassAd transfers, with an empty
  environment plus exactly the ClassAd's ``Environment`` and the two variables condor_starter always
  sets (``_CONDOR_SCRATCH_DIR``, ``TMPDIR``: the scratch directory), the ClassAd's ``Cmd`` and
  ``Args``; afterwards only its ``TransferOutput`` files come back (remapped);
- Slurm: the job file is executed as slurmd does, from a copy, in its ``--chdir``, with an empty
  environment plus the variables of its ``--export`` and ``SLURM_JOB_ID``, stdout/stderr into its
  ``--output``/``--error`` (``%j`` replaced);

as an unprivileged user: ``tfjob`` (created when the tests run as root), or the user running the tests
when that is not root. ``run_stage`` runs one stage of the pipeline this way (its plain prerequisites,
such as MergeScaling, locally, as the submitting node does).
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
from concurrent.futures import ThreadPoolExecutor

JOB_USER = "tfjob"
_STARTER_VARS = ("_CONDOR_SCRATCH_DIR", "TMPDIR")


def job_user() -> tuple[int, int] | None:
    """(uid, gid) the jobs run as; None: as the current user, who is not root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(JOB_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", JOB_USER], check=True, capture_output=True)
        entry = pwd.getpwnam(JOB_USER)
    return entry.pw_uid, entry.pw_gid


def as_user(cmd: list[str], user) -> list[str]:
    if user is None:
        return cmd
    uid, gid = user
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *cmd]


def give_to(path: str, user) -> None:
    """Make ``path`` (recursively) the job user's: jobs write outputs and logs there."""
    if user is None:
        return
    uid, gid = user
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, gid)


def _readable_interpreter(user) -> str:
    """An interpreter of this Python version the job user may execute (this venv's base interpreter
    may live in root's home)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
                  f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    for cand in candidates:
        # test -x as well: the user may not traverse the directories above it (root's home)
        probe = ["/bin/sh", "-c", f'test -x "{cand}" && "{cand}" -c "import venv"']
        if os.path.isfile(cand) and subprocess.run(as_user(probe, user), capture_output=True).returncode == 0:
            return cand
    raise AssertionError(f"no python{version} the job user can run among {candidates}")


def overlay_venv(path: str, user) -> str:
    """A virtual environment at ``path`` that imports this environment's packages (a .pth adding its
    site-packages), with law's console script and env.sh's install stamp (so env.sh activates it
    instead of installing): a full install of the dependencies (TensorFlow) per test would take
    minutes. The project itself comes from the checkout or bundle (PYTHONPATH, set by env.sh)."""
    subprocess.run([_readable_interpreter(user), "-m", "venv", "--without-pip", path], check=True)
    site = sysconfig.get_paths()["purelib"]
    target_site = glob.glob(os.path.join(path, "lib", "python3*", "site-packages"))[0]
    with open(os.path.join(target_site, "taggerflow_overlay.pth"), "w") as f:
        f.write(f"import site; site.addsitedir({site!r})\n")
    with open(os.path.join(os.path.dirname(sys.executable), "law")) as f:
        script = f.read().split("\n", 1)[1]
    with open(os.path.join(path, "bin", "law"), "w") as f:
        f.write(f"#!{path}/bin/python\n{script}")
    os.chmod(os.path.join(path, "bin", "law"), 0o755)
    open(os.path.join(path, ".taggerflow_installed"), "w").close()
    probe = subprocess.run(as_user([os.path.join(path, "bin", "python"), "-c", "import law, numpy, luigi"], user),
                           capture_output=True, text=True)
    assert probe.returncode == 0, f"the job user cannot import from {site}: {probe.stderr[-2000:]}"
    return path


def condor_environment(ad) -> dict[str, str]:
    return dict(item.split("=", 1) for item in shlex.split(ad["Environment"]))


def condor_remaps(ad) -> dict[str, str]:
    return dict(tuple(x.strip() for x in pair.split("=", 1)) for pair in ad["TransferOutputRemaps"].split(";"))


def du_kb(path: str) -> int:
    # files may vanish while du walks a running job's directory: its exit status does not matter
    out = subprocess.run(["du", "-sk", path], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else 0


def run_condor_job(ad, sandbox: str, user=None, timeout: int = 300) -> dict:
    """Execute the job ClassAd ``ad`` as condor_starter would, then transfer its outputs back."""
    os.makedirs(sandbox)
    assert os.listdir(sandbox) == []
    # file transfer in: the input files (and the executable) by their base names
    inputs = [p for p in ad["TransferInput"].split(",") if p]
    for path in inputs + [ad["Cmd"]]:
        shutil.copy2(path, os.path.join(sandbox, os.path.basename(path)))
    transferred = set(os.listdir(sandbox))
    give_to(sandbox, user)
    # an empty environment: only what the ClassAd says, plus what the starter always sets
    env = {**condor_environment(ad), **{name: sandbox for name in _STARTER_VARS}}
    cmd = as_user(["/usr/bin/env", "-i", *[f"{k}={v}" for k, v in env.items()], "./" + os.path.basename(ad["Cmd"]),
                   *shlex.split(ad["Args"])], user)
    with open(os.path.join(sandbox, ad["Out"]), "w") as out, open(os.path.join(sandbox, ad["Err"]), "w") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=sandbox, stdout=out, stderr=err)
        # the scratch directory's largest size while the job runs (law removes the job's home at its end)
        disk_kb = 0
        while proc.poll() is None:
            if time.monotonic() - t0 > timeout:
                proc.kill()
                proc.wait()
                raise AssertionError(f"job {ad['Args']} ran longer than {timeout} s")
            disk_kb = max(disk_kb, du_kb(sandbox))
            time.sleep(0.2)
        seconds = time.monotonic() - t0
    new_files = set(os.listdir(sandbox)) - transferred - {ad["Out"], ad["Err"]}
    # file transfer out: exactly the ClassAd's output files (a missing one would hold the job)
    out_map = condor_remaps(ad)
    fetched = {}
    for name in [n for n in ad["TransferOutput"].split(",") if n] + [ad["Out"], ad["Err"]]:
        src = os.path.join(sandbox, name)
        assert os.path.exists(src), f"output file {name} missing: HTCondor would hold the job"
        dst = os.path.join(ad["Iwd"], out_map.get(name, name))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(src, dst)
        fetched[name] = dst
    log = open(fetched[ad["TransferOutput"]]).read() if ad["TransferOutput"] else ""
    return {"code": proc.returncode, "seconds": seconds, "new_files": new_files, "fetched": fetched, "log": log,
            "disk_kb": disk_kb, "stdout": open(os.path.join(sandbox, ad["Out"])).read(),
            "stderr": open(os.path.join(sandbox, ad["Err"])).read()}


def sbatch_options(job_file: str) -> dict[str, str]:
    with open(job_file) as f:
        return dict(line[len("#SBATCH --"):].strip().split("=", 1) for line in f
                    if line.startswith("#SBATCH --") and "=" in line)


def run_slurm_job(job_file: str, job_id: int, spool: str, user=None, timeout: int = 300) -> dict:
    """Execute law's Slurm job file as slurmd would (a copy of the script, in its --chdir, with the
    variables of its --export only: NONE,<name>=<value>,...)."""
    opts = sbatch_options(job_file)
    export = opts["export"].split(",")
    assert export[0] == "NONE", opts["export"]
    env = dict(item.split("=", 1) for item in export[1:])
    env["SLURM_JOB_ID"] = str(job_id)
    os.makedirs(spool, exist_ok=True)
    script = os.path.join(spool, f"job{job_id}.sh")
    shutil.copy2(job_file, script)
    os.chmod(script, 0o755)
    give_to(spool, user)
    stdout, stderr = (opts[k].replace("%j", str(job_id)) for k in ("output", "error"))
    os.makedirs(os.path.dirname(stdout), exist_ok=True)
    cmd = as_user(["/usr/bin/env", "-i", *[f"{k}={v}" for k, v in env.items()], script], user)
    with open(stdout, "w") as out, open(stderr, "w") as err:
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=opts["chdir"], stdout=out, stderr=err, timeout=timeout)
        seconds = time.monotonic() - t0
    return {"code": proc.returncode, "seconds": seconds, "log": open(stdout).read(), "stderr": open(stderr).read(),
            "disk_kb": 0}


def show(result: dict) -> str:
    return f"exit {result['code']}\n--- log\n{result['log'][-6000:]}\n--- stderr\n{result['stderr'][-3000:]}"


def run_stage(family: str, args: list[str], kind: str, work: str, user=None, batch_args=(), workers: int = 2,
              clusterid: int = 1000) -> list[dict]:
    """Run the stage ``family`` of the pipeline with ``args`` (``--version ... --config ...``): a plain
    task locally, a workflow as ``--workflow kind`` jobs, each its own process, ``workers`` at a time;
    the workflow's incomplete plain prerequisites (and the repository bundle) run locally first.
    ``batch_args`` (e.g. ``--htcondor-shared-fs False``) are given to workflows only.
    Returns the jobs' results (each with "job"), after asserting that every job succeeded and that
    the stage is complete."""
    import luigi

    from workflows.remote import Workflow, job_files

    import law.parser

    # law caches the command line's root task parser and global arguments per process (one `law run`
    # is one command line); each stage here is a command line of its own: a parameter of one stage's
    # root task (--sample control) is not a global argument of the next one's jobs
    law.parser._reset()
    law.parser._root_task_cls = None
    cls = luigi.task_register.Register.get_task_cls(family)
    if not issubclass(cls, Workflow):
        with luigi.cmdline_parser.CmdlineParser.global_instance([family, *args]) as cp:
            task = cp.get_task_obj()
            assert luigi.build([task], local_scheduler=True, log_level="WARNING"), f"{family} failed locally"
        give_to(os.environ["TAGGERFLOW_DATA"], user)
        return []
    with luigi.cmdline_parser.CmdlineParser.global_instance([family, *args, "--workflow", kind, *batch_args]) as cp:
        task = cp.get_task_obj().as_workflow()
        for req in luigi.task.flatten(task.workflow_proxy.requires()):
            if req.complete():
                continue
            assert not isinstance(req, Workflow), f"{family} submitted before its upstream {req.task_family}"
            assert luigi.build([req], local_scheduler=True, log_level="WARNING"), f"{req.task_id} failed locally"
        results = job_files(task, kind)
        n_branches = len(task.branch_map)
    give_to(os.environ["TAGGERFLOW_DATA"], user)
    if kind == "htcondor":
        from test_batch_htcondor import expand

        assert len(results) == 1  # one submit file, one cluster
        ads = expand(results[0]["job"], clusterid=clusterid)
        runs = [(f"{family}.{ad['ProcId']}", lambda ad=ad: run_condor_job(
            ad, os.path.join(work, f"{family}_{clusterid}.{ad['ProcId']}"), user)) for ad in ads]
    else:
        runs = [(os.path.basename(r["job"]), lambda r=r, i=i: run_slurm_job(
            r["job"], clusterid + i, os.path.join(work, "slurm_spool"), user)) for i, r in enumerate(results)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = list(pool.map(lambda item: {"job": item[0], **item[1]()}, runs))
    assert len(done) == n_branches  # one job per branch (tasks_per_job 1)
    for result in done:
        assert result["code"] == 0, f"{family} job {result['job']}: {show(result)}"
    with luigi.cmdline_parser.CmdlineParser.global_instance([family, *args]) as cp:
        assert cp.get_task_obj().complete(), f"{family}: jobs succeeded but outputs are missing"
    return done


def tree_digest(root: str, skip_dirs=("htcondor_jobs", "slurm_jobs")) -> dict[str, str]:
    """sha256 of every file under ``root`` by relative path (job files and logs left out)."""
    digest = {}
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip_dirs)
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                digest[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return digest
