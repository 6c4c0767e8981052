"""The ``--sample`` parameter of the stages the control sample shares with the main one (Spectrum,
ShuffleMergeSpectral, WriteTrainSample): ``main`` (default) or ``control``, the adversary's control
sample run through the same stages under the control view of the configuration
(taggerflow.control_sample), its outputs under ``<Task>/<version>/control/`` (the main outputs
keep their paths and bytes). Upstream tasks with the parameter get it through req(); those without
(FeatureScaling, MergeScaling) are the main sample's: the control never changes the scaling."""

from __future__ import annotations

from functools import cached_property

import luigi

from workflows.base import Task

SAMPLES = ("main", "control")


class SampleParameter:
    """Mixin (before the workflow base): ``sample`` selects the configuration view and the folder."""

    sample = luigi.ChoiceParameter(choices=SAMPLES, default="main", description="main (default) or control: "
                                   "the adversary's control sample (the config's control section)")

    @cached_property
    def main_cfg(self):
        """The main configuration, whatever the sample (the demo that generates control files is its)."""
        return Task.cfg.func(self)

    @cached_property
    def cfg(self):
        main = self.main_cfg
        if self.sample == "main":
            return main
        from taggerflow.control_config import control_config

        return control_config(main)

    def store_parts(self) -> tuple[str, ...]:
        parts = super().store_parts()
        if self.sample == "main":
            return parts
        cfg = self.cfg
        tag = f"{cfg.name}_{cfg.sections_hash(('name', 'seed', 'control') + self.all_config_sections())}"
        return parts[:2] + ("control", tag) + parts[3:]
