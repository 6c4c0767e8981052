"""Workflow bases: every workflow task runs with --workflow local, htcondor or slurm.

Batch parameters are ``significant=False``: they change how a task runs, never what it produces,
so they do not enter the task's identity or output paths. Site defaults live in law.cfg
([taggerflow_htcondor], [taggerflow_slurm]) and are overridable per task on the command line.
"""

from __future__ import annotations

import os

import law
import luigi

from workflows.base import BASE_DIR, Task, data_dir

law.contrib.load("htcondor", "slurm")


def _cfg(section: str, option: str, default):
    value = law.config.get_expanded(section, option, default)
    return value if value not in (None, "") else default


class _BatchMixin:
    """Shared pieces of the remote workflows."""

    def _bootstrap(self):
        return law.JobInputFile(os.path.join(BASE_DIR, "bootstrap.sh"), share=True, render_job=True)

    def _job_dir(self, kind: str):
        return law.LocalDirectoryTarget(os.path.join(self.local_path(), f"{kind}_jobs"))

    def _render(self, config):
        config.render_variables["taggerflow_base"] = BASE_DIR
        config.render_variables["taggerflow_data"] = data_dir()
        return config


class HTCondorWorkflow(_BatchMixin, law.htcondor.HTCondorWorkflow):
    htcondor_runtime = law.DurationParameter(default=float(_cfg("taggerflow_htcondor", "runtime", 2.0)),
                                             unit="h", significant=False,
                                             description="maximum runtime per job; default: 2h")
    htcondor_memory = law.BytesParameter(default=float(_cfg("taggerflow_htcondor", "memory", 2000)),
                                         unit="MB", significant=False,
                                         description="requested memory per job; default: 2000MB")
    htcondor_cpus = luigi.IntParameter(default=1, significant=False, description="CPUs per job")
    htcondor_gpus = luigi.IntParameter(default=0, significant=False, description="GPUs per job")
    htcondor_gpu_memory = law.BytesParameter(default=0.0, unit="MB", significant=False,
                                             description="minimum GPU memory; 0: any")
    htcondor_flavor = luigi.ChoiceParameter(default=_cfg("taggerflow_htcondor", "flavor", "default"),
                                            choices=("default", "cern", "naf"), significant=False,
                                            description="site conventions for the runtime request")
    htcondor_accounting_group = luigi.Parameter(default=_cfg("taggerflow_htcondor", "accounting_group", ""),
                                                significant=False, description="accounting group")
    htcondor_requirements = luigi.Parameter(default="", significant=False,
                                            description="extra requirements expression")

    exclude_params_branch = {"htcondor_runtime", "htcondor_memory", "htcondor_cpus", "htcondor_gpus",
                             "htcondor_gpu_memory", "htcondor_flavor", "htcondor_accounting_group",
                             "htcondor_requirements"} | law.htcondor.HTCondorWorkflow.exclude_params_branch

    def htcondor_output_directory(self):
        return self._job_dir("htcondor")

    def htcondor_bootstrap_file(self):
        return self._bootstrap()

    def htcondor_job_config(self, config, job_num, branches):
        self._render(config)
        config.custom_content.append(("getenv", "false"))
        config.custom_content.append(("request_cpus", self.htcondor_cpus))
        config.custom_content.append(("request_memory", f"{int(self.htcondor_memory)}"))
        runtime_s = int(self.htcondor_runtime * 3600)
        if self.htcondor_flavor == "cern":
            config.custom_content.append(("+MaxRuntime", runtime_s))
        elif self.htcondor_flavor == "naf":
            config.custom_content.append(("+RequestRuntime", runtime_s))
        config.custom_content.append(("allowed_execute_duration", runtime_s))
        if self.htcondor_gpus > 0:
            config.custom_content.append(("request_gpus", self.htcondor_gpus))
            if self.htcondor_gpu_memory > 0:
                config.custom_content.append(("gpus_minimum_memory", int(self.htcondor_gpu_memory)))
        if self.htcondor_accounting_group:
            config.custom_content.append(("accounting_group", self.htcondor_accounting_group))
        if self.htcondor_requirements:
            config.custom_content.append(("requirements", self.htcondor_requirements))
        return config


class SlurmWorkflow(_BatchMixin, law.slurm.SlurmWorkflow):
    slurm_runtime = law.DurationParameter(default=float(_cfg("taggerflow_slurm", "runtime", 2.0)),
                                          unit="h", significant=False, description="walltime per job")
    slurm_memory = law.BytesParameter(default=float(_cfg("taggerflow_slurm", "memory", 2000)), unit="MB",
                                      significant=False, description="memory per job")
    slurm_partition = luigi.Parameter(default=_cfg("taggerflow_slurm", "partition", ""), significant=False,
                                      description="partition; default: the cluster's")
    slurm_gpus = luigi.IntParameter(default=0, significant=False, description="GPUs per job")

    exclude_params_branch = {"slurm_runtime", "slurm_memory", "slurm_partition", "slurm_gpus"} | \
        law.slurm.SlurmWorkflow.exclude_params_branch

    def slurm_output_directory(self):
        return self._job_dir("slurm")

    def slurm_bootstrap_file(self):
        return self._bootstrap()

    def slurm_job_config(self, config, job_num, branches):
        self._render(config)
        minutes = max(1, int(self.slurm_runtime * 60))
        config.custom_content.append(("time", f"{minutes // 60:02d}:{minutes % 60:02d}:00"))
        config.custom_content.append(("mem", f"{int(self.slurm_memory)}M"))
        if self.slurm_partition:
            config.custom_content.append(("partition", self.slurm_partition))
        if self.slurm_gpus > 0:
            config.custom_content.append(("gres", f"gpu:{self.slurm_gpus}"))
        return config


class Workflow(Task, law.LocalWorkflow, HTCondorWorkflow, SlurmWorkflow):
    """A taggerflow workflow: local by default, --workflow htcondor or slurm to submit jobs."""

    exclude_index = True
