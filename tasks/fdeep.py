"""ConvertFdeep: the trained models as frugally-deep JSON, checked against Keras."""

from __future__ import annotations

from tasks.scaling import MergeScaling
from tasks.shuffle import verified_shard_paths
from tasks.training import Training
from workflows import Workflow


class ConvertFdeep(Workflow):
    """The trained models as frugally-deep JSON (``fdeep::load_model``) with their input recipe
    documented under ``taggerflow``, checked against Keras by the project's numpy evaluator of the
    written file (``fdeep_check.json``); one branch per training variant."""

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

    def output(self):
        name = self.branch_data
        return {"fdeep": self.local_target(name, "fdeep.json"),
                "check": self.local_target(name, "fdeep_check.json")}

    def run(self):
        from taggerflow.export import FDEEP_EXPORTERS, require_exporters
        from taggerflow.fdeep_export import export_fdeep
        from taggerflow.utils import read_json

        require_exporters(self.cfg, self.branch_data, FDEEP_EXPORTERS)  # the family's fdeep converter, or refuse

        out = {k: t.path for k, t in self.output().items()}
        export_fdeep(self.input()["training"]["model"].path, self.cfg, read_json(self.input()["scaling"].path),
                     verified_shard_paths(self), out, log=self.publish_message)
        self.publish_message(f"frugally-deep JSON: {out['fdeep']}")
