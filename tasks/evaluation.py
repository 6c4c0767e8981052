"""Evaluation (per training: predictions, metrics, working points, plots), EvaluationReport
(all trainings compared) and Pipeline (everything the demo produces)."""

from __future__ import annotations

import law

from taggerflow.evaluation_config import DEFAULT_EVALUATION, evaluation_config, signal_parameters_by_id  # noqa: F401
from tasks.trainsample import WriteTrainSample
from tasks.training import ConvertLwtnn, Training
from workflows import Workflow, WorkflowOptions


class Evaluation(Workflow):
    """One branch per training: test-split predictions (HDF5 beside their inputs), metrics.json
    (AUCs, working points, and in bins of pt and |eta| AUCs, ROC curves, efficiencies and
    rejections at inclusive and per-bin thresholds), working_points.json (with the per-bin
    thresholds under 'binned') and plots."""

    config_sections = ("evaluation",)

    def create_branch_map(self):
        return Training.req_different_branching(self, branch=-1).get_branch_map()

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["training"] = Training.req_different_branching(self, branch=-1)
        reqs["train_sample"] = WriteTrainSample.req_different_branching(self, branch=-1)
        return reqs

    def requires(self):
        return {"training": Training.req_different_branching(self, branch=self.branch),
                "train_sample": WriteTrainSample.req_different_branching(self, branch=-1)}

    def output(self):
        from taggerflow.training import evaluation_plots

        name = self.branch_data
        ev = evaluation_config(self.cfg)
        out = {"predictions": self.local_target(name, "predictions_test.h5"),
               "metrics": self.local_target(name, "metrics.json"),
               "working_points": self.local_target(name, "working_points.json")}
        for key, fname in evaluation_plots(self.cfg.class_names, ev["signals"]).items():
            out[key] = self.local_target(name, "plots", fname)
        for s in ev["signals"]:
            out[f"significance_{s}"] = self.local_target(name, "plots", f"significance_{s}.png")
            if ev["signal_parameters"]:
                out[f"eff_map_{s}"] = self.local_target(name, "plots", f"eff_map_{s}.png")
        return out

    def run(self):
        from taggerflow.training import evaluate_training
        from taggerflow.utils import read_json

        samples = self.input()["train_sample"]["collection"].targets
        training = self.input()["training"]
        out = {k: t.path for k, t in self.output().items()}
        metrics = evaluate_training(training["model"].path, [samples[b]["test"].path for b in sorted(samples)],
                                    training["history"].path, self.cfg.class_names, evaluation_config(self.cfg),
                                    out, name=self.branch_data, training_config=read_json(training["config"].path))
        from taggerflow.metrics import format_aucs

        aucs = format_aucs({p: m["auc"] for p, m in metrics["pairs"].items()}, list(metrics["pairs"]))
        self.publish_message(f"{self.branch_data}: accuracy {metrics['accuracy']:.4f}; {aucs}")
        for warning in metrics["warnings"]:
            self.publish_message(f"{self.branch_data}: warning: {warning}")


class EvaluationReport(WorkflowOptions):
    """All trainings side by side: ROC curves with ratio panels, a table of AUCs and rejections,
    and a markdown report linking every plot."""


    def requires(self):
        return Evaluation.req(self)

    def output(self):
        return {"report": self.local_target("report.md"), "summary": self.local_target("summary.json")}

    def run(self):
        from taggerflow.report import write_evaluation_report

        evals = self.input()["collection"].targets
        branch_map = self.requires().get_branch_map()
        results = {branch_map[b]: {k: t.path for k, t in evals[b].items()} for b in sorted(evals)}
        write_evaluation_report(results, self.output()["report"].path, self.output()["summary"].path,
                                title=f"taggerflow evaluation: config '{self.cfg.name}', version '{self.version}'")
        self.publish_message(f"report: {self.output()['report'].path}")


class Pipeline(WorkflowOptions, law.WrapperTask):
    """Everything the chain produces: the lwtnn files of every training and the evaluation report."""


    def requires(self):
        return {"lwtnn": ConvertLwtnn.req(self), "report": EvaluationReport.req(self)}
