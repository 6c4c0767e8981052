"""CompareTrainings: chosen training variants (or one variant across versions) side by side, their
best epochs, overlaid ROC, loss and KS curves, one report.md (taggerflow.compare)."""

from __future__ import annotations

import os

import law
import luigi

from tasks.evaluation import Evaluation
from tasks.training import Training
from workflows import WorkflowOptions


class CompareTrainings(WorkflowOptions):
    """The Training and Evaluation outputs of ``--variants`` (default: every variant of the config),
    for each of ``--versions`` (default: ``--version`` only), compared in one report: per training the
    best epoch and why, the validation loss there, the test AUCs and rejections at the working points,
    and the KS statistics where the training wrote them."""

    variants = law.CSVParameter(default=(), description="training variants to compare, e.g. deepsets,dense; "
                                "default: every variant of the configuration")
    versions = law.CSVParameter(default=(), description="versions whose trainings are compared (each variant "
                                "once per version), e.g. v1,v2; default: --version only")


    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        try:
            self.chosen()
            self.compared_versions()
        except ValueError as e:   # one line on the command line, before anything is scheduled
            if luigi.cmdline_parser.CmdlineParser.get_instance() is not None:
                raise SystemExit(str(e)) from None
            raise

    def chosen(self) -> list[tuple[int, str]]:
        """(branch, variant name) of the compared variants, in the order asked for."""
        names = [v["name"] for v in self.cfg.training_variants()]
        asked = [str(v).strip() for v in self.variants] or names
        unknown = [v for v in asked if v not in names]
        if unknown:
            raise ValueError(f"--variants: unknown variant '{unknown[0]}' (config '{self.cfg.name}' has: "
                             f"{', '.join(names)})")
        if len(set(asked)) != len(asked):
            raise ValueError(f"--variants: a variant named twice ({', '.join(asked)})")
        return [(names.index(v), v) for v in asked]

    def compared_versions(self) -> list[str]:
        versions = [str(v).strip() for v in self.versions] or [str(self.version)]
        if len(set(versions)) != len(versions) or not all(versions):
            raise ValueError(f"--versions: expected distinct version names, got {','.join(versions)}")
        return versions

    def store_parts(self):
        # another selection of trainings, another folder (never overwriting the report of all)
        parts = ["variants_" + "-".join(self.variants)] if self.variants else ["all"]
        if self.versions:
            parts.append("versions_" + "-".join(self.compared_versions()))
        return super().store_parts() + ("_".join(parts),)

    def requires(self):
        chosen = self.chosen()
        # all variants: the same workflows as Pipeline's; a selection: only their branches
        kw = {} if not self.variants else {"branches": tuple((b,) for b, _ in sorted(chosen))}
        return {v: {"training": Training.req(self, version=v, **kw), "evaluation": Evaluation.req(self, version=v, **kw)}
                for v in self.compared_versions()}

    def output(self):
        return {"report": self.local_target("report.md"), "summary": self.local_target("summary.json"),
                "plots": self.local_target("plots", dir=True)}

    def run(self):
        from taggerflow.compare import compare_trainings
        from taggerflow.utils import read_json

        versions = self.compared_versions()
        trainings = {}
        for name_branch, name in self.chosen():
            for v in versions:
                training = self.input()[v]["training"]["collection"].targets[name_branch]
                evaluation = self.input()[v]["evaluation"]["collection"].targets[name_branch]
                history = training["history"].path
                selection = training["selection"].path if "selection" in training else \
                    os.path.join(os.path.dirname(history), "selection.json")
                label = name if len(versions) == 1 else f"{name}@{v}"
                trainings[label] = {"history": history, "summary": training["summary"].path,
                                    "metrics": evaluation["metrics"].path, "selection": selection,
                                    "variant": read_json(training["config"].path)["variant"]}
        out = self.output()
        compare_trainings(trainings, out["report"].path, out["summary"].path, out["plots"].path,
                          title=f"taggerflow: trainings compared (config '{self.cfg.name}', "
                                f"version{'s' if len(versions) > 1 else ''} {', '.join(versions)})")
        self.publish_message(f"report: {out['report'].path}")
