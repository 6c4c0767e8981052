"""A markdown summary of what every stage produced, written at the end of the chain."""

from __future__ import annotations

from taggerflow.evaluation_config import evaluation_config
from taggerflow.paths import portable_path
from taggerflow.utils import read_json
from tasks.scaling import MergeScaling
from tasks.shuffle import ShuffleMergeSpectral
from tasks.spectrum import Spectrum
from tasks.trainsample import ToRecords, WriteTrainSample


def pipeline_summary(task, variant: str) -> str:
    """Collect the counts of each stage from its outputs (``task`` is a ConvertLwtnn branch, whose
    input ``training`` is the Training branch of ``variant``). Paths are shown as stored
    (taggerflow.paths): the same text wherever the data directory is."""
    import h5py

    from taggerflow.metrics import format_aucs, headline_pairs

    def branches(cls):
        wf = cls.req_different_branching(task, branch=-1)
        return {b: wf.req(wf, branch=b).output() for b in sorted(wf.get_branch_map())}

    lines = [f"# taggerflow pipeline summary: config '{task.cfg.name}', version '{task.version}'", ""]
    spectra = branches(Spectrum)
    counts = spectrum_counts([out["npz"].path for out in spectra.values()], task.cfg.class_names)
    lines.append(f"- Spectrum: {len(spectra)} input files, {counts['entries']} tree entries, "
                 f"{counts['candidates']} candidates, {counts['labelled']} after the selection and with a class "
                 f"(per class {counts['per_class']})")

    shards = branches(ShuffleMergeSpectral)
    written, per_class = 0, {}
    for out in shards.values():
        m = read_json(out["manifest"].path)
        written += m["entries_written"]
        for c, n in m["written_per_class"].items():
            per_class[c] = per_class.get(c, 0) + n
    # kept: of the candidates the resampling could take (selected, with a class), not of the events
    lines.append(f"- ShuffleMergeSpectral: {len(shards)} shards, {written} candidates kept "
                 f"({100 * written / max(counts['labelled'], 1):.1f} % of {counts['labelled']}), per class {per_class}")

    scaling_path = MergeScaling.req(task).output().path
    scaling = read_json(scaling_path)
    nvars = {t: len(v) for t, v in scaling.items()}
    lines.append(f"- MergeScaling: {portable_path(scaling_path)} ({nvars} variables)")

    samples = branches(WriteTrainSample)
    counts = {}
    for out in samples.values():
        for split, target in out.items():
            with h5py.File(target.path, "r") as f:
                counts[split] = counts.get(split, 0) + int(f.attrs["n_candidates"])
    lines.append(f"- WriteTrainSample: {len(samples)} x 3 HDF5 files, candidates per split {counts}")
    records = {b: out for b, out in branches(ToRecords).items() if out["train"]["records"].exists()}
    lines.append(f"- ToRecords: {2 * len(records)} TFRecord files" if records else
                 "- ToRecords: not run (every training reads the HDF5 files: training.source h5)")

    tout = task.input()["training"]
    summ = read_json(tout["summary"].path)
    pairs = headline_pairs(task.cfg.class_names, evaluation_config(task.cfg)["signals"][0])
    lines.append(f"- Training '{variant}': {portable_path(tout['model'].path)}; test accuracy {summ['test']['accuracy']:.4f}, "
                 f"{format_aucs(summ['test']['auc'], pairs)}, "
                 f"on {summ['device']['device']}")   # not the host: the same text on every machine
    lines.extend(f"  - **warning**: {w}" for w in summ["test"].get("warnings", []))
    out = task.output()
    chk = read_json(out["check"].path)
    lines.append(f"- ConvertLwtnn: {portable_path(out['lwtnn'].path)}; max |lwtnn - Keras| = {chk['lwtnn']['max_abs_diff']:.3g} "
                 f"on {chk['lwtnn']['n_candidates']} test candidates")
    lines.append(f"- ONNX: {portable_path(out['onnx'].path)}; max |ONNX - Keras| = {chk['onnx']['max_abs_diff']:.3g}; "
                 f"model card: {portable_path(out['card'].path)}")
    return "\n".join(lines) + "\n"


def spectrum_counts(npz_paths: list[str], classes: list[str]) -> dict:
    """Summed over Spectrum's outputs: tree entries (events for per-event formats), candidates read,
    those after the selection and with a class (``labelled``) and these per class."""
    import numpy as np

    out = {"entries": 0, "candidates": 0, "labelled": 0, "per_class": {c: 0 for c in classes}}
    for path in npz_paths:
        with np.load(path) as d:
            per_class = d["counts_flow"].sum(axis=(1, 2))
            out["entries"] += int(d["entries"])
            out["candidates"] += int(d["candidates"])
            for c, n in zip(classes, per_class):
                out["per_class"][c] += int(n)
    out["labelled"] = sum(out["per_class"].values())
    return out
