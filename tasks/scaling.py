"""FeatureScaling (moments and quantiles per group of shards) and MergeScaling (the scaling files)."""

from __future__ import annotations

import os

import luigi

from tasks.shuffle import ShuffleMergeSpectral, shard_paths, verify_task_shards
from workflows import Workflow, WorkflowOptions


class FeatureScaling(Workflow):
    """Per branch: moments per variable and cone (count, mean, M2, min, max, NaN/inf counts), per-file
    quantiles and cumulative snapshots every ``scaling.log_step`` files (``moments_<b>.json``)."""

    files_per_job = luigi.IntParameter(default=1, description="shards per branch; default: 1")
    n_jobs = luigi.IntParameter(default=0, description="number of branches, the shards spread evenly over "
                                "them (overrides --files-per-job when > 0); default: 0")
    config_sections = ("features", "scaling")

    def create_branch_map(self):
        paths = shard_paths(self)
        if self.n_jobs > 0:
            # contiguous groups whose sizes differ by at most one; never an empty branch
            n = min(int(self.n_jobs), len(paths))
            bounds = [len(paths) * i // n for i in range(n + 1)]
            return [paths[bounds[i]:bounds[i + 1]] for i in range(n)]
        n = max(1, int(self.files_per_job))
        return [paths[i:i + n] for i in range(0, len(paths), n)]

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["shards"] = ShuffleMergeSpectral.req_different_branching(self, branch=-1)
        return reqs

    def requires(self):
        return {"shards": ShuffleMergeSpectral.req_different_branching(self, branch=-1)}

    def store_parts(self):
        split = f"n_jobs_{self.n_jobs}" if self.n_jobs > 0 else f"files_per_job_{self.files_per_job}"
        return super().store_parts() + (split,)

    def output(self):
        return self.local_target(f"moments_{self.branch}.json")

    def run(self):
        from taggerflow.scaling.jobio import feature_scaling_job
        from taggerflow.utils import write_json

        verify_task_shards(self, self.branch_data)
        write_json(self.output().path, feature_scaling_job(self.cfg, list(self.branch_data)))


class MergeScaling(WorkflowOptions):
    """Merge the FeatureScaling branches into ``scaling.json`` ({type: {var: {cone: {...}}}}), with
    ``scaling_umami.json``, ``norm_dict.yaml``, ``scaling_report.json`` and ``plots/`` beside it
    (scaling.json is written last: it exists only when the others do)."""

    files_per_job = FeatureScaling.files_per_job
    n_jobs = FeatureScaling.n_jobs

    def requires(self):
        return FeatureScaling.req(self)

    def output(self):
        return self.local_target("scaling.json")

    def run(self):
        from taggerflow.scaling.merge import write_scaling_outputs

        targets = self.input()["collection"].targets
        write_scaling_outputs(self.cfg, [targets[b].path for b in sorted(targets)],
                              os.path.dirname(self.output().path))
