"""Training (one branch per training configuration) and ConvertLwtnn (lwtnn JSON + check)."""

from __future__ import annotations

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
                "summary": self.local_target(name, "summary.json")}

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
        summary = train_model(variant, cfg.class_names, {n: (c.n_max, len(c.variables)) for n, c, _ in cfg.sequences()},
                              len(cfg.candidate_variables), train, val, meta, test, out, seed,
                              log=self.publish_message)
        self.publish_message(f"{self.branch_data}: test accuracy {summary['test']['accuracy']:.4f}, "
                             f"AUC tau vs jet {summary['test']['auc'].get('tau_vs_jet', float('nan')):.4f}")


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
                "check": self.local_target(name, "lwtnn_check.json"),
                "summary": self.local_target(name, "pipeline_summary.md")}

    def run(self):
        import keras

        import taggerflow.models  # noqa: F401  (registers the custom layers)
        from taggerflow.export import check, check_inputs, convert, format_table
        from taggerflow.lwtnn import write_lwtnn
        from tasks.summary import pipeline_summary
        from taggerflow.utils import read_json, write_json
        from taggerflow.utils import atomic_path

        cfg = self.cfg
        ex = cfg.raw["export"]
        seq_names = ex.get("sequence_names") or {}
        scaling = read_json(self.input()["scaling"].path)
        model = keras.models.load_model(self.input()["training"]["model"].path)
        config, clamps = convert(model, cfg, scaling, seq_names)
        inputs = check_inputs(cfg, shard_paths(self), scaling, int(ex["n_check"]))
        result = check(model, config, clamps, inputs, [n for n, _, _ in cfg.sequences()], seq_names,
                       tolerance=float(ex["tolerance"]))
        self.publish_message(format_table(result))
        if not result["passed"]:
            raise RuntimeError(f"lwtnn check failed: max |diff| {result['max_abs_diff']:.3g} > "
                               f"{result['tolerance']:g}; no lwtnn file written")
        out = self.output()
        write_json(out["check"].path, result)
        write_lwtnn(config, out["lwtnn"].path)
        text = pipeline_summary(self, self.branch_data)
        with atomic_path(out["summary"].path, suffix=".md") as tmp:
            with open(tmp, "w") as f:
                f.write(text)
        self.publish_message(text)
        self.publish_message(f"lwtnn JSON: {out['lwtnn'].path}")
