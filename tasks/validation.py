"""ShardValidation: KS tests between the ShuffleMergeSpectral shards and the achieved spectrum."""

from __future__ import annotations

import os

import luigi

from tasks.shuffle import ShuffleMergeSpectral, shard_paths, verify_task_shards
from workflows import WorkflowOptions


class ShardValidation(WorkflowOptions):
    """Kolmogorov-Smirnov tests of every shard against the others (class, dataset id, group id, pt and
    |eta| per class; Bonferroni-corrected at ``--alpha``) and the flatness of the achieved spectrum
    per class (chi2/ndf against ``--max-chi2-ndf``): ``report.json`` and PNG plots. Failures are
    flagged in the report (``passed: false``, ``failures``); with ``--strict`` the task fails too,
    its report written as ``report.failed.json`` so that it stays incomplete (a rerun validates again),
    and a strict run is complete only with a report that passed."""

    alpha = luigi.FloatParameter(default=0.01, description="family-wise false-alarm rate of the KS tests")
    max_chi2_ndf = luigi.FloatParameter(default=3.0, description="largest accepted chi2/ndf of the spectrum")
    strict = luigi.BoolParameter(default=False, significant=False, description="fail when a check fails")

    def requires(self):
        return ShuffleMergeSpectral.req(self)

    def store_parts(self):
        return super().store_parts() + (f"alpha_{self.alpha:g}_chi2_{self.max_chi2_ndf:g}",)

    def output(self):
        return self.local_target("report.json")

    def complete(self):
        if not super().complete():
            return False
        if not self.strict:
            return True
        from taggerflow.utils import read_json

        return bool(read_json(self.output().path).get("passed"))   # a lenient run's failed report

    def run(self):
        from taggerflow.validation import report_name, validate_shards

        out = self.output().path
        verify_task_shards(self, shard_paths(self))
        report = validate_shards(self.cfg, shard_paths(self), os.path.dirname(out), alpha=self.alpha,
                                 max_chi2_ndf=self.max_chi2_ndf, strict=self.strict)
        out = os.path.join(os.path.dirname(out), report_name(report, self.strict))
        msg = "all checks passed" if report["passed"] else f"{len(report['failures'])} checks failed: " + \
            "; ".join(report["failures"][:5])
        self.publish_message(f"shard validation: {report['n_tests']} KS tests, {msg} ({out})")
        if self.strict and not report["passed"]:
            raise RuntimeError(f"shard validation failed (see {out}): {msg}")
