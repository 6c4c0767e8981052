"""Workflow bases: every workflow task runs with --workflow local, htcondor or slurm.

The batch systems are one module each (workflows.htcondor, workflows.slurm) over what they share
(workflows.batch: how a job gets what it needs, its logs, the batch parameters); law's internals
that the fast paths rely on are in workflows.law_compat.
"""

from __future__ import annotations

import law

from workflows.base import Task
from workflows.batch import job_files  # noqa: F401 (the submission files, without submitting)
from workflows.collection import ListedFileCollection
from workflows.htcondor import HTCondorWorkflow
from workflows.job_arguments import SHARED_OPTIONS
from workflows.law_compat import adopt_branch, workflow_getattribute
from workflows.slurm import SlurmWorkflow


class Workflow(Task, law.LocalWorkflow, HTCondorWorkflow, SlurmWorkflow):
    """A taggerflow workflow: local by default, --workflow htcondor or slurm to submit jobs."""

    # the outputs of all branches are checked with one directory listing per output directory
    output_collection_cls = ListedFileCollection

    exclude_index = True

    @classmethod
    def req_different_branching(cls, inst, **kwargs):
        # law drops every batch option between workflows of different branching (its
        # exclude_params_branch); the shared ones (--workflow, --poll-interval, --retries, ...) are
        # given once for the whole DAG and passed on (workflows.stages)
        branching = cls.__dict__.get("_taggerflow_branching_exclude")
        if branching is None:
            branching = cls._taggerflow_branching_exclude = frozenset(cls.exclude_params_branch - SHARED_OPTIONS)
        exclude = set(law.util.make_list(kwargs.pop("_exclude", None) or [])) | branching
        return cls.req(inst, _exclude=exclude, **kwargs)

    @classmethod
    def req(cls, inst, **kwargs):
        task = super().req(inst, **kwargs)
        # wf.req(wf, branch=b) is what law's req_branch does: the branch knows its workflow, instead of
        # creating it again on its first branch_map access (10,000 times for 10,000 branches)
        if (type(inst) is cls and set(kwargs) <= {"branch"} and task is not inst
                and inst.is_workflow() and task.is_branch()):
            adopt_branch(inst, task)
        return task

    # only the attributes law forwards to the workflow proxy take law's (slow) proxy lookup
    __getattribute__ = workflow_getattribute


# every parameter a workflow has for how it runs (never part of what a job computes)
BATCH_OPTIONS = frozenset(name for name, _ in Workflow.get_params()
                          if name not in {n for n, _ in Task.get_params()} and name != "branch")
Workflow.batch_options = BATCH_OPTIONS
