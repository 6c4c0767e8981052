"""FeatureScaling (moments per group of shards) and MergeScaling (one scaling file)."""

from __future__ import annotations

import luigi

from tasks.shuffle import ShuffleMergeSpectral, shard_paths
from workflows import Task, Workflow


class FeatureScaling(Workflow):
    """Moments (count, mean, M2, min, max, NaN/inf counts) of every input variable, per branch."""

    files_per_job = luigi.IntParameter(default=1, description="shards per branch; default: 1")
    config_sections = ShuffleMergeSpectral.config_sections + ("features",)

    def create_branch_map(self):
        paths = shard_paths(self)
        n = max(1, int(self.files_per_job))
        return [paths[i:i + n] for i in range(0, len(paths), n)]

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["shards"] = ShuffleMergeSpectral.req_different_branching(self, branch=-1)
        return reqs

    def requires(self):
        return {"shards": ShuffleMergeSpectral.req_different_branching(self, branch=-1)}

    def store_parts(self):
        return super().store_parts() + (f"files_per_job_{self.files_per_job}",)

    def output(self):
        return self.local_target(f"moments_{self.branch}.json")

    def run(self):
        from taggerflow.scaling import accumulate, statistics_to_json
        from taggerflow.utils import write_json

        stats = accumulate(self.cfg, self.branch_data)
        write_json(self.output().path, {"files": list(self.branch_data), "moments": statistics_to_json(stats)})


class MergeScaling(Task):
    """Merge the FeatureScaling branches into ``scaling.json`` ({type: {var: {cone: {...}}}})."""

    files_per_job = FeatureScaling.files_per_job
    config_sections = FeatureScaling.config_sections

    def requires(self):
        return FeatureScaling.req(self)

    def output(self):
        return self.local_target("scaling.json")

    def run(self):
        from taggerflow.scaling import merge_statistics, scaling_parameters, statistics_from_json
        from taggerflow.utils import read_json, write_json

        targets = self.input()["collection"].targets
        jobs, names = [], []
        for b in sorted(targets):
            jobs.append(statistics_from_json(read_json(targets[b].path)["moments"]))
            names.append(targets[b].path)
        merged = merge_statistics(jobs, names)
        write_json(self.output().path, scaling_parameters(self.cfg, merged))
