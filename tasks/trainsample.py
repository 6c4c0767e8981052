"""WriteTrainSample (umami-layout HDF5 per split), WeightHistogram (what train_sample.weights
flattens) and ToRecords (TFRecord shards)."""

from __future__ import annotations

from tasks.sample import SampleParameter
from tasks.scaling import MergeScaling
from tasks.shuffle import ShuffleMergeSpectral, shard_paths, verify_task_shards
from workflows import Workflow, WorkflowOptions


class WeightHistogram(WorkflowOptions):
    """Candidates per (class, pt bin, |eta| bin) of all shards (resampling bins): the spectra the
    ``train_sample.weights`` option flattens, computed once for every WriteTrainSample branch."""


    def requires(self):
        return ShuffleMergeSpectral.req(self)

    def output(self):
        return self.local_target("weight_histogram.json")

    def run(self):
        from taggerflow.trainsample import class_weight_table, weight_histogram
        from taggerflow.utils import write_json

        cfg = self.cfg
        verify_task_shards(self, shard_paths(self))
        counts = weight_histogram(cfg, shard_paths(self))
        rs = cfg.raw["resampling"]
        write_json(self.output().path, {"classes": cfg.class_names, "pt_bins": rs["pt_bins"],
                                        "eta_bins": rs["eta_bins"], "counts": counts.tolist(),
                                        "weights": class_weight_table(counts).tolist()})


class WriteTrainSample(SampleParameter, Workflow):
    """One branch per shard: ``train_<i>.h5``, ``validation_<i>.h5``, ``test_<i>.h5`` (``--sample control``:
    of the control sample, scaled with the main sample's MergeScaling, with ``jets/is_data``)."""

    config_sections = ("train_sample",)

    def create_branch_map(self):
        return shard_paths(self)

    def _weights(self) -> bool:
        from taggerflow.trainsample import options

        return options(self.cfg).weights

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["shards"] = ShuffleMergeSpectral.req_different_branching(self, branch=-1)
        reqs["scaling"] = MergeScaling.req(self)
        if self._weights():
            reqs["weights"] = WeightHistogram.req(self)
        return reqs

    def requires(self):
        reqs = {"shards": ShuffleMergeSpectral.req_different_branching(self, branch=-1),
                "scaling": MergeScaling.req(self)}
        if self._weights():
            reqs["weights"] = WeightHistogram.req(self)
        return reqs

    def output(self):
        return {s: self.local_target(f"{s}_{self.branch}.h5") for s in ("train", "validation", "test")}

    def run(self):
        import os

        import numpy as np

        from taggerflow.paths import portable_path
        from taggerflow.trainsample import write_train_sample
        from taggerflow.utils import read_json

        verify_task_shards(self, [self.branch_data])
        inputs = self.input()
        scaling = read_json(inputs["scaling"].path)
        counts = np.asarray(read_json(inputs["weights"].path)["counts"]) if "weights" in inputs else None
        outputs = {s: t.path for s, t in self.output().items()}
        # the shard as stored (taggerflow.paths) and the configuration's file name: the same
        # attributes wherever the data directory and the configuration are (config_hash: its content)
        meta = {"source": portable_path(self.branch_data, self.cfg.base_dir),
                "config": os.path.basename(self.cfg.path)}
        write = write_train_sample
        if self.sample == "control":
            from taggerflow.control_sample import write_control_sample as write
        # config_hash: taggerflow.trainsample.train_sample_hash, over this task's sections
        # (TRAIN_SAMPLE_SECTIONS = all_config_sections(), tests/test_config_sections.py)
        counts = write(self.cfg, [self.branch_data], scaling, outputs, meta=meta, weight_counts=counts)
        self.publish_message(f"branch {self.branch}: {counts}")


class ToRecords(Workflow):
    """One branch per WriteTrainSample branch: TFRecords of its train and validation files,
    ``records.chunk_size`` candidates per record (plus ``records.add_vars``), with a metadata JSON each."""

    config_sections = ("records",)

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

        rec = self.cfg.raw["records"]
        chunk = int(rec["chunk_size"])
        add_vars = list(rec.get("add_vars") or [])
        for split, out in self.output().items():
            meta = write_records(self.input()[split].path, out["records"].path, chunk, add_vars=add_vars)
            write_metadata(out["meta"].path, {out["records"].path: meta})
