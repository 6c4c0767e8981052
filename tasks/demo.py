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
        # the llp family's control-region files are branches too, after the main datasets
        datasets = {**demo["datasets"], **demo.get("control", {}).get("datasets", {})}
        return [(ds, i) for ds, spec in datasets.items() for i in range(spec["n_files"])]

    def file_target(self, dataset: str, index: int):
        """The file of (dataset, index): the same path for every branch of this workflow."""
        return self.local_target(dataset, f"{dataset}_{index}.root")

    def output(self):
        return self.file_target(*self.branch_data)

    def run(self):
        from taggerflow.demo import generate_demo_file

        ds, i = self.branch_data
        seed = int(job_seed(self.cfg.seed, "demo", ds, i).generate_state(1)[0])
        if self.cfg.settings("demo").family == "llp":
            self.publish_message(f"{ds} file {i}: {self._run_llp(ds, i, seed)}")
            return
        spec = self.cfg.raw["demo"]["datasets"][ds]
        counts = generate_demo_file(self.output().path, ds, spec["entries_per_file"], spec["class_fractions"],
                                    spec["pt_scale"], spec["eta_width"], seed=seed, file_index=i,
                                    tree=self.cfg.settings("demo").tree)
        self.publish_message(f"{ds} file {i}: {counts}")

    def _run_llp(self, ds: str, i: int, seed: int) -> dict:
        from taggerflow.demo_llp import generate_control_file, generate_llp_file

        demo = self.cfg.raw["demo"]
        tree = self.cfg.settings("demo").tree
        if ds in demo["datasets"]:
            spec = demo["datasets"][ds]
            return generate_llp_file(self.output().path, ds, spec["entries_per_file"], spec["process"], seed,
                                     parameters=spec.get("parameters"), pt_scale=spec.get("pt_scale", 60.0),
                                     file_index=i, tree=tree)
        control = demo["control"]
        spec = control["datasets"][ds]
        return generate_control_file(self.output().path, ds, spec["entries_per_file"], spec["is_data"],
                                     control["shift"]["variable"], control["shift"]["amount"], seed,
                                     pt_scale=spec.get("pt_scale", 60.0), file_index=i, tree=tree)


def main_config(task):
    """The task's main configuration: that of its control view for ``--sample control``."""
    return getattr(task, "main_cfg", task.cfg)


def _is_control(task) -> bool:
    return getattr(task, "sample", "main") == "control"


def input_files(task) -> list[tuple[str, str]]:
    """(dataset, path) of every input file, in a fixed order: the demo files or the config's globs;
    for ``--sample control`` the control datasets', those without ``files`` the demo's generated ones."""
    if _is_control(task):
        from taggerflow.control_config import generated_datasets

        generated = set(generated_datasets(task.cfg))
        demo = {}
        for ds, path in control_files(task):
            demo.setdefault(ds, []).append(path)
        files = task.cfg.dataset_files()
        return [(ds, path) for ds in task.cfg.dataset_names for path in (demo[ds] if ds in generated else files[ds])]
    if task.cfg.is_demo:
        # one branch task builds every path: no task per file (workflows of 10k branches stay fast)
        demo = GenerateDemoSamples.req_different_branching(task, branch=0, _exclude={"branches"})
        main = task.cfg.raw["demo"]["datasets"]
        return [(ds, demo.file_target(ds, i).path) for ds, i in demo.get_branch_map().values() if ds in main]
    return [(ds, path) for ds, paths in task.cfg.dataset_files().items() for path in paths]


def control_files(task) -> list[tuple[str, str]]:
    """(dataset, path) of the demo's control-region files (demo.control of the main configuration,
    llp family), in a fixed order; what a `control.datasets` entry without `files` reads. Empty
    without demo.control."""
    control = main_config(task).raw.get("demo", {}).get("control")
    if not control:
        return []
    demo = GenerateDemoSamples.req_different_branching(task, branch=0, _exclude={"branches"})
    return [(ds, demo.file_target(ds, i).path) for ds, i in demo.get_branch_map().values()
            if ds in control["datasets"]]


def demo_requirement(task):
    """The demo-generating workflow (of the main configuration) where the task reads demo files:
    a demo's main sample, or a control sample with datasets the demo generates; else nothing."""
    if _is_control(task):
        from taggerflow.control_config import generated_datasets

        needed = bool(generated_datasets(task.cfg))
    else:
        needed = task.cfg.is_demo
    return GenerateDemoSamples.req_different_branching(task, branch=-1) if needed else None


__all__ = ["GenerateDemoSamples", "input_files", "control_files", "demo_requirement", "main_config", "law"]
