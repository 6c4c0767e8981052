"""A real single-node Slurm cluster on localhost (Debian's slurm-wlm and munge; .ci/install_slurm.sh),
started by the test with its own munge key, slurm.conf, ports and spool directories, without
accounting (jobs are followed with ``squeue --states=all``). A multi-branch stage of the pipeline
(FeatureScaling, 4 branches) runs end to end with ``law run ... --workflow slurm``; one job is
cancelled while it runs, law resubmits it, and the final outputs are complete and identical, byte for
byte, to a ``--workflow local`` run on a copy of the same inputs."""

from __future__ import annotations

import filecmp
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO, tiny_raw, write_config

pytestmark = pytest.mark.slow
VERSION = "slurm"
N_SHARDS = 4
DAEMONS = ("slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo", "munged", "mungekey")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, interval: float = 0.2):
    t0 = time.time()
    while time.time() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """munged, slurmctld and slurmd of a one-node cluster whose NodeName is `hostname -s`."""
    missing = [d for d in DAEMONS if shutil.which(d, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None]
    if missing:
        # CI installs them (.ci/run): there a missing daemon is a failure, not a reason to skip
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"Slurm/munge not installed ({', '.join(missing)}): run .ci/install_slurm.sh")
    if os.geteuid() != 0:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("the test's slurmd runs as root")
    d = tmp_path_factory.mktemp("slurm")
    for sub in ("munge_key", "munge", "state", "spool", "log"):
        (d / sub).mkdir()
    (d / "munge_key").chmod(0o700)
    host = socket.gethostname().split(".")[0]  # NodeName must equal `hostname -s`
    socket_path = str(d / "munge" / "munge.socket.2")
    conf = d / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=taggerflowtest", f"SlurmctldHost={host}", "SlurmUser=root", "SlurmdUser=root",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
        "AuthType=auth/munge", f"AuthInfo=socket={socket_path}", "CredType=cred/munge",
        f"StateSaveLocation={d}/state", f"SlurmdSpoolDir={d}/spool",
        f"SlurmctldPidFile={d}/slurmctld.pid", f"SlurmdPidFile={d}/slurmd.pid",
        f"SlurmctldLogFile={d}/log/slurmctld.log", f"SlurmdLogFile={d}/log/slurmd.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none", "ReturnToService=2",
        "SchedulerType=sched/builtin", "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory",
        "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/none", "MinJobAge=3600", "KillWait=2", "InactiveLimit=0",
        f"NodeName={host} CPUs={os.cpu_count()} RealMemory=8000 State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""]))
    env = dict(os.environ, SLURM_CONF=str(conf), PATH=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    subprocess.run(["mungekey", "--create", "--keyfile", str(d / "munge_key" / "munge.key")], check=True, env=env)
    procs = []
    log = open(d / "log" / "daemons.log", "w")
    try:
        procs.append(subprocess.Popen(
            ["munged", "--foreground", "--force", f"--key-file={d}/munge_key/munge.key", f"--socket={socket_path}",
             f"--pid-file={d}/munge/munged.pid", f"--log-file={d}/log/munged.log", f"--seed-file={d}/munge/seed"],
            env=env, stdout=log, stderr=log))
        _wait(lambda: os.path.exists(socket_path), 20, "munged")
        procs.append(subprocess.Popen(["slurmctld", "-D", "-c", "-f", str(conf)], env=env, stdout=log, stderr=log))
        procs.append(subprocess.Popen(["slurmd", "-D", "-f", str(conf)], env=env, stdout=log, stderr=log))

        def node_idle():
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout
            return out.strip() == "idle"

        try:
            _wait(node_idle, 60, "the Slurm node to become idle")
        except TimeoutError as e:
            logs = {f.name: f.read_text()[-2000:] for f in (d / "log").iterdir()}
            raise TimeoutError(f"{e}\n" + "\n".join(f"--- {k}\n{v}" for k, v in logs.items())) from None
        yield {"dir": d, "conf": str(conf), "env": env, "host": host}
    finally:
        subprocess.run(["scancel", "--user", "root"], env=env, capture_output=True)
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        log.close()


def _law_env(data: str, law_home: str, extra: dict | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=REPO, LAW_CONFIG_FILE=os.path.join(REPO, "law.cfg"), LAW_HOME=law_home,
               TAGGERFLOW_DATA=data, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TAGGERFLOW_VENV", None)
    env.update(extra or {})
    return env


def _law(args: list[str], env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    law_bin = os.path.join(os.path.dirname(sys.executable), "law")
    proc = subprocess.run([law_bin, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"law {' '.join(args)}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The upstream of FeatureScaling (demo files, spectra, 4 shards), computed once, locally, and copied:
    the Slurm run and the local run start from the same bytes."""
    tmp = tmp_path_factory.mktemp("slurm_inputs")
    raw = tiny_raw()
    raw["resampling"]["n_jobs"] = N_SHARDS
    config = write_config(raw, tmp)
    _law(["run", "tasks.shuffle.ShuffleMergeSpectral", "--version", VERSION, "--config", config, "--workflow", "local",
          "--workers", "2"], _law_env(str(tmp / "upstream"), str(tmp / "law_home")))
    return {"tmp": tmp, "config": config, "upstream": str(tmp / "upstream")}


def test_slurm_job_file(tmp_path, monkeypatch):
    """law's Slurm job file (no cluster needed): resources, a bare environment plus TAGGERFLOW_DATA,
    a log per attempt named by the job id, law's local scheduler and the branch of each job."""
    import base64
    import shlex

    os.environ.setdefault("LAW_CONFIG_FILE", os.path.join(REPO, "law.cfg"))
    import luigi

    import tasks.shuffle  # noqa: F401  (registers the task)
    from workflows.remote import job_files

    monkeypatch.setenv("TAGGERFLOW_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("LAW_HOME", str(tmp_path / "law_home"))
    # env.sh exports the login node's venv; on a shared filesystem the job is told to use the same one
    monkeypatch.setenv("TAGGERFLOW_VENV", str(tmp_path / "venv"))
    config = write_config(tiny_raw(), tmp_path)
    args = ["ShuffleMergeSpectral", "--version", "b1", "--config", config, "--workflow", "slurm",
            "--slurm-runtime", "90m", "--slurm-memory", "3000", "--slurm-cpus", "2", "--slurm-partition", "short"]
    with luigi.cmdline_parser.CmdlineParser.global_instance(args) as cp:
        task = cp.get_task_obj()
        results = job_files(task, "slurm")
    assert len(results) == 2  # one job file per job
    log_dir = os.path.join(task.local_path(), "slurm_jobs", "logs")
    for branch, res in enumerate(results):
        text = open(res["job"]).read()
        opts = dict(line[len("#SBATCH --"):].split("=", 1) for line in text.splitlines()
                    if line.startswith("#SBATCH --"))
        assert opts["time"] == "01:30:00" and opts["mem"] == "3000M" and opts["cpus-per-task"] == "2"
        assert opts["partition"] == "short"
        assert opts["export"] == ("NONE,PATH=/usr/local/bin:/usr/bin:/bin,"
                                  f"TAGGERFLOW_DATA={tmp_path / 'data'},TAGGERFLOW_VENV={tmp_path / 'venv'}")
        assert opts["output"] == os.path.join(log_dir, f"stdout_{branch}To{branch + 1}.%j.txt")
        assert opts["error"] == os.path.join(log_dir, f"stderr_{branch}To{branch + 1}.%j.txt")
        assert opts["chdir"] == os.path.join(task.local_path(), "slurm_jobs")
        cmd = text.strip().splitlines()[-1].split()
        assert os.path.isfile(cmd[0]) and cmd[1:3] == ["tasks.shuffle", "ShuffleMergeSpectral"]
        params = shlex.split(base64.b64decode(cmd[3]).decode())
        assert "--local-scheduler=True" in params and f"--config={config}" in params
        assert not any(p.startswith(("--workflow", "--slurm")) for p in params)
        assert base64.b64decode(cmd[4]).decode() == str(branch)
        assert "gres" not in opts and "account" not in opts and "mem-per-gpu" not in opts

    # GPUs with memory per GPU, and an account: in every job file; none of them part of the output path
    args_gpu = args + ["--slurm-gpus", "2", "--slurm-gpu-memory", "16GB", "--slurm-account", "atlas-ftag"]
    with luigi.cmdline_parser.CmdlineParser.global_instance(args_gpu) as cp:
        gpu_task = cp.get_task_obj()
        gpu_results = job_files(gpu_task, "slurm")
    assert gpu_task.local_path() == task.local_path()
    for res in gpu_results:
        text = open(res["job"]).read()
        opts = dict(line[len("#SBATCH --"):].split("=", 1) for line in text.splitlines()
                    if line.startswith("#SBATCH --"))
        assert (opts["gres"], opts["mem-per-gpu"], opts["account"]) == ("gpu:2", "16384M", "atlas-ftag")  # law: 1 GB = 1024 MB


def _squeue(env: dict) -> list[tuple[str, str, str]]:
    out = subprocess.run(["squeue", "--states=all", "--noheader", "--Format", "JobID:20,State:20,Name:200"],
                         env=env, capture_output=True, text=True).stdout
    return [tuple(line.split(None, 2)) for line in out.splitlines() if line.strip()]


def _run_on_slurm(slurm, args: list[str], data: str, tmp_path) -> tuple[str, list[tuple[str, str, str]]]:
    """``law <args> --workflow slurm`` (the jobs use the environment the tests run in, a shared
    filesystem; the Training jobs get 2500 MB: resources are per task); law's output and the
    (job id, state, name) of the jobs it submitted."""
    env = _law_env(data, str(tmp_path / "law_home_slurm"),
                   {"SLURM_CONF": slurm["conf"], "PATH": slurm["env"]["PATH"],
                    "LAW__taggerflow_slurm__accounting": "False", "TAGGERFLOW_VENV": sys.prefix})
    before = {job_id for job_id, _, _ in _squeue(slurm["env"])}
    proc = _law([*args, "--workflow", "slurm", "--poll-interval", "1s", "--retries", "0",
                 "--Training-slurm-memory", "2500"], env, timeout=1500)
    jobs = [(job_id, state, name) for job_id, state, name in _squeue(slurm["env"]) if job_id not in before]
    return proc.stdout + proc.stderr, jobs


def test_feature_scaling_on_slurm_with_a_killed_job(slurm, inputs, tmp_path):
    # both runs use the same TAGGERFLOW_DATA path (outputs name their input files by absolute path)
    data = str(tmp_path / "data")
    shutil.copytree(inputs["upstream"], data, symlinks=True)
    args = ["run", "tasks.scaling.FeatureScaling", "--version", VERSION, "--config", inputs["config"]]

    env = _law_env(data, str(tmp_path / "law_home_slurm"),
                   {"SLURM_CONF": slurm["conf"], "PATH": slurm["env"]["PATH"],
                    "LAW__taggerflow_slurm__accounting": "False"})
    law_bin = os.path.join(os.path.dirname(sys.executable), "law")
    with open(tmp_path / "law_slurm.log", "w") as log:
        proc = subprocess.Popen([law_bin, *args, "--workflow", "slurm", "--poll-interval", "1s", "--retries", "3",
                                 "--slurm-runtime", "10m", "--slurm-memory", "1000"],
                                env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            # cancel the first FeatureScaling job whose task is running (its log says so)
            def running_task():
                for job_id, state, name in _squeue(slurm["env"]):
                    if state != "RUNNING" or "FeatureScaling" not in name:
                        continue
                    for log_file in glob.glob(os.path.join(data, "FeatureScaling", "*", "*", "*", "slurm_jobs",
                                                           "logs", f"stdout_*.{job_id}.txt")):
                        if "execute attempt 1" in open(log_file).read():
                            return job_id
                return None

            killed = _wait(running_task, 120, "a running FeatureScaling task", interval=0.05)
            subprocess.run(["scancel", killed], env=slurm["env"], check=True)
            code = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    law_log = open(tmp_path / "law_slurm.log").read()
    assert code == 0, law_log[-6000:]
    states = {job_id: state for job_id, state, name in _squeue(slurm["env"]) if "FeatureScaling" in name}
    assert states[killed] == "CANCELLED"
    assert list(states.values()).count("COMPLETED") == N_SHARDS  # 3 + the resubmitted one
    assert "going to submit 1 slurm job(s)" in law_log  # law's resubmission of the cancelled job
    assert re.search(rf"id: {killed}, status: retry, code: \d+, error: CANCELLED", law_log)  # what users see
    slurm_result = str(tmp_path / "slurm_result")
    os.rename(data, slurm_result)

    # the same stage, locally, on the same inputs at the same place
    shutil.copytree(inputs["upstream"], data, symlinks=True)
    _law([*args, "--workflow", "local", "--workers", "2"], _law_env(data, str(tmp_path / "law_home_local")))

    pattern = os.path.join("FeatureScaling", VERSION, "*", "*", "moments_*.json")
    slurm_out = sorted(os.path.relpath(p, slurm_result) for p in glob.glob(os.path.join(slurm_result, pattern)))
    local_out = sorted(os.path.relpath(p, data) for p in glob.glob(os.path.join(data, pattern)))
    assert slurm_out == local_out and len(local_out) == N_SHARDS
    for rel in local_out:
        assert filecmp.cmp(os.path.join(slurm_result, rel), os.path.join(data, rel), shallow=False), \
            f"{rel} of the Slurm run differs from the local run's"
    # nothing half-written, and one log per attempt: the cancelled job's log is kept beside the retry's
    out_dir = os.path.dirname(os.path.join(slurm_result, local_out[0]))
    assert not [f for f in os.listdir(out_dir) if f.startswith(".")]
    logs = sorted(os.listdir(os.path.join(out_dir, "slurm_jobs", "logs")))
    assert [f for f in logs if f.startswith("stdout_") and f.endswith(f".{killed}.txt")]
    assert len([f for f in logs if f.startswith("stdout_")]) == N_SHARDS + 1


# the Pipeline's workflows and their branches for the tiny configuration below (4 datasets x 1 file,
# 2 shards, 2 trainings)
PIPELINE_JOBS = {"GenerateDemoSamples": 4, "Spectrum": 4, "ShuffleMergeSpectral": 2, "FeatureScaling": 2,
                 "WriteTrainSample": 2, "ToRecords": 2, "Training": 2, "ConvertLwtnn": 2, "Evaluation": 2}


def test_whole_pipeline_on_slurm_from_one_command(slurm, tmp_path):
    """`law run Pipeline --workflow slurm` (issue 18): every workflow stage runs as Slurm jobs, one per
    branch, stage after stage, with --poll-interval given once; the deliverables (lwtnn JSON, ONNX,
    model cards, export checks, pipeline summaries, evaluation report) are byte-identical to those of
    `--workflow local` run at the same place."""
    raw = tiny_raw()
    raw["training"]["epochs"] = 2
    config = write_config(raw, tmp_path)
    data = str(tmp_path / "data")
    args = ["run", "tasks.evaluation.Pipeline", "--version", "pipe", "--config", config]
    venv = {"TAGGERFLOW_VENV": sys.prefix}
    # resources are per task (law.cfg's defaults here): the Training's reach only the Training jobs
    law_log, jobs = _run_on_slurm(slurm, args, data, tmp_path)
    assert all(state == "COMPLETED" for _, state, _ in jobs), jobs
    for family, n in PIPELINE_JOBS.items():
        # law names each job after its task: one completed job per branch of every stage
        done = [j for j in jobs if re.search(rf"(^|[^A-Za-z]){family}([^A-Za-z]|$)", j[2])]
        assert len(done) == n, (family, jobs)
        assert f"going to submit {n} slurm job(s)" in law_log
    assert len(jobs) == sum(PIPELINE_JOBS.values())
    # the shared polling option reached every stage (law's default would poll every minute)
    assert law_log.count("polling took") == len(PIPELINE_JOBS)
    assert "effective_workflow=local" not in law_log
    # stage after stage: no job of a stage is submitted before every job of the stage it needs ended
    out = subprocess.run(["squeue", "--states=all", "--noheader", "--Format", "JobID:20,SubmitTime:25,EndTime:25,Name:200"],
                         env=slurm["env"], capture_output=True, text=True).stdout
    times = {}
    for line in out.splitlines():
        job_id, submit, end, name = line.split(None, 3)
        family = next((f for f in PIPELINE_JOBS if re.search(rf"(^|[^A-Za-z]){f}([^A-Za-z]|$)", name)), None)
        if job_id in {j[0] for j in jobs} and family:
            first, last = times.get(family, (submit, end))
            times[family] = (min(first, submit), max(last, end))  # ISO times compare as strings
    chain = list(PIPELINE_JOBS)[:-2]  # ... -> ToRecords -> Training, then ConvertLwtnn and Evaluation
    for upstream, downstream in [*zip(chain, chain[1:]), ("Training", "ConvertLwtnn"), ("Training", "Evaluation")]:
        assert times[downstream][0] >= times[upstream][1], (upstream, downstream, times)
    slurm_result = str(tmp_path / "slurm_result")
    os.rename(data, slurm_result)

    _law([*args, "--workflow", "local"], _law_env(data, str(tmp_path / "law_home_local"), venv), timeout=1500)
    patterns = [os.path.join("ConvertLwtnn", "pipe", "*", "*", name) for name in
                ("lwtnn.json", "model.onnx", "pipeline_summary.md", "model_card.json", "export_check.json")]
    patterns += [os.path.join("EvaluationReport", "pipe", "*", name) for name in ("report.md", "summary.json")]
    compared = 0
    for pattern in patterns:
        local_out = sorted(os.path.relpath(p, data) for p in glob.glob(os.path.join(data, pattern)))
        slurm_out = sorted(os.path.relpath(p, slurm_result) for p in glob.glob(os.path.join(slurm_result, pattern)))
        assert local_out and slurm_out == local_out, pattern
        for rel in local_out:
            a, b = os.path.join(slurm_result, rel), os.path.join(data, rel)
            if rel.endswith(("model_card.json", "export_check.json")):
                # the export check's |Keras - lwtnn/ONNX| differences are Keras inference in the
                # exporting process, whose float summation order follows its CPU threads (1 in the job):
                # they agree to float precision, everything else byte for byte
                assert _without_diffs(json.load(open(a))) == _without_diffs(json.load(open(b))), rel
                for (key, x), (_, y) in zip(_diffs(json.load(open(a))), _diffs(json.load(open(b)))):
                    assert x == pytest.approx(y, rel=1e-6, abs=1e-9), (rel, key)
            else:
                assert filecmp.cmp(a, b, shallow=False), f"{rel} of the Slurm run differs from the local run's"
            compared += 1
    assert compared == 2 * 5 + 2


_DIFF_KEYS = ("max_abs_diff", "mean_abs_diff")


def _without_diffs(obj):
    if isinstance(obj, dict):
        return {k: _without_diffs(v) for k, v in obj.items() if k not in _DIFF_KEYS}
    if isinstance(obj, list):
        return [_without_diffs(v) for v in obj]
    return obj


def _diffs(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in _DIFF_KEYS:
                yield f"{path}/{k}", v
            else:
                yield from _diffs(v, f"{path}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _diffs(v, f"{path}/{i}")


def test_adversarial_llp_training_on_slurm_from_one_command(slurm, tmp_path):
    """`law run Training --workflow slurm` on the LLP demo shrunk to its adversarial variant (issue 19):
    the main and the control sample's stages and the adversarial training all run as Slurm jobs, and
    the control training files and the training's outputs are byte-identical to `--workflow local`."""
    from conftest import llp_tiny_raw

    config = write_config(llp_tiny_raw(), tmp_path)
    data = str(tmp_path / "data")
    args = ["run", "tasks.training.Training", "--version", "llp", "--config", config]
    venv = {"TAGGERFLOW_VENV": sys.prefix}
    law_log, jobs = _run_on_slurm(slurm, args, data, tmp_path)
    assert jobs and all(state == "COMPLETED" for _, state, _ in jobs), jobs

    def n_jobs(family):
        return sum(bool(re.search(rf"(^|[^A-Za-z]){family}([^A-Za-z]|$)", name)) for _, _, name in jobs)

    # 6 main + 2 control demo files; main and control spectra, shards, training files; one training
    assert (n_jobs("GenerateDemoSamples"), n_jobs("Spectrum"), n_jobs("ShuffleMergeSpectral"),
            n_jobs("FeatureScaling"), n_jobs("WriteTrainSample"), n_jobs("Training")) == \
        (8, 6 + 2, 2 + 2, 2, 2 + 2, 1), jobs
    assert len(jobs) == 27
    assert "effective_workflow=local" not in law_log
    slurm_result = str(tmp_path / "slurm_result")
    os.rename(data, slurm_result)

    _law([*args, "--workflow", "local"], _law_env(data, str(tmp_path / "law_home_local"), venv), timeout=1500)
    patterns = [os.path.join("WriteTrainSample", "llp", "control", "*", "*.h5"),
                *(os.path.join("Training", "llp", "*", "adversarial", name)
                  for name in ("model.keras", "history.csv", "selection.json"))]
    for pattern in patterns:
        local_out = sorted(os.path.relpath(p, data) for p in glob.glob(os.path.join(data, pattern)))
        slurm_out = sorted(os.path.relpath(p, slurm_result) for p in glob.glob(os.path.join(slurm_result, pattern)))
        assert local_out and slurm_out == local_out, (pattern, local_out, slurm_out)
        for rel in local_out:
            assert filecmp.cmp(os.path.join(slurm_result, rel), os.path.join(data, rel), shallow=False), \
                f"{rel} of the Slurm run differs from the local run's"


def test_failing_stage_reports_the_jobs_real_error(slurm, tmp_path):
    """A stage failing in its Slurm jobs ends `law run Pipeline --workflow slurm` with the jobs' own
    error (the task's exception from the job's stderr file, law's exit reason) under law's failed-job
    line and in the workflow's error, not law's generic "task execution failed" alone. Too few demo
    entries leave a resampling bin empty: ShuffleMergeSpectral raises in its jobs."""
    config = write_config(tiny_raw(entries_per_file=800, n_files=1), tmp_path)
    env = _law_env(str(tmp_path / "data"), str(tmp_path / "law_home"),
                   {"SLURM_CONF": slurm["conf"], "PATH": slurm["env"]["PATH"],
                    "LAW__taggerflow_slurm__accounting": "False", "TAGGERFLOW_VENV": sys.prefix})
    law_bin = os.path.join(os.path.dirname(sys.executable), "law")
    proc = subprocess.run([law_bin, "run", "tasks.evaluation.Pipeline", "--version", "fail", "--config", config,
                           "--workflow", "slurm", "--poll-interval", "1s", "--retries", "0"],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    error = "taggerflow.resample.ResamplingError: group 'DY', class 'jet': empty bin"
    # law's line per failed job, with the job's error below it
    assert re.search(r"job: \d, branches: \[\d\], id: \d+, status: failed, code: 60, .*log: \S+stdout_\dTo\d\.\d+\.txt, "
                     r"job error: \n\s+" + re.escape(error), out), out[-4000:]
    assert re.search(r"\n\s+execution of task branch \d failed \(exit code \d+\), stop job", out)
    # the workflow's error names them too
    m = re.search(r"Exception: tolerance exceeded for job\(s\) [\d,]+; ShuffleMergeSpectral\S*:\njob \d \(branches "
                  r"\[\d\], id \d+\): .*\[law job script: task execution failed\]\n\s+" + re.escape(error), out)
    assert m, out[-4000:]
    # the stages before it ran as jobs; nothing after it was submitted
    assert "going to submit 4 slurm job(s)" in out and "FeatureScaling" not in "".join(
        line for line in out.splitlines() if "going to submit" in line)


def test_squeue_states_of_ending_jobs_wait_for_the_final_state():
    # seen on a real slurmctld under load: the cancelled job was polled while COMPLETING (exit code 15)
    # and reported with "error: COMPLETING"; it is running until squeue shows its final state
    from workflows.slurm import TaggerflowSlurmJobManager as manager

    data = manager.parse_squeue_all_output("7  COMPLETING  15  None\n8  CANCELLED  15  None\n"
                                           "9  COMPLETED  0  None\n10  TIMEOUT  0  TimeLimit\n")
    assert data[7]["status"] == manager.RUNNING and data[7]["error"] is None
    assert (data[8]["status"], data[8]["code"], data[8]["error"]) == (manager.FAILED, 15, "CANCELLED")
    assert (data[9]["status"], data[9]["error"]) == (manager.FINISHED, None)
    assert (data[10]["status"], data[10]["error"]) == (manager.FAILED, "TIMEOUT (TimeLimit)")
