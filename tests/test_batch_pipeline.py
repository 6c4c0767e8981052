"""The whole Pipeline from one command on a batch system (issue 18): `law run Pipeline --workflow
htcondor` (or slurm) makes every workflow stage of the DAG a batch workflow, through the plain tasks
between them (MergeScaling, EvaluationReport), with the shared batch options given once reaching every
stage and resource options per task reaching only that task; and a job's command line is exactly its
own branch: it parses (run for real with `law run ... --print-status`), whatever family-specific flags
the submitting command line had."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from conftest import REPO, tiny_raw, write_config
from test_batch_htcondor import expand, wrapper_jobs  # sets up law and the htcondor bindings

import law  # noqa: E402
import luigi  # noqa: E402

import tasks.evaluation  # noqa: E402,F401
import tasks.publish  # noqa: E402,F401

# every workflow the tiny configuration's Pipeline depends on
PIPELINE_WORKFLOWS = {"GenerateDemoSamples", "Spectrum", "ShuffleMergeSpectral", "FeatureScaling", "WriteTrainSample",
                      "ToRecords", "Training", "ConvertLwtnn", "Evaluation"}


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("TAGGERFLOW_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("LAW_HOME", str(tmp_path / "law_home"))
    monkeypatch.delenv("TAGGERFLOW_VENV", raising=False)
    config = write_config(tiny_raw(entries_per_file=300, n_files=1), tmp_path)
    return {"config": config, "data": str(tmp_path / "data"), "law_home": str(tmp_path / "law_home")}


def _dag(root) -> list:
    seen = {}
    stack = [root]
    while stack:
        t = stack.pop()
        if t.task_id not in seen:
            seen[t.task_id] = t
            stack.extend(luigi.task.flatten(t.requires()))
    return list(seen.values())


@pytest.mark.parametrize("kind", ["htcondor", "slurm"])
def test_options_given_once_reach_every_stage(env, kind):
    args = ["Pipeline", "--version", "p", "--config", env["config"], "--workflow", kind, "--poll-interval", "10s",
            "--retries", "2", "--walltime", "3h", f"--Training-{kind}-gpus", "1", f"--Training-{kind}-memory", "6000"]
    with luigi.cmdline_parser.CmdlineParser.global_instance(args) as cp:
        dag = _dag(cp.get_task_obj())
        workflows = [t for t in dag if isinstance(t, law.BaseWorkflow)]
        plain = {t.task_family for t in dag if not isinstance(t, law.BaseWorkflow)}
        assert {t.task_family for t in workflows} == PIPELINE_WORKFLOWS
        assert plain == {"Pipeline", "EvaluationReport", "MergeScaling"}  # the tasks the options pass through
        for t in workflows:
            where = f"{t.task_family}: "
            assert where + t.effective_workflow == where + kind
            assert (t.poll_interval, t.retries, t.walltime) == (10 / 60, 2, 3.0), where
            gpus, memory = getattr(t, f"{kind}_gpus"), getattr(t, f"{kind}_memory")
            if t.task_family == "Training":
                assert (gpus, memory) == (1, 6000), where
            else:  # the training's resource request never reaches the other stages
                assert (gpus, memory) == (0, 2000), where
        # the same outputs as a local run: how a task runs is not part of its identity
        local = ["Pipeline", "--version", "p", "--config", env["config"]]
    with luigi.cmdline_parser.CmdlineParser.global_instance(local) as cp:
        local_dag = _dag(cp.get_task_obj())
        assert all(t.effective_workflow == "local" for t in local_dag if isinstance(t, law.BaseWorkflow))
        assert sorted(t.task_id for t in local_dag if not isinstance(t, law.BaseWorkflow)) == \
            sorted(t.task_id for t in dag if not isinstance(t, law.BaseWorkflow))
        outputs = sorted(o.path for t in local_dag for o in law.util.flatten(t.output()) if hasattr(o, "path")
                         and "_jobs" not in o.path)
    assert outputs == sorted(o.path for t in dag for o in law.util.flatten(t.output()) if hasattr(o, "path")
                             and "_jobs" not in o.path)


def _law_run(module_class: str, params: list[str], env_vars: dict, extra: list[str]) -> subprocess.CompletedProcess:
    law_bin = os.path.join(os.path.dirname(sys.executable), "law")
    env = dict(os.environ, PYTHONPATH=REPO, LAW_CONFIG_FILE=os.path.join(REPO, "law.cfg"), **env_vars)
    return subprocess.run([law_bin, "run", module_class, *params, *extra], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_job_command_lines_parse_whatever_flags_the_submission_had(env):
    """The ConvertLwtnn and GenerateDemoSamples jobs of `law run Pipeline ... --workflow htcondor` given
    family-specific flags of other tasks: each job's parameters are its own (and the significant
    parameters of its upstream tasks), and its command line parses and runs (`--print-status 0`)."""
    flags = ["--Evaluation-workflow", "htcondor", "--Evaluation-poll-interval", "10s", "--Spectrum-poll-interval", "10s",
             "--Training-htcondor-gpus", "1", "--ConvertLwtnn-htcondor-memory", "3000",
             "--FeatureScaling-files-per-job", "1", "--log-level", "INFO"]
    args = ["Pipeline", "--version", "p", "--config", env["config"], "--workflow", "htcondor", *flags]
    jobs = {}
    with luigi.cmdline_parser.CmdlineParser.global_instance(args) as cp:
        dag = {t.task_family: t for t in _dag(cp.get_task_obj()) if isinstance(t, law.BaseWorkflow)}
        forwarded = law.parser.global_cmdline_args()
        assert "--Evaluation-workflow" in forwarded and "--Spectrum-poll-interval" in forwarded  # what law forwards
        for family in ("ConvertLwtnn", "GenerateDemoSamples"):
            from workflows.remote import job_files

            res = job_files(dag[family], "htcondor")[0]
            ad = expand(res["job"], clusterid=9)[0]
            assert ad["RequestMemory"] == (3000 if family == "ConvertLwtnn" else 2000)
            jobs[family] = wrapper_jobs(ad)[1]

    for family, job in jobs.items():
        params = shlex.split(job["params"])
        keys = [p.split("=", 1)[0] for p in params]
        assert not [k for k in keys if k.startswith(("--Evaluation-", "--Spectrum-", "--Training-", "--ConvertLwtnn-",
                                                     "--workflow", "--htcondor", "--poll"))], params
        assert "--log-level" in keys and "--local-scheduler" in keys and "--version" in keys
        # a significant parameter of an upstream task stays (the job requires the same upstream outputs)
        assert ("--FeatureScaling-files-per-job" in keys) == (family == "ConvertLwtnn"), params
        module_class = f"{job['module']}.{job['class']}"
        env_vars = {"TAGGERFLOW_DATA": env["data"], "LAW_HOME": env["law_home"]}
        branch = ["--branch", str(job["branches"][0])]
        proc = _law_run(module_class, params, env_vars, [*branch, "--print-status", "0"])
        assert proc.returncode == 0, f"{family} job: {proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        assert f"{family}(" in proc.stdout and "branch=0" in proc.stdout

        # what law alone would have given the job: ConvertLwtnn's command line does not know Evaluation
        if family == "ConvertLwtnn":
            unfiltered = params + [f"{k}={v}" for k, v in forwarded.items() if k.startswith("--Evaluation-")]
            proc = _law_run(module_class, unfiltered, env_vars, [*branch, "--print-status", "0"])
            assert proc.returncode == 2 and "unrecognized arguments: --Evaluation-workflow=htcondor" in proc.stderr
