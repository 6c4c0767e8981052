"""ShuffleMergeSpectral: resampled, mixed shards of candidates, one per job."""

from __future__ import annotations

from tasks.spectrum import Spectrum
from workflows import Workflow


class ShuffleMergeSpectral(Workflow):
    """``resampling.n_jobs`` branches; each writes ``shard_<j>.root`` and ``manifest_<j>.json``."""

    config_sections = Spectrum.config_sections + ("resampling",)

    def create_branch_map(self):
        return list(range(int(self.cfg.raw["resampling"]["n_jobs"])))

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["spectrum"] = Spectrum.req_different_branching(self, branch=-1)
        return reqs

    def requires(self):
        return {"spectrum": Spectrum.req_different_branching(self, branch=-1)}

    def output(self):
        return {"shard": self.local_target(f"shard_{self.branch}.root"),
                "manifest": self.local_target(f"manifest_{self.branch}.json")}

    def run(self):
        from taggerflow.resample import acceptance, run_job, split_entries
        from taggerflow.spectrum import coarse_counts, load_spectrum

        cfg = self.cfg
        rs = cfg.raw["resampling"]
        spectrum = self.requires()["spectrum"]
        files: dict[str, list[tuple[str, int]]] = {ds: [] for ds in cfg.dataset_names}
        coarse: dict = {}
        for b, (ds, path) in sorted(spectrum.get_branch_map().items()):
            spec = load_spectrum(spectrum.req(spectrum, branch=b).output()["npz"].path)
            files[ds].append((path, int(spec["entries"])))
            c = coarse_counts(spec["counts_flow"], spec["pt_edges"], spec["abs_eta_edges"], rs["pt_bins"], rs["eta_bins"])
            coarse[ds] = coarse.get(ds, 0) + c
        P, p_class = acceptance(coarse, cfg.class_names, rs["class_ratio"], bool(rs.get("enable_emptybin", False)),
                                rs["pt_bins"], rs["eta_bins"])
        segments = {ds: split_entries(f, len(self.branch_map))[self.branch] for ds, f in files.items() if f}
        out = self.output()
        manifest = run_job(cfg, self.branch, segments, P, p_class, out["shard"].path, out["manifest"].path)
        self.publish_message(f"shard {self.branch}: {manifest['entries_written']} candidates "
                             f"{manifest['written_per_class']}")


def shard_paths(task) -> list[str]:
    """Paths of all shards (in job order) of the ShuffleMergeSpectral workflow of ``task``'s config."""
    wf = ShuffleMergeSpectral.req_different_branching(task, branch=-1)
    return [wf.req(wf, branch=b).output()["shard"].path for b in sorted(wf.get_branch_map())]
