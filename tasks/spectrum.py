"""Spectrum: fine pt-|eta| histograms per class for every input file, and its entry count."""

from __future__ import annotations

from tasks.demo import demo_requirement, input_files
from tasks.sample import SampleParameter
from workflows import Workflow


class Spectrum(SampleParameter, Workflow):
    """One branch per input file (candidate tree, NanoAOD or HDF5; local, glob or root:// URL):
    ``spectrum_<i>.npz`` (numpy: counts with flow bins, edges, entries, candidates, deselected,
    unlabelled, dataset, path) and ``spectrum_<i>.root`` (TH2D per class)."""

    config_sections = ("inputs", "classes", "spectrum")   # "demo": GenerateDemoSamples'

    def create_branch_map(self):
        return input_files(self)

    def workflow_requires(self):
        reqs = super().workflow_requires()
        demo = demo_requirement(self)
        if demo is not None:
            reqs["demo"] = demo
        return reqs

    def requires(self):
        demo = demo_requirement(self)
        return {"demo": demo} if demo is not None else {}

    def output(self):
        return {"npz": self.local_target(f"spectrum_{self.branch}.npz"),
                "root": self.local_target(f"spectrum_{self.branch}.root")}

    def run(self):
        from taggerflow.spectrum import file_spectrum, write_spectrum

        dataset, path = self.branch_data
        result = file_spectrum(self.cfg, path, dataset)
        out = self.output()
        write_spectrum(result, out["npz"].path, out["root"].path, self.cfg.class_names)
        self.publish_message(f"{dataset}: {path}: {result['entries']} entries")
