"""Training (one branch per training configuration) and ConvertLwtnn (lwtnn JSON + check)."""

from __future__ import annotations

import law
import luigi

from tasks.shuffle import verified_shard_paths
from tasks.summary import pipeline_summary
from tasks.scaling import MergeScaling
from tasks.trainsample import ToRecords, WriteTrainSample
from workflows import Workflow


class Training(Workflow):
    """Train the models of ``training.variants`` (one branch each) from the TFRecords, or from the
    training HDF5 files for a variant with ``source: h5``. A variant with an ``adversary`` trains
    against the control sample (taggerflow.adversarial_run: the HDF5 files of both samples, the
    control's from ``WriteTrainSample --sample control``). Interrupted trainings resume from their
    last epoch checkpoint."""

    config_sections = ("training", "control")

    def create_branch_map(self):
        return [v["name"] for v in self.cfg.training_variants()]

    def _variant(self) -> dict:
        return next(v for v in self.cfg.training_variants() if v["name"] == self.branch_data)

    def _needs_records(self) -> bool:
        # TFRecords only for the variants that read them (the workflow: for any variant)
        return any(v["source"] == "records" and not _adversarial(v) for v in self._variants(resolved=True))

    def _variants(self, resolved: bool = False) -> list[dict]:
        variants = self.cfg.resolved_variants() if resolved else self.cfg.training_variants()
        return [v for v in variants if v["name"] == self.branch_data] if self.is_branch() else variants

    def _needs_control(self) -> bool:
        return any(_adversarial(v) for v in self._variants())

    def workflow_requires(self):
        reqs = super().workflow_requires()
        if self._needs_records():
            reqs["records"] = ToRecords.req_different_branching(self, branch=-1)
        reqs["train_sample"] = WriteTrainSample.req_different_branching(self, branch=-1)
        if self._needs_control():
            reqs["control_sample"] = WriteTrainSample.req_different_branching(self, branch=-1, sample="control")
        return reqs

    def requires(self):
        reqs = {"train_sample": WriteTrainSample.req_different_branching(self, branch=-1)}
        if self._needs_records():
            reqs["records"] = ToRecords.req_different_branching(self, branch=-1)
        if self._needs_control():
            reqs["control_sample"] = WriteTrainSample.req_different_branching(self, branch=-1, sample="control")
        return reqs

    def output(self):
        name = self.branch_data
        return {"model": self.local_target(name, "model.keras"),
                "history": self.local_target(name, "history.csv"),
                "summary": self.local_target(name, "summary.json"),
                "config": self.local_target(name, "config.json"),
                **({"selection": self.local_target(name, "selection.json")} if _adversarial(self._variant()) else {})}

    def run(self):
        from taggerflow.config import resolve_training
        from taggerflow.records import load_metadata
        from taggerflow.training import h5_metadata, sample_weighted, train_model
        from taggerflow.trainsample import sequence_variables
        from taggerflow.utils import job_seed

        cfg = self.cfg
        variant = self._variant()
        samples = self.input()["train_sample"]["collection"].targets
        h5 = {s: [samples[b][s].path for b in sorted(samples)] for s in ("train", "validation", "test")}
        if _adversarial(variant):
            return self._run_adversarial(variant, h5)
        if resolve_training(variant)["source"] == "h5":
            train, val = h5["train"], h5["validation"]
            meta = h5_metadata(h5["train"][0], cfg.raw["records"].get("add_vars") or [])
        else:
            records = self.input()["records"]["collection"].targets
            train = [records[b]["train"]["records"].path for b in sorted(records)]
            val = [records[b]["validation"]["records"].path for b in sorted(records)]
            meta = load_metadata(records[min(records)]["train"]["meta"].path)
        seed = int(job_seed(cfg.seed, "training", self.branch_data).generate_state(1)[0] % (2**31))
        out = {k: t.path for k, t in self.output().items()}
        out["checkpoint_dir"] = self.local_path(self.branch_data, "checkpoint")
        out["tensorboard"] = self.local_path(self.branch_data, "tensorboard")
        out["mlruns"] = self.local_path("mlruns")
        counts = class_counts(h5["train"], len(cfg.class_names))
        # per-constituent widths as written: the collection's variables plus concat_jet_tracks
        seq_vars = sequence_variables(cfg)
        seqs = {n: (c.n_max, len(seq_vars[n])) for n, c, _ in cfg.sequences()}
        summary = train_model(variant, cfg.class_names, seqs, len(cfg.candidate_variables), train, val, meta,
                              h5["test"], out, seed, log=self.publish_message, class_counts=counts,
                              weighted_sample=sample_weighted(h5["train"]))
        from taggerflow.metrics import format_aucs, headline_pairs
        from taggerflow.evaluation_config import evaluation_config

        pairs = headline_pairs(cfg.class_names, evaluation_config(cfg)["signals"][0])
        self.publish_message(f"{self.branch_data}: test accuracy {summary['test']['accuracy']:.4f}, "
                             f"{format_aucs(summary['test']['auc'], pairs)}")
        for warning in summary["test"]["warnings"]:
            self.publish_message(f"{self.branch_data}: warning: {warning}")

    def _run_adversarial(self, variant: dict, h5: dict[str, list[str]]) -> None:
        from taggerflow.adversarial_run import train_adversarial_variant
        from taggerflow.trainsample import sequence_variables
        from taggerflow.utils import job_seed

        cfg = self.cfg
        control = self.input()["control_sample"]["collection"].targets
        control_h5 = {s: [control[b][s].path for b in sorted(control)] for s in ("train", "validation", "test")}
        seed = int(job_seed(cfg.seed, "training", self.branch_data).generate_state(1)[0] % (2**31))
        out = {k: t.path for k, t in self.output().items()}
        out["checkpoint_dir"] = self.local_path(self.branch_data, "checkpoint")
        out["plots"] = self.local_path(self.branch_data, "plots")
        seq_vars = sequence_variables(cfg)
        seqs = {n: (c.n_max, len(seq_vars[n])) for n, c, _ in cfg.sequences()}
        summary = train_adversarial_variant(variant, cfg.class_names, seqs, [v.name for v in cfg.candidate_variables],
                                            h5, control_h5, out, seed, log=self.publish_message)
        chosen = summary["adversarial"]["chosen"]
        self.publish_message(f"{self.branch_data}: test accuracy {summary['test']['accuracy']:.4f}; exported "
                             f"epoch {chosen['epoch']}: {chosen['reason']}")


def _adversarial(variant: dict) -> bool:
    return variant.get("adversary") is not None


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

    sequence_names = law.CSVParameter(default=(), description="names of the sequences in the experiment's "
                                      "software, as sequence=name pairs (e.g. pfcand=tracks_r22default_sd0sort); "
                                      "override export.sequence_names; default: the config's")

    config_sections = ("export",)

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

    def store_parts(self):
        return super().store_parts() + sequence_names_part(self)

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

        training = self.input()["training"]
        out = {k: t.path for k, t in self.output().items() if k != "summary"}
        export_model(training["model"].path, self.cfg, read_json(self.input()["scaling"].path),
                     verified_shard_paths(self), out, training_summary=read_json(training["summary"].path),
                     log=self.publish_message, sequence_names=parse_sequence_names(self.sequence_names),
                     variant=self.branch_data)
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
    sequence_names = ConvertLwtnn.sequence_names

    def store_parts(self):
        return super().store_parts() + sequence_names_part(self)

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
                             read_json(self.input()["scaling"].path), verified_shard_paths(self), int(self.n_check),
                             float(self.cfg.raw["export"]["tolerance"]),
                             sequence_names=parse_sequence_names(self.sequence_names))
        for kind, res in result.items():
            self.publish_message(format_table(res).replace("lwtnn vs", f"{kind} vs"))
        failed = [k for k, r in result.items() if not r["passed"]]
        if failed:
            raise RuntimeError(f"{', '.join(failed)} check failed: max |diff| above {result[failed[0]]['tolerance']:g}")
        write_json(self.output().path, result)


def parse_sequence_names(pairs) -> dict[str, str]:
    """--sequence-names pfcand=tracks_r22default_sd0sort,... -> {"pfcand": "tracks_r22default_sd0sort", ...}"""
    out = {}
    for pair in pairs or ():
        key, sep, value = str(pair).partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"--sequence-names: expected sequence=name, got '{pair}'")
        out[key.strip()] = value.strip()
    return out


def sequence_names_part(task) -> tuple[str, ...]:
    """Another output directory for other --sequence-names (the files differ, the config does not)."""
    pairs = sorted(parse_sequence_names(task.sequence_names).items())
    return (("seqnames_" + "_".join(f"{k}-{v}" for k, v in pairs)),) if pairs else ()
