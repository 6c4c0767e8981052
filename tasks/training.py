"""Training (one branch per training configuration) and ConvertLwtnn (lwtnn JSON + check)."""

from __future__ import annotations

import luigi

from tasks.shuffle import shard_paths
from tasks.scaling import MergeScaling
from tasks.trainsample import ToRecords, WriteTrainSample
from workflows import Workflow


class Training(Workflow):
    """Train the models of ``training.variants`` (one branch each) from the TFRecords.
    Interrupted trainings resume from their last epoch checkpoint."""

    config_sections = ToRecords.config_sections + ("training",)

    def create_branch_map(self):
        return [v["name"] for v in self.cfg.training_variants()]

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["records"] = ToRecords.req_different_branching(self, branch=-1)
        reqs["train_sample"] = WriteTrainSample.req_different_branching(self, branch=-1)
        return reqs

    def requires(self):
        return {"records": ToRecords.req_different_branching(self, branch=-1),
                "train_sample": WriteTrainSample.req_different_branching(self, branch=-1)}

    def output(self):
        name = self.branch_data
        return {"model": self.local_target(name, "model.keras"),
                "history": self.local_target(name, "history.csv"),
                "summary": self.local_target(name, "summary.json"),
                "config": self.local_target(name, "config.json")}

    def run(self):
        from taggerflow.records import load_metadata
        from taggerflow.training import train_model
        from taggerflow.utils import job_seed

        cfg = self.cfg
        variant = next(v for v in cfg.training_variants() if v["name"] == self.branch_data)
        records = self.input()["records"]["collection"].targets
        samples = self.input()["train_sample"]["collection"].targets
        train = [records[b]["train"]["records"].path for b in sorted(records)]
        val = [records[b]["validation"]["records"].path for b in sorted(records)]
        meta = load_metadata(records[min(records)]["train"]["meta"].path)
        test = [samples[b]["test"].path for b in sorted(samples)]
        seed = int(job_seed(cfg.seed, "training", self.branch_data).generate_state(1)[0] % (2**31))
        out = {k: t.path for k, t in self.output().items()}
        out["checkpoint_dir"] = self.local_path(self.branch_data, "checkpoint")
        out["tensorboard"] = self.local_path(self.branch_data, "tensorboard")
        out["mlruns"] = self.local_path("mlruns")
        counts = class_counts([samples[b]["train"].path for b in sorted(samples)], len(cfg.class_names))
        summary = train_model(variant, cfg.class_names, {n: (c.n_max, len(c.variables)) for n, c, _ in cfg.sequences()},
                              len(cfg.candidate_variables), train, val, meta, test, out, seed,
                              log=self.publish_message, class_counts=counts)
        self.publish_message(f"{self.branch_data}: test accuracy {summary['test']['accuracy']:.4f}, "
                             f"AUC tau vs jet {summary['test']['auc'].get('tau_vs_jet', float('nan')):.4f}")


def class_counts(train_files: list[str], n_classes: int) -> list[int]:
    import h5py
    import numpy as np

    counts = np.zeros(n_classes, dtype=np.int64)
    for path in train_files:
        with h5py.File(path, "r") as f:
            counts += np.bincount(f["jets/labels"][:], minlength=n_classes)
    return counts.tolist()


class ConvertLwtnn(Workflow):
    """The trained models as lwtnn graph JSON (inputs with offsets/scales from the scaling),
    checked against Keras by the project's own numpy lwtnn evaluator."""

    config_sections = Training.config_sections + ("export",)

    def create_branch_map(self):
        return Training.req_different_branching(self, branch=-1).get_branch_map()

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["training"] = Training.req_different_branching(self, branch=-1)
        reqs["scaling"] = MergeScaling.req(self)
        return reqs

    def requires(self):
        return {"training": Training.req_different_branching(self, branch=self.branch),
                "scaling": MergeScaling.req(self)}

    def output(self):
        name = self.branch_data
        return {"lwtnn": self.local_target(name, "lwtnn.json"),
                "check": self.local_target(name, "export_check.json"),
                "onnx": self.local_target(name, "model.onnx"),
                "card": self.local_target(name, "model_card.json"),
                "summary": self.local_target(name, "pipeline_summary.md")}

    def run(self):
        from taggerflow.export import export_model
        from taggerflow.utils import atomic_path, read_json
        from tasks.summary import pipeline_summary

        training = self.input()["training"]
        out = {k: t.path for k, t in self.output().items() if k != "summary"}
        export_model(training["model"].path, self.cfg, read_json(self.input()["scaling"].path), shard_paths(self),
                     out, training_summary=read_json(training["summary"].path), log=self.publish_message)
        text = pipeline_summary(self, self.branch_data)
        with atomic_path(self.output()["summary"].path, suffix=".md") as tmp:
            with open(tmp, "w") as f:
                f.write(text)
        self.publish_message(text)
        self.publish_message(f"lwtnn JSON: {out['lwtnn']}\nONNX: {out['onnx']}\nmodel card: {out['card']}")


class CheckExport(Workflow):
    """Re-check the written lwtnn JSON and ONNX files against Keras (as a deployment reads them),
    on ``--n-check`` test candidates; fails if any score differs by more than export.tolerance."""

    n_check = luigi.IntParameter(default=10000, description="test candidates to check; default: 10000")
    config_sections = ConvertLwtnn.config_sections

    def create_branch_map(self):
        return Training.req_different_branching(self, branch=-1).get_branch_map()

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["export"] = ConvertLwtnn.req_different_branching(self, branch=-1)
        return reqs

    def requires(self):
        return {"export": ConvertLwtnn.req_different_branching(self, branch=self.branch),
                "training": Training.req_different_branching(self, branch=self.branch),
                "scaling": MergeScaling.req(self)}

    def output(self):
        return self.local_target(self.branch_data, f"check_{self.n_check}.json")

    def run(self):
        from taggerflow.export import check_files, format_table
        from taggerflow.utils import read_json, write_json

        exp = self.input()["export"]
        result = check_files(exp["lwtnn"].path, exp["onnx"].path, self.input()["training"]["model"].path, self.cfg,
                             read_json(self.input()["scaling"].path), shard_paths(self), int(self.n_check),
                             float(self.cfg.raw["export"]["tolerance"]))
        for kind, res in result.items():
            self.publish_message(format_table(res).replace("lwtnn vs", f"{kind} vs"))
        failed = [k for k, r in result.items() if not r["passed"]]
        if failed:
            raise RuntimeError(f"{', '.join(failed)} check failed: max |diff| above {result[failed[0]]['tolerance']:g}")
        write_json(self.output().path, result)
