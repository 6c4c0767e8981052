"""What a batch job's command line keeps of the submitting one.

A job runs exactly its own branch: :func:`job_global_args` is what of the submitting command line's
global arguments (``--<Task>-<param>``) a job keeps: only the significant parameters of the tasks its
branch depends on (so that it requires the same upstream outputs), never a batch option, never a
flag of a task its command line does not know (``--Evaluation-workflow`` in a ConvertLwtnn job would
end it with argparse's exit 2, which law reports as "task dependency check failed").

It also holds :data:`SHARED_OPTIONS`, the batch options that mean the same for every stage (given
once for the whole DAG, workflows.stages). Nothing here imports the workflow classes: the batch
mixins (workflows.batch) call it with the workflow's own batch options.
"""

from __future__ import annotations

import luigi
from law.parser import global_cmdline_args

from workflows.law_compat import task_classes

# options of the remote workflows that mean the same for every stage
SHARED_OPTIONS = frozenset({
    "workflow", "retries", "tasks_per_job", "parallel_jobs", "submission_threads", "poll_interval", "poll_fails",
    "walltime", "job_workers", "shuffle_jobs", "ignore_submission", "transfer_logs", "clear_logs",
    "htcondor_pool", "htcondor_scheduler", "htcondor_flavor", "htcondor_accounting_group", "htcondor_shared_fs",
    "slurm_partition", "slurm_account", "slurm_shared_fs",
})


def _families(task) -> set[str]:
    """The task families ``task`` depends on (itself included), following ``requires``."""
    seen: dict[str, object] = {}
    stack = [task]
    while stack:
        t = stack.pop()
        if t.task_id in seen:
            continue
        seen[t.task_id] = t
        stack.extend(luigi.task.flatten(t.requires()))
    return {t.get_task_family() for t in seen.values()}


def _split_family_arg(key: str, registry: dict):
    """``--Training-htcondor-gpus`` -> (Training class, "htcondor_gpus"), or None if no task's flag."""
    name = key[2:]
    best = None
    for family in registry:
        if name.startswith(family + "-") and (best is None or len(family) > len(best)):
            best = family
    if best is None:
        return None
    return registry[best], name[len(best) + 1:].replace("-", "_")


def job_global_args(branch_task, batch_options: frozenset[str]) -> dict[str, str]:
    """The global command-line arguments (law's ``global_cmdline_args``) a job of ``branch_task`` keeps:
    arguments of no task (luigi's ``--log-level`` ...) and of luigi's configuration classes, and of the
    task families ``branch_task`` depends on only their significant parameters that are none of
    ``batch_options`` (the workflow's parameters for how it runs)."""
    args = global_cmdline_args() or {}
    registry = task_classes()
    batch = batch_options
    families = None
    kept = {}
    for key, value in args.items():
        split = _split_family_arg(key, registry)
        if split is not None:
            cls, param_name = split
            if not issubclass(cls, luigi.Config):
                if families is None:
                    families = _families(branch_task)
                params = dict(cls.get_params())
                param = params.get(param_name)
                if (cls.get_task_family() not in families or param is None or not param.significant
                        or param_name in batch):
                    continue
        kept[key] = value
    return kept


def restrict_job_arguments(task, arguments, batch_options: frozenset[str]):
    """law's job arguments (``JobArguments.join()`` strings, one or a list) with the task parameters
    rebuilt: the job's own parameters as law made them, and of the global arguments law forwarded only
    those of :func:`job_global_args`."""
    import base64
    import shlex

    forwarded = global_cmdline_args() or {}
    if not forwarded:
        return arguments
    # once per workflow (Slurm creates a job file per job)
    cache = task.__dict__.setdefault("_taggerflow_dropped_job_args", {})
    key = tuple(forwarded.items())
    if key not in cache:
        kept = job_global_args(task.as_branch(min(task.branch_map)), batch_options)
        cache[key] = {k for k in forwarded if k not in kept}
    dropped = cache[key]
    if not dropped:
        return arguments

    def rebuild(joined: str) -> str:
        parts = joined.split(" ")
        params = shlex.split(base64.b64decode(parts[2]).decode() if parts[2] != "LQ==" else "")
        params = [p for p in params if p.split("=", 1)[0] not in dropped]
        parts[2] = base64.b64encode((" ".join(shlex.quote(p) for p in params) or "-").encode()).decode()
        return " ".join(parts)

    if isinstance(arguments, (list, tuple)):
        return [rebuild(a) for a in arguments]
    return rebuild(arguments)
