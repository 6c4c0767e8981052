"""law machinery of taggerflow: the base task and the workflow bases (local, HTCondor, Slurm)."""

from workflows.base import Task  # noqa: F401
from workflows.remote import HTCondorWorkflow, SlurmWorkflow, Workflow  # noqa: F401
from workflows.stages import WorkflowOptions  # noqa: F401,E402
