"""Batch options given once for the whole DAG, and what a job's command line may carry.

``law run Pipeline --version v --workflow htcondor --poll-interval 10s`` must run every workflow stage
as batch jobs with those options. law passes a workflow's parameters on to the tasks it requires
only by name (``req``), so two things are needed:

- plain tasks between workflows (MergeScaling, WeightHistogram, EvaluationReport, Pipeline, ...) carry
  the workflow choice and the shared batch options (:class:`WorkflowOptions`) and pass them on;
- between workflows of different branching (``req_different_branching``) law drops every batch option
  (its ``exclude_params_branch``); the shared ones (:data:`SHARED_OPTIONS`) are kept.

Resource requests (runtime, memory, CPUs, GPUs, requirements, batch name) are never passed on: they
are set per task (``--Training-htcondor-gpus 1``, or ``[luigi_Training]`` in law.cfg).

What a job's command line keeps of the submitting one: workflows.job_arguments.
"""

from __future__ import annotations

import luigi

from workflows.base import Task
from workflows.job_arguments import SHARED_OPTIONS
from workflows.remote import BATCH_OPTIONS, Workflow  # noqa: F401  (stages.BATCH_OPTIONS)

_OWN = {name for name, _ in Task.get_params()}


class WorkflowOptions(Task):
    """A plain task between workflows: takes --workflow and the shared batch options and passes them
    on (law's req copies parameters by name) to the workflows it requires."""

    exclude_index = True

    # a plain task's identity never depends on how its upstream runs
    workflow = luigi.Parameter(default="", significant=False,
                               description="local, htcondor or slurm: how the workflows this task requires "
                               "run, passed on through the whole DAG; default: local")


for _name, _param in Workflow.get_params():
    if _name in SHARED_OPTIONS and _name not in _OWN and _name != "workflow":
        setattr(WorkflowOptions, _name, _param)
del _name, _param
