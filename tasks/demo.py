"""GenerateDemoSamples: the embedded default inputs, synthetic tau-ID ntuples."""

from __future__ import annotations

import law

from taggerflow.utils import job_seed
from workflows import Workflow


class GenerateDemoSamples(Workflow):
    """Write the synthetic ntuples of the config's `demo` section, one branch per file."""

    config_sections = ("demo",)

    def create_branch_map(self):
        demo = self.cfg.raw.get("demo")
        if not demo:
            raise ValueError(f"{self.cfg.path}: GenerateDemoSamples needs a 'demo' section")
        return [(ds, i) for ds, spec in demo["datasets"].items() for i in range(spec["n_files"])]

    def file_target(self, dataset: str, index: int):
        """The file of (dataset, index): the same path for every branch of this workflow."""
        return self.local_target(dataset, f"{dataset}_{index}.root")

    def output(self):
        return self.file_target(*self.branch_data)

    def run(self):
        from taggerflow.demo import generate_demo_file

        ds, i = self.branch_data
        spec = self.cfg.raw["demo"]["datasets"][ds]
        seed = int(job_seed(self.cfg.seed, "demo", ds, i).generate_state(1)[0])
        counts = generate_demo_file(self.output().path, ds, spec["entries_per_file"], spec["class_fractions"],
                                    spec["pt_scale"], spec["eta_width"], seed=seed, file_index=i,
                                    tree=self.cfg.raw["demo"].get("tree", "candidates"))
        self.publish_message(f"{ds} file {i}: {counts}")


def input_files(task) -> list[tuple[str, str]]:
    """(dataset, path) of every input file, in a fixed order: the demo files or the config's globs."""
    if task.cfg.is_demo:
        # one branch task builds every path: no task per file (workflows of 10k branches stay fast)
        demo = GenerateDemoSamples.req_different_branching(task, branch=0, _exclude={"branches"})
        return [(ds, demo.file_target(ds, i).path) for ds, i in demo.get_branch_map().values()]
    return [(ds, path) for ds, paths in task.cfg.dataset_files().items() for path in paths]


def demo_requirement(task):
    """The demo-generating workflow when the config has a demo section, else nothing."""
    if task.cfg.is_demo:
        return GenerateDemoSamples.req_different_branching(task, branch=-1)
    return None


__all__ = ["GenerateDemoSamples", "input_files", "demo_requirement", "law"]
