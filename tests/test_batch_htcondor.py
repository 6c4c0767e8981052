"""HTCondor submission files of every workflow task, created by law's own machinery (the workflow
proxy's job file creation, as `law run ... --workflow htcondor` does, without submitting) and expanded
into job ClassAds by HTCondor's own Python bindings (htcondor 24.0 `Submit.jobs()`, no schedd), then
asserted on: resources, runtime conventions, arguments of each job, transferred files, logs, environment."""

from __future__ import annotations

import base64
import os
import re
import shlex

import pytest

from conftest import REPO, tiny_raw, write_config

os.environ.setdefault("LAW_CONFIG_FILE", os.path.join(REPO, "law.cfg"))
os.environ.setdefault("CONDOR_CONFIG", os.devnull)  # the bindings need no pool configuration offline
import htcondor  # a test extra: pip install 'htcondor>=24.0,<24.1'  # noqa: E402

import law  # noqa: E402
import luigi  # noqa: E402

import tasks.demo  # noqa: E402,F401
import tasks.evaluation  # noqa: E402,F401
import tasks.fdeep  # noqa: E402,F401
import tasks.scaling  # noqa: E402,F401
import tasks.shuffle  # noqa: E402,F401
import tasks.spectrum  # noqa: E402,F401
import tasks.trainsample  # noqa: E402,F401
import tasks.training  # noqa: E402,F401
from workflows.remote import job_files  # noqa: E402

N_FILES = 2  # demo files per dataset (4 datasets)
WORKFLOW_TASKS = {  # task -> number of branches of the tiny configuration
    "GenerateDemoSamples": 4 * N_FILES,
    "Spectrum": 4 * N_FILES,
    "ShuffleMergeSpectral": 2,
    "FeatureScaling": 2,
    "WriteTrainSample": 2,
    "ToRecords": 2,
    "Training": 2,
    "ConvertLwtnn": 2,
    "ConvertFdeep": 2,
    "Evaluation": 2,
    "CheckExport": 2,
}


@pytest.fixture
def batch_env(tmp_path, monkeypatch):
    """A temporary TAGGERFLOW_DATA and LAW_HOME, and the tiny configuration."""
    monkeypatch.setenv("TAGGERFLOW_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("LAW_HOME", str(tmp_path / "law_home"))
    monkeypatch.delenv("TAGGERFLOW_VENV", raising=False)
    config = write_config(tiny_raw(entries_per_file=500, n_files=N_FILES), tmp_path)
    return {"data": str(tmp_path / "data"), "config": config, "tmp": tmp_path}


def make_job_files(args: list[str], job_nums=None):
    """law's submission file(s) for the workflow task of the command line ``args``."""
    with luigi.cmdline_parser.CmdlineParser.global_instance(args) as cp:
        task = cp.get_task_obj()
        results = job_files(task, "htcondor", job_nums)
    assert len(results) == 1  # grouped submission: one submit file per submission round
    return task, results[0]


def expand(job_file: str, clusterid: int = 1) -> list:
    """The job ClassAds HTCondor makes of a submit file (relative paths resolve against the directory
    condor_submit runs in, which law sets to the job file's directory)."""
    cwd = os.getcwd()
    os.chdir(os.path.dirname(job_file))
    try:
        with open(job_file) as f:
            return list(htcondor.Submit(f.read()).jobs(clusterid=clusterid))
    finally:
        os.chdir(cwd)


def wrapper_jobs(ad) -> dict[int, dict]:
    """The law job arguments per job number, from the wrapper the ClassAd executes (grouped submission)."""
    text = open(ad["Cmd"]).read()
    jobs = {}
    for num, args in re.findall(r"\['(\d+)'\]=\"([^\"]*)\"", text):
        module, cls, params, branches, workers, retry, _dash = args.split(" ")
        jobs[int(num)] = {"module": module, "class": cls, "workers": int(workers), "auto_retry": retry,
                          "params": base64.b64decode(params).decode(),
                          "branches": [int(b) for b in base64.b64decode(branches).decode().split()]}
    return jobs


def render_variables(ad) -> dict:
    import json

    text = open(ad["Cmd"]).read()
    encoded = re.search(r'local render_variables="([^"]+)"', text).group(1)
    return json.loads(base64.b64decode(encoded))


def remaps(ad) -> dict[str, str]:
    return dict(tuple(x.strip() for x in pair.split("=", 1)) for pair in ad["TransferOutputRemaps"].split(";"))


def environment(ad) -> dict[str, str]:
    return dict(item.split("=", 1) for item in shlex.split(ad["Environment"]))


@pytest.mark.parametrize("family", list(WORKFLOW_TASKS))
def test_submit_file_of_every_workflow_task(batch_env, family):
    task, res = make_job_files([family, "--version", "b1", "--config", batch_env["config"], "--workflow", "htcondor"])
    n = WORKFLOW_TASKS[family]
    assert len(task.branch_map) == n
    with open(res["job"]) as f:
        text = f.read()
    # job files are kept under [job] job_file_dir, not in a temporary directory that disappears
    assert res["job"].startswith(os.path.join(batch_env["data"], "jobs") + os.sep)
    assert re.search(r"^getenv = false$", text, re.M)

    ads = expand(res["job"], clusterid=77)
    assert [ad["ProcId"] for ad in ads] == list(range(n))  # one job per branch
    jobs = wrapper_jobs(ads[0])
    job_dir = os.path.join(os.path.dirname(task.local_path()), os.path.basename(task.local_path()), "htcondor_jobs")
    log_dir = os.path.join(job_dir, "logs")
    for ad in ads:
        proc = ad["ProcId"]
        postfix = f"_{proc}To{proc + 1}"
        attempt = f"77.{proc}"
        # resources, runtime (HTCondor's own limit; no site convention by default)
        assert ad["RequestMemory"] == 2000 and ad["RequestCpus"] == 1
        assert ad["AllowedExecuteDuration"] == 7200
        assert "MaxRuntime" not in ad and "RequestRuntime" not in ad
        assert ad.get("RequestGPUs", 0) == 0
        assert "AcctGroup" not in ad
        assert ad["JobBatchName"] == f"{family}_b1"
        # the job: law's wrapper, its branches, the local scheduler, never --workflow or batch options
        assert os.access(ad["Cmd"], os.X_OK) and os.path.basename(ad["Cmd"]).startswith("htcondor_wrapper")
        log = f"stdall{postfix}.{attempt}.txt"
        assert ad["Args"] == f"{postfix} {log}" and "''" not in ad["Args"]
        job = jobs[proc + 1]
        assert (job["module"], job["class"], job["branches"]) == (type(task).__module__, family, [proc])
        params = shlex.split(job["params"])
        assert "--version=b1" in params and f"--config={batch_env['config']}" in params
        assert "--local-scheduler=True" in params
        assert not any(p.startswith(("--workflow", "--htcondor", "--branch")) for p in params)
        # transferred in: law's job script, the wrapper and the bootstrap file, all present
        inputs = ad["TransferInput"].split(",")
        assert sorted(re.sub(r"_[0-9a-f]{10}\.sh$", ".sh", os.path.basename(p)) for p in inputs) == \
            ["bootstrap.sh", "htcondor_wrapper.sh", "law_job.sh"]
        assert all(os.path.isfile(p) for p in inputs)
        # transferred out: only the attempt's log (explicitly; never every new file of the sandbox)
        assert ad["TransferOutput"] == log
        assert ad["Iwd"] == job_dir
        out_map = remaps(ad)
        assert out_map == {name: os.path.join(log_dir, name) for name in
                           (log, f"stdout{postfix}.{attempt}.txt", f"stderr{postfix}.{attempt}.txt")}
        assert (ad["Out"], ad["Err"]) == (f"stdout{postfix}.{attempt}.txt", f"stderr{postfix}.{attempt}.txt")
        assert ad["UserLog"] == os.path.join(log_dir, f"events{postfix}.{attempt}.log")
        # a bare environment plus exactly what the job needs: PATH (bootstrap.sh needs bash and tar,
        # env.sh python3.x) and TAGGERFLOW_DATA
        assert environment(ad) == {"PATH": "/usr/local/bin:/usr/bin:/bin", "TAGGERFLOW_DATA": batch_env["data"],
                                   "LAW_HTCONDOR_JOB_CLUSTER": "77", "LAW_HTCONDOR_JOB_PROCESS": str(proc)}
        assert not ad.get("GetEnv", False)
        assert ad["RequestDisk"] == 200 * 1024  # KiB: logs and law's job home (README, no shared filesystem)
    rv = render_variables(ads[0])
    assert (rv["taggerflow_base"], rv["taggerflow_data"], rv["taggerflow_shared_fs"]) == \
        (REPO, batch_env["data"], "true")
    # law records the log path of each job for its status messages (macros replaced at submission)
    assert res["log"] == os.path.join(log_dir, "stdall$(law_job_postfix).$(ClusterId).$(ProcId).txt")


def test_gpu_training(batch_env):
    task, res = make_job_files(["Training", "--version", "b1", "--config", batch_env["config"], "--workflow",
                                "htcondor", "--htcondor-gpus", "1", "--htcondor-gpu-memory", "8000",
                                "--htcondor-memory", "16GB", "--htcondor-cpus", "4", "--htcondor-runtime", "30m"])
    ads = expand(res["job"])
    assert len(ads) == 2
    for ad in ads:
        assert ad["RequestGPUs"] == 1
        assert ad["GPUsMinMemory"] == 8000  # RequireGPUs: GlobalMemoryMb >= GPUsMinMemory
        assert "GlobalMemoryMb" in str(ad["RequireGPUs"])
        assert "countMatches(MY.RequireGPUs,TARGET.AvailableGPUs) >= RequestGPUs" in str(ad["Requirements"])
        assert ad["RequestMemory"] == 16384 and ad["RequestCpus"] == 4
        assert ad["AllowedExecuteDuration"] == 1800
    # the resource request stays with the training: its upstream workflows ask for no GPU
    records = tasks.trainsample.ToRecords.req_different_branching(task, branch=-1)
    assert records.workflow == "htcondor" and records.htcondor_gpus == 0 and records.htcondor_memory == 2000


@pytest.mark.parametrize("flavor,attr", [("cern", "MaxRuntime"), ("naf", "RequestRuntime")])
def test_site_flavors(batch_env, flavor, attr):
    _, res = make_job_files(["Spectrum", "--version", "b1", "--config", batch_env["config"], "--workflow", "htcondor",
                             "--htcondor-flavor", flavor, "--htcondor-runtime", "3h", "--branches", "0,1"])
    ads = expand(res["job"])
    assert len(ads) == 2
    for ad in ads:
        assert ad[attr] == 3 * 3600 and ad["AllowedExecuteDuration"] == 3 * 3600
        assert ({"MaxRuntime", "RequestRuntime"} - {attr}).isdisjoint(ad.keys())


def test_accounting_group_requirements_batch_name(batch_env):
    _, res = make_job_files(["ShuffleMergeSpectral", "--version", "b1", "--config", batch_env["config"],
                             "--workflow", "htcondor", "--htcondor-accounting-group", "group_u_CMS.u_tau",
                             "--htcondor-requirements", 'OpSysAndVer == "AlmaLinux9"',
                             "--htcondor-batch-name", "tau-id", "--tasks-per-job", "2"])
    ads = expand(res["job"])
    assert len(ads) == 1  # two branches in one job
    ad = ads[0]
    assert ad["AcctGroup"] == "group_u_CMS.u_tau"
    assert 'OpSysAndVer == "AlmaLinux9"' in str(ad["Requirements"])
    assert ad["JobBatchName"] == "tau-id"
    assert wrapper_jobs(ad)[1]["branches"] == [0, 1] and ad["Args"].startswith("_0To2 ")


def test_retry_keeps_the_failed_attempts_log(batch_env):
    """A resubmission is a new cluster: every log name of the new attempt differs from the failed one."""
    args = ["Spectrum", "--version", "b1", "--config", batch_env["config"], "--workflow", "htcondor", "--branches", "3"]
    _, first = make_job_files(args)
    _, retry = make_job_files(args)
    a, b = expand(first["job"], clusterid=100)[0], expand(retry["job"], clusterid=101)[0]
    names = lambda ad: {ad["Out"], ad["Err"], ad["UserLog"], ad["TransferOutput"], *remaps(ad).values()}
    assert names(a).isdisjoint(names(b))
    assert first["job"] != retry["job"]  # a new job file directory per submission, the old one kept
    assert os.path.exists(first["job"]) and os.path.exists(retry["job"])


def test_no_shared_filesystem_sends_the_bundle(batch_env):
    task, res = make_job_files(["Spectrum", "--version", "b1", "--config", batch_env["config"], "--workflow",
                                "htcondor", "--htcondor-shared-fs", "False", "--branches", "0"])
    from workflows.bundle import code_key

    # the bundle is built once per state of the code, from the login node, before any job is submitted
    reqs = task.workflow_proxy.requires()
    bundle = reqs["bundle"].output().path
    assert bundle == os.path.join(batch_env["data"], "BundleRepository", code_key(), "taggerflow.tgz")
    ad = expand(res["job"])[0]
    # the job builds its own environment (no job_venv, no venv_dir): 3-4 GB
    assert ad["RequestDisk"] == 5000 * 1024
    inputs = ad["TransferInput"].split(",")
    assert bundle in inputs and batch_env["config"] in inputs
    params = shlex.split(wrapper_jobs(ad)[1]["params"])
    assert f"--config={os.path.basename(batch_env['config'])}" in params  # the copy sent with the job
    rv = render_variables(ad)
    assert rv["taggerflow_shared_fs"] == "false" and rv["taggerflow_bundle"] == "taggerflow.tgz"


def test_job_settings_in_law_cfg():
    """The facts of a real pool, in law.cfg: jobs use law's local scheduler, a failing task does not
    hang its job for luigi's retry delay, job files are kept."""
    cfg = law.config.Config.instance()
    assert cfg.get_expanded_bool("luigi_core", "local_scheduler")
    assert cfg.get_expanded_int("luigi_scheduler", "retry_count") == 0
    assert not cfg.get_expanded_bool("luigi_worker", "keep_alive")
    assert cfg.get_expanded("job", "job_file_dir") and not cfg.get_expanded_bool("job", "job_file_dir_cleanup")
    assert luigi.configuration.get_config().getint("scheduler", "retry_count") == 0


def test_resubmission_removes_the_superseded_job(batch_env, tmp_path):
    """When law resubmits a held or failed job, the old job leaves the queue (condor_rm) before the new
    one is submitted. There is no schedd offline: condor_submit and condor_rm are stand-ins that record
    their calls, configured through law's own options ([job] htcondor_cmd_submit, htcondor_cmd_rm)."""
    from law.job.dashboard import NoJobDashboard

    calls = tmp_path / "calls.txt"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "condor_submit").write_text(f'#!/bin/sh\necho "condor_submit $*" >> {calls}\n'
                                           'echo "1 job(s) submitted to cluster 43."\n')
    (bin_dir / "condor_rm").write_text(f'#!/bin/sh\necho "condor_rm $*" >> {calls}\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    cfg = law.config.Config.instance()
    saved = {k: cfg.get("job", k) for k in ("htcondor_cmd_submit", "htcondor_cmd_rm")}
    cfg.set("job", "htcondor_cmd_submit", str(bin_dir / "condor_submit"))
    cfg.set("job", "htcondor_cmd_rm", str(bin_dir / "condor_rm"))
    try:
        args = ["Spectrum", "--version", "b1", "--config", batch_env["config"], "--workflow", "htcondor"]
        with luigi.cmdline_parser.CmdlineParser.global_instance(args) as cp:
            proxy = cp.get_task_obj().workflow_proxy
            proxy.job_file_factory = proxy.create_job_file_factory()
            proxy.dashboard = NoJobDashboard()
            proxy.job_data.jobs[3] = proxy.job_data_cls.job_data(job_id="42.0", branches=[2],
                                                                 status=proxy.job_manager.FAILED)
            proxy.submit({3: [2]})
    finally:
        for k, v in saved.items():
            cfg.set("job", k, v)
    lines = calls.read_text().splitlines()
    assert lines[0] == "condor_rm 42.0" and lines[1].startswith("condor_submit ")
    assert proxy.job_data.jobs[3]["job_id"] == "43.0"
    # law's record of the new attempt's log, with HTCondor's macros replaced
    assert proxy.job_data.jobs[3]["extra"]["log"].endswith("/logs/stdall_2To3.43.0.txt")


def test_output_collection_lists_each_directory_once(tmp_path, monkeypatch):
    """The workflows' output collection answers as law's TargetCollection does, with one directory
    listing per output directory and no stat per branch output (10,000 branches on a shared filesystem)."""
    from workflows.collection import ListedFileCollection

    targets = {}
    for b in range(300):
        sub = tmp_path / ("a" if b % 3 else "b")
        sub.mkdir(exist_ok=True)
        targets[b] = {"x": law.LocalFileTarget(str(sub / f"x_{b}.npz")),
                      "y": law.LocalFileTarget(str(sub / "plots" / f"y_{b}.pdf"))}
        for t in targets[b].values():
            if b % 2 == 0 or (b % 5 == 0 and t.basename.startswith("x")):
                os.makedirs(t.dirname, exist_ok=True)
                open(t.path, "w").close()
    ours, laws = ListedFileCollection(targets), law.TargetCollection(targets)
    assert ours._flat_target_list == laws._flat_target_list
    calls = {"listdir": 0, "stat": 0}
    real_listdir, real_stat = os.listdir, os.stat

    def counted(name, func):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return func(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(os, "listdir", counted("listdir", real_listdir))
    monkeypatch.setattr(os, "stat", counted("stat", real_stat))
    count, keys = ours.count(keys=True)
    assert calls == {"listdir": 4, "stat": 0}
    monkeypatch.setattr(os, "listdir", real_listdir)
    monkeypatch.setattr(os, "stat", real_stat)
    assert (count, keys) == laws.count(keys=True) and count == 150
    assert not ours.exists() and ListedFileCollection(targets, threshold=0.5).exists()
    assert ours.status_text() == laws.status_text()
