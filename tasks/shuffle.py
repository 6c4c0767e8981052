"""ShuffleMergeSpectral: resampled, mixed shards of candidates, one per job."""

from __future__ import annotations

from tasks.sample import SampleParameter
from tasks.spectrum import Spectrum
from workflows import Workflow


class ShuffleMergeSpectral(SampleParameter, Workflow):
    """``resampling.n_jobs`` branches; each writes ``shard_<j>.root`` (or ``.h5`` with
    ``resampling.output_format: hdf5``), ``manifest_<j>.json`` and ``ids_<j>.json`` (the name -> 64-bit
    id maps of every dataset and group). Everything that can be checked (groups, spectra, acceptance,
    every input file of the job) is checked before the shard is written. The manifest records the
    shard's sha256, which every task that reads the shard verifies first (verify_task_shards)."""

    config_sections = ("resampling",)

    def create_branch_map(self):
        return list(range(int(self.cfg.raw["resampling"]["n_jobs"])))

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["spectrum"] = Spectrum.req_different_branching(self, branch=-1)
        return reqs

    def requires(self):
        return {"spectrum": Spectrum.req_different_branching(self, branch=-1)}

    def output(self):
        from taggerflow.resample import shard_suffix

        return {"shard": self.local_target(f"shard_{self.branch}{shard_suffix(self.cfg)}"),
                "manifest": self.local_target(f"manifest_{self.branch}.json"),
                "ids": self.local_target(f"ids_{self.branch}.json")}

    def run(self):
        from taggerflow.resample import plan_job, run_job, spectrum_summary
        from taggerflow.spectrum import load_spectrum

        cfg = self.cfg
        spectrum = self.requires()["spectrum"]
        spectra = []
        sums: dict = {}   # the files' sums of weights (event weights only): the normalisation of each dataset
        for b, (ds, path) in sorted(spectrum.get_branch_map().items()):
            spec = load_spectrum(spectrum.req(spectrum, branch=b).output()["npz"].path)
            if "sum_of_weights" in spec:
                sums.setdefault(ds, []).append((cfg.stored_input_path(path, ds), float(spec["sum_of_weights"])))
            # only the coarse counts are kept: the memory of a job grows little with its input files
            spectra.append(spectrum_summary(cfg, {"dataset": ds, "path": path, "entries": int(spec["entries"]),
                                                  "counts_flow": spec["counts_flow"], "pt_edges": spec["pt_edges"],
                                                  "abs_eta_edges": spec["abs_eta_edges"]}))
            del spec
        plan = plan_job(cfg, spectra, self.branch, len(self.branch_map))
        from taggerflow.event_weights import dataset_norms, weights_configured

        norms = dataset_norms(cfg, sums) if weights_configured(cfg) else None
        out = self.output()
        manifest = run_job(cfg, self.branch, plan.segments, plan.P, plan.p_class, out["shard"].path,
                           out["manifest"].path, group_classes=plan.group_classes, N=plan.N,
                           ids_path=out["ids"].path, weight_norms=norms)
        self.publish_message(f"shard {self.branch}: {manifest['entries_written']} candidates "
                             f"{manifest['written_per_class']}")


def shard_paths(task) -> list[str]:
    """Paths of all shards (in job order) of the ShuffleMergeSpectral workflow of ``task``'s config."""
    wf = ShuffleMergeSpectral.req_different_branching(task, branch=-1)
    return [wf.req(wf, branch=b).output()["shard"].path for b in sorted(wf.get_branch_map())]


def shard_manifests(task) -> dict[str, str]:
    """{shard path: its manifest's path} of the ShuffleMergeSpectral workflow of ``task``'s config."""
    wf = ShuffleMergeSpectral.req_different_branching(task, branch=-1)
    outs = [wf.req(wf, branch=b).output() for b in sorted(wf.get_branch_map())]
    return {out["shard"].path: out["manifest"].path for out in outs}


def verified_shard_paths(task) -> list[str]:
    """:func:`shard_paths`, each shard checked against its manifest's sha256 first."""
    paths = shard_paths(task)
    verify_task_shards(task, paths)
    return paths


def verify_task_shards(task, paths) -> None:
    """Check every shard of ``paths`` against the sha256 in its manifest before any is read (a
    corrupt or changed shard fails, naming the shard and its manifest)."""
    from taggerflow.integrity import verify_shards

    manifests = shard_manifests(task)
    paths = list(paths)
    verify_shards(paths, [manifests[p] for p in paths])
