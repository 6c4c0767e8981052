"""WriteTrainSample (umami-layout HDF5 per split) and ToRecords (TFRecord shards)."""

from __future__ import annotations

from tasks.scaling import MergeScaling
from tasks.shuffle import ShuffleMergeSpectral, shard_paths
from workflows import Workflow


class WriteTrainSample(Workflow):
    """One branch per shard: ``train_<i>.h5``, ``validation_<i>.h5``, ``test_<i>.h5``."""

    config_sections = MergeScaling.config_sections + ("train_sample",)

    def create_branch_map(self):
        return shard_paths(self)

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["shards"] = ShuffleMergeSpectral.req_different_branching(self, branch=-1)
        reqs["scaling"] = MergeScaling.req(self)
        return reqs

    def requires(self):
        return {"shards": ShuffleMergeSpectral.req_different_branching(self, branch=-1),
                "scaling": MergeScaling.req(self)}

    def output(self):
        return {s: self.local_target(f"{s}_{self.branch}.h5") for s in ("train", "validation", "test")}

    def run(self):
        from taggerflow.trainsample import write_train_sample
        from taggerflow.utils import read_json

        scaling = read_json(self.input()["scaling"].path)
        outputs = {s: t.path for s, t in self.output().items()}
        counts = write_train_sample(self.cfg, [self.branch_data], scaling, outputs,
                                    meta={"source": self.branch_data, "config": self.cfg.path})
        self.publish_message(f"branch {self.branch}: {counts}")


class ToRecords(Workflow):
    """One branch per WriteTrainSample branch: TFRecords of its train and validation files,
    ``records.chunk_size`` candidates per record, with a metadata JSON each."""

    config_sections = WriteTrainSample.config_sections + ("records",)

    def create_branch_map(self):
        return WriteTrainSample.req_different_branching(self, branch=-1).get_branch_map()

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["train_sample"] = WriteTrainSample.req_different_branching(self, branch=-1)
        return reqs

    def requires(self):
        return WriteTrainSample.req_different_branching(self, branch=self.branch)

    def output(self):
        return {s: {"records": self.local_target(f"{s}_{self.branch}.tfrecord"),
                    "meta": self.local_target(f"{s}_{self.branch}.json")} for s in ("train", "validation")}

    def run(self):
        from taggerflow.records import write_metadata, write_records

        chunk = int(self.cfg.raw["records"]["chunk_size"])
        for split, out in self.output().items():
            meta = write_records(self.input()[split].path, out["records"].path, chunk)
            write_metadata(out["meta"].path, {out["records"].path: meta})
