"""The Slurm workflow: law's, with taggerflow's jobs (workflows.batch), and a job manager that
follows jobs with squeue where the cluster keeps no accounting."""

from __future__ import annotations

import shlex
import subprocess

import law
import luigi
from law.contrib.slurm.workflow import SlurmWorkflowProxy as _LawSlurmProxy
from law.util import interruptable_popen, quote_cmd

from workflows.batch import BatchMixin, JobErrorsMixin, cfg_flag, cfg_option

law.contrib.load("slurm")


class TaggerflowSlurmJobManager(law.slurm.SlurmJobManager):
    """law's Slurm job manager; with ``[taggerflow_slurm] accounting: False`` jobs are followed with
    ``squeue --states=all`` (finished jobs stay listed for MinJobAge) instead of ``sacct``, and a failed
    job's state and reason (CANCELLED, TIMEOUT, OUT_OF_MEMORY, ...) become its error message."""

    accounting = cfg_flag("taggerflow_slurm", "accounting", True)
    squeue_all_format = "JobID:30,State:30,exit_code:12,Reason:300"
    transient_states = ("COMPLETING", "STAGE_OUT", "SIGNALING")

    def query(self, job_id, partition=None, silent=False, _processes=None):
        if self.accounting:
            return super().query(job_id, partition=partition, silent=silent, _processes=_processes)
        chunking = isinstance(job_id, (list, tuple))
        job_ids = list(job_id) if chunking else [job_id]
        cmd = shlex.split(law.config.get_expanded("job", "slurm_cmd_squeue")) + [
            "--states=all", "--noheader", "--Format", self.squeue_all_format, "--jobs", ",".join(map(str, job_ids))]
        if partition or self.partition:
            cmd += ["--partition", partition or self.partition]
        code, out, err = interruptable_popen(quote_cmd(cmd), shell=True, executable="/bin/bash", stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, kill_timeout=2, processes=_processes)
        if code != 0 and "invalid job id" not in err.lower():
            if silent:
                return None
            raise Exception(f"queue query of slurm job(s) '{job_id}' failed with code {code}:\n{err}")
        data = self.parse_squeue_all_output(out) if code == 0 else {}
        for i in job_ids:
            if i not in data:
                data[i] = self.job_status_dict(job_id=i, status=self.FAILED,
                                               error="job not known to squeue (finished longer than MinJobAge "
                                                     "ago, and no accounting)")
        return data if chunking else data[job_id]

    @classmethod
    def parse_squeue_all_output(cls, out: str) -> dict:
        data = {}
        for line in out.strip().splitlines():
            parts = line.split(None, 3)
            if len(parts) < 2 or not parts[0].isdigit():
                continue
            job_id, state = int(parts[0]), parts[1]
            exit_code = parts[2].split(":")[0] if len(parts) > 2 else ""
            reason = parts[3].strip() if len(parts) > 3 else ""
            status = cls.map_status(state)
            if state in cls.transient_states:
                # still ending (a cancelled job passes through COMPLETING with its signal's exit code):
                # its final state (CANCELLED, FAILED, TIMEOUT ...) is what the next poll reports
                data[job_id] = cls.job_status_dict(job_id=job_id, status=cls.RUNNING)
                continue
            code = int(exit_code) if exit_code.isdigit() else None
            if code is not None and code > 255:
                code >>= 8  # squeue prints the wait status (exit code 60: 15360), sacct "60:0"
            error = None
            if status == cls.FAILED or (code or 0) != 0:
                status = cls.FAILED
                error = state + (f" ({reason})" if reason and reason != "None" else "")
            data[job_id] = cls.job_status_dict(job_id=job_id, status=status, code=code, error=error)
        return data


class TaggerflowSlurmProxy(JobErrorsMixin, _LawSlurmProxy):

    def get_extra_submission_data(self, job_file, job_id, config, log=None):
        # the job's log is its stdout file, named by the job id (one per attempt)
        extra = super().get_extra_submission_data(job_file, job_id, config, log=log)
        if config.stdout and job_id is not None:
            extra["log"] = str(config.stdout).replace("%j", str(job_id))
        if config.stderr and job_id is not None:  # the task's traceback is there (workflows.joblog)
            extra["stderr"] = str(config.stderr).replace("%j", str(job_id))
        return extra


class SlurmWorkflow(BatchMixin, law.slurm.SlurmWorkflow):
    workflow_proxy_cls = TaggerflowSlurmProxy

    slurm_runtime = law.DurationParameter(default=float(cfg_option("taggerflow_slurm", "runtime", 2.0)),
                                          unit="h", significant=False,
                                          description="walltime per job; default unit hours; default: 2h")
    slurm_memory = law.BytesParameter(default=float(cfg_option("taggerflow_slurm", "memory", 2000)), unit="MB",
                                      significant=False, description="memory per job; default unit MB")
    slurm_partition = luigi.Parameter(default=cfg_option("taggerflow_slurm", "partition", ""), significant=False,
                                      description="partition; default: the cluster's")
    slurm_cpus = luigi.IntParameter(default=int(cfg_option("taggerflow_slurm", "cpus", 1)), significant=False,
                                    description="CPUs per job; default: 1")
    slurm_gpus = luigi.IntParameter(default=int(cfg_option("taggerflow_slurm", "gpus", 0)), significant=False,
                                    description="GPUs per job; default: 0")
    slurm_gpu_memory = law.BytesParameter(default=float(cfg_option("taggerflow_slurm", "gpu_memory", 0)), unit="MB",
                                          significant=False, description="memory per GPU (--mem-per-gpu); "
                                          "default unit MB; 0: the cluster's default")
    slurm_account = luigi.Parameter(default=cfg_option("taggerflow_slurm", "account", ""), significant=False,
                                    description="account the jobs are charged to (--account); default: the user's")
    slurm_shared_fs = luigi.BoolParameter(default=cfg_flag("taggerflow_slurm", "shared_fs", True),
                                          parsing=luigi.BoolParameter.EXPLICIT_PARSING, significant=False,
                                          description="nodes see the checkout and its environment; default: True")

    _slurm_resources = {"slurm_runtime", "slurm_memory", "slurm_cpus", "slurm_gpus", "slurm_gpu_memory"}
    exclude_params_branch = _slurm_resources | {"slurm_partition", "slurm_shared_fs", "slurm_account"}
    exclude_params_req = set(_slurm_resources)

    def slurm_output_directory(self):
        return self._job_dir("slurm")

    def slurm_output_postfix(self):
        # per resource request, as for HTCondor
        return self._resources_key(self._slurm_resources | {"slurm_partition", "slurm_account", "slurm_shared_fs"})

    def slurm_log_directory(self):
        return self._log_dir("slurm")

    def slurm_bootstrap_file(self):
        return self._bootstrap()

    def slurm_job_manager_cls(self):
        return TaggerflowSlurmJobManager

    def slurm_workflow_requires(self):
        reqs = super().slurm_workflow_requires()
        if not self.slurm_shared_fs:
            reqs["bundle"] = self._bundle()
        return reqs

    def slurm_cmdline_args(self):
        return self._job_cmdline_args("slurm")

    def slurm_job_config(self, config, job_num, branches):
        self._prepare(config, "slurm")
        config.arguments = self._own_job_arguments(config.arguments)
        # one log per attempt, named by the Slurm job id
        config.stdout = "stdout.%j.txt"
        config.stderr = "stderr.%j.txt"
        content = config.custom_content
        minutes = max(1, int(round(self.slurm_runtime * 60)))
        content.append(("time", f"{minutes // 60:02d}:{minutes % 60:02d}:00"))
        content.append(("mem", f"{int(round(self.slurm_memory))}M"))
        content.append(("cpus-per-task", int(self.slurm_cpus)))
        if self.slurm_partition:
            config.partition = self.slurm_partition
        if self.slurm_gpus > 0:
            content.append(("gres", f"gpu:{self.slurm_gpus}"))
            if self.slurm_gpu_memory > 0:
                content.append(("mem-per-gpu", f"{int(round(self.slurm_gpu_memory))}M"))
        if self.slurm_account:
            content.append(("account", self.slurm_account))
        # a bare environment, like HTCondor's, plus what the job needs
        env = ",".join(f"{k}={v}" for k, v in self.job_environment("slurm").items())
        content.append(("export", f"NONE,{env}"))
        return config
