"""What the HTCondor and Slurm workflows share (workflows.htcondor, workflows.slurm): site options,
the job's environment, inputs and command line, the real error of a failed job, and law's submission
files without submitting (:func:`job_files`).

Batch parameters are ``significant=False``: they change how a task runs, never what it produces,
so they do not enter the task's identity or output paths. Site defaults live in law.cfg
([taggerflow_htcondor], [taggerflow_slurm]); per task they are set on the command line, for the
task itself (``--htcondor-memory 4000``) or for any task of the tree (``--Training-htcondor-gpus 1``),
or in law.cfg (``[luigi_Training] htcondor_gpus: 1``). Resource parameters (runtime, memory, CPUs,
GPUs, batch name) are not passed on to upstream workflows: a GPU request for the training never makes
the preprocessing jobs wait for GPUs. The other batch options (``--workflow``, ``--poll-interval``,
``--retries``, ...) are given once and reach every stage, through the plain tasks in between
(workflows.stages); a job's command line carries only its own task's parameters.

What a job needs, and how it gets it (jobs start with a bare environment):

- the job script law_job.sh, htcondor's wrapper and ``bootstrap.sh`` are sent with the job
  (HTCondor file transfer; Slurm reads them from the job file directory on the shared filesystem);
- the environment variables of ``job_environment()`` (``PATH``, ``TAGGERFLOW_DATA`` at least) are set
  explicitly (HTCondor ``environment`` with ``getenv = false``; Slurm ``--export=NONE,...``);
- ``bootstrap.sh`` sources the checkout's ``env.sh`` (shared filesystem), or unpacks the repository
  bundle sent with the job and creates the environment with ``env.sh`` (``--htcondor-shared-fs False``);
- the branch runs with law's local scheduler (``[luigi_core] local_scheduler``) and the default
  ``--workflow local``, so a job never submits jobs itself;
- logs: one set per attempt, named by the batch job id (a retry never overwrites the failed
  attempt's log), in ``<task output>/<system>_jobs/logs/``; only the log comes back from an
  HTCondor job (explicit ``transfer_output_files``), outputs are written to ``TAGGERFLOW_DATA``.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import law
from law.util import iter_chunks

from workflows.base import BASE_DIR, data_dir
from workflows.bundle import BundleRepository
from workflows.job_arguments import restrict_job_arguments

_TRUE = {"1", "true", "yes", "on"}


def cfg_option(section: str, option: str, default):
    """law.cfg's ``[section] option`` (variables expanded), ``default`` where unset or empty."""
    value = law.config.get_expanded(section, option, default)
    return value if value not in (None, "") else default


def cfg_flag(section: str, option: str, default: bool) -> bool:
    """law.cfg's ``[section] option`` as a flag (1, true, yes, on), ``default`` where unset."""
    value = cfg_option(section, option, None)
    return default if value is None else str(value).strip().lower() in _TRUE


class BatchMixin:
    """Pieces shared by the HTCondor and Slurm workflows (``kind`` is "htcondor" or "slurm")."""

    #: the workflow's parameters for how it runs, none of what a job computes (set by
    #: workflows.remote on its Workflow, whose parameters they are)
    batch_options: frozenset = frozenset()

    def _shared_fs(self, kind: str) -> bool:
        return bool(getattr(self, f"{kind}_shared_fs"))

    def _resources_key(self, names) -> str:
        """A short key of the values of the parameters ``names`` (the resource request)."""
        import hashlib

        text = ";".join(f"{name}={getattr(self, name)!r}" for name in sorted(names))
        return "req" + hashlib.sha256(text.encode()).hexdigest()[:10]

    def _job_dir(self, kind: str):
        return law.LocalDirectoryTarget(self.local_path(f"{kind}_jobs"))

    def _log_dir(self, kind: str):
        custom = cfg_option(f"taggerflow_{kind}", "log_dir", "")
        if custom:
            return law.LocalDirectoryTarget(os.path.join(os.path.expandvars(os.path.expanduser(custom)),
                                                         *self.store_parts()))
        return self._job_dir(kind).child("logs", type="d")

    def _bootstrap(self):
        return law.JobInputFile(os.path.join(BASE_DIR, "bootstrap.sh"), share=True, render_job=True)

    def _bundle(self):
        return BundleRepository.of_checkout()

    def job_environment(self, kind: str) -> dict[str, str]:
        """The environment variables a job gets explicitly (nothing else reaches it)."""
        # a bare job has no PATH: bootstrap.sh and env.sh need bash, tar and python3.x (venv)
        env = {"PATH": cfg_option(f"taggerflow_{kind}", "job_path", "/usr/local/bin:/usr/bin:/bin"),
               "TAGGERFLOW_DATA": data_dir()}
        if self._shared_fs(kind):
            if os.environ.get("TAGGERFLOW_VENV"):
                env["TAGGERFLOW_VENV"] = os.environ["TAGGERFLOW_VENV"]
        else:
            job_venv = cfg_option(f"taggerflow_{kind}", "job_venv", "")
            if job_venv:
                env["TAGGERFLOW_VENV"] = job_venv
        for name in str(cfg_option(f"taggerflow_{kind}", "forward_env", "")).replace(",", " ").split():
            if name in os.environ:
                env[name] = os.environ[name]
        return env

    def _job_cmdline_args(self, kind: str) -> dict[str, str]:
        # the job runs in its own directory: the configuration by absolute path (shared filesystem)
        # or by the name of the copy sent with the job
        path = self.cfg.path
        return {"--config": path if self._shared_fs(kind) else os.path.basename(path)}

    def _own_job_arguments(self, arguments):
        # a job runs exactly its own branch: of the global arguments law forwards, only those of the
        # tasks the branch depends on (workflows.job_arguments.job_global_args)
        return restrict_job_arguments(self, arguments, self.batch_options)

    def _prepare(self, config, kind: str):
        shared = self._shared_fs(kind)
        config.render_variables["taggerflow_base"] = BASE_DIR
        config.render_variables["taggerflow_data"] = data_dir()
        config.render_variables["taggerflow_shared_fs"] = "true" if shared else "false"
        config.render_variables.setdefault("taggerflow_bundle", "")
        # no shared filesystem: where the workers build one environment per dependency set (empty: per job)
        config.render_variables["taggerflow_venv_dir"] = cfg_option(f"taggerflow_{kind}", "venv_dir", "")
        if not shared:
            # sent with the job, not copied into the job file directory (rendered as its basename)
            config.input_files["taggerflow_bundle"] = law.JobInputFile(self._bundle().output().path, copy=False)
            config.input_files["taggerflow_config"] = law.JobInputFile(self.cfg.path, copy=False)
        return config


class JobErrorsMixin:
    """A failed job is reported with its real error (workflows.joblog: the exception or argparse line
    of its log and law's exit reason) under law's status line, and a failed workflow's error names
    them, instead of law's generic exit-code text alone."""

    def job_log(self, data) -> str | None:
        """The log of a job as law recorded it (the workflows refine where it is)."""
        log = (data.get("extra") or {}).get("log")
        return log if isinstance(log, str) else None

    def job_error(self, data) -> str:
        """The lines of the job's log (and stderr file) that say why it failed."""
        from workflows.joblog import log_error

        return log_error(self.job_log(data), (data.get("extra") or {}).get("stderr"))

    def _status_error_pairs(self, job_num, job_data):
        pairs = super()._status_error_pairs(job_num, job_data)
        log = self.job_log(job_data)
        if log:
            pairs["log"] = log
        excerpt = self.job_error(job_data)
        if excerpt:
            pairs["job error"] = ("\n" + excerpt).replace("\n", "\n        ")
        return pairs

    def failure_details(self, job_nums) -> str:
        lines = []
        for num in job_nums:
            data = self.job_data.jobs.get(num) or {}
            log = self.job_log(data)
            excerpt = self.job_error(data)
            head = f"job {num} (branches {data.get('branches')}, id {data.get('job_id')}): {data.get('error') or ''}"
            code_text = self.job_error_messages.get(data.get("code"))
            if code_text:
                head += f" [law job script: {code_text}]"
            lines.append(head.rstrip())
            if excerpt:
                lines.extend("    " + line for line in excerpt.splitlines())
            if log:
                lines.append(f"    log: {log}")
        return "\n".join(lines)

    def _failed_nums(self) -> list:
        states = (self.job_manager.FAILED, self.job_manager.RETRY)
        return [n for n, d in self.job_data.jobs.items() if d.get("status") in states]

    def poll(self):
        try:
            return super().poll()
        except Exception as e:
            details = self.failure_details(self._failed_nums()[:5])
            if details:
                raise Exception(f"{e}; {self.task.task_id}:\n{details}") from e
            raise


def job_files(task, kind: str = "htcondor", job_nums=None) -> list[dict]:
    """Create the submission files of the workflow ``task`` with law's own machinery (the workflow
    proxy's ``create_job_file``, grouped as law submits), without submitting anything. Returns law's
    result per submission (``{"job": path, "config": ..., "log": ...}``). Must run inside a luigi
    command-line context (law's job arguments repeat the global command-line arguments)."""
    from law.job.dashboard import NoJobDashboard

    task = task.as_workflow()
    proxy = task.workflow_proxy
    if proxy.workflow_type != kind:
        raise ValueError(f"{task.task_id}: --workflow is {proxy.workflow_type}, not {kind}")
    proxy.job_file_factory = proxy.create_job_file_factory()
    proxy.dashboard = proxy.dashboard or task.create_job_dashboard() or NoJobDashboard()
    chunks = list(iter_chunks(sorted(task.branch_map), task.tasks_per_job))
    jobs = OrderedDict((i + 1, branches) for i, branches in enumerate(chunks))
    if job_nums is not None:
        jobs = OrderedDict((n, jobs[n]) for n in job_nums)
    if proxy.job_manager.job_grouping_submit:
        return [proxy.create_job_file(jobs)]
    return [proxy.create_job_file(n, b) for n, b in jobs.items()]
