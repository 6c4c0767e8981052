"""Paths inside outputs (taggerflow.paths): relative to $TAGGERFLOW_DATA or to the configuration's
directory, so that the same inputs and configuration give the same bytes wherever the data
directory and the configuration are."""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from conftest import tiny_raw, write_config
from taggerflow.paths import DATA_PREFIX, portable_path, resolve_path


def test_rule_and_round_trip(tmp_path, monkeypatch):
    data, cfg_dir = tmp_path / "data", tmp_path / "cfg"
    (data / "Spectrum").mkdir(parents=True)
    (cfg_dir / "samples").mkdir(parents=True)
    monkeypatch.setenv("TAGGERFLOW_DATA", str(data))
    cases = {
        str(data / "Spectrum" / "spectrum_0.npz"): DATA_PREFIX + "Spectrum/spectrum_0.npz",
        str(cfg_dir / "samples" / "DY_0.root"): "samples/DY_0.root",
        # a pattern '../other/*.root' of the configuration: kept as the pattern names it
        str(cfg_dir / ".." / "other" / "f.root"): "../other/f.root",
        "/eos/user/m/me/DY_0.root": "/eos/user/m/me/DY_0.root",
        "root://eosuser.cern.ch//eos/user/m/me/DY_0.root": "root://eosuser.cern.ch//eos/user/m/me/DY_0.root",
    }
    for path, stored in cases.items():
        assert portable_path(path, cfg_dir) == stored
        assert resolve_path(stored, cfg_dir) == (path if "://" in path else os.path.normpath(path))
    # the data directory wins over the configuration's (a configuration inside the data directory)
    assert portable_path(str(data / "Spectrum" / "x.npz"), data) == DATA_PREFIX + "Spectrum/x.npz"
    # a data directory reached through a symbolic link
    link = tmp_path / "link"
    link.symlink_to(data)
    assert portable_path(str(link / "Spectrum" / "spectrum_0.npz")) == DATA_PREFIX + "Spectrum/spectrum_0.npz"
    # an explicit data directory, and a sibling directory whose name starts like it
    assert portable_path(str(tmp_path / "data2" / "f"), data=str(data)) == str(tmp_path / "data2" / "f")
    assert resolve_path(DATA_PREFIX + "a/b.json", data="/x/y") == "/x/y/a/b.json"


def _chain(root, monkeypatch) -> dict[str, bytes]:
    """The core of Spectrum, ShuffleMergeSpectral, FeatureScaling, MergeScaling and ShardValidation,
    laid out as a user runs them: the configuration and its inputs (relative patterns) in
    ``<root>/cfg``, every output below ``<root>/data`` = $TAGGERFLOW_DATA. Returns {path relative to
    the data directory: bytes} of every output."""
    from taggerflow.config import load_config
    from taggerflow.demo import generate_demo_file
    from taggerflow.resample import plan_job, run_job, shard_suffix, spectrum_summary
    from taggerflow.scaling import feature_scaling_job, write_scaling_outputs
    from taggerflow.spectrum import file_spectrum, write_spectrum
    from taggerflow.utils import write_json
    from taggerflow.validation import validate_shards

    data, cfg_dir = root / "data", root / "cfg"
    monkeypatch.setenv("TAGGERFLOW_DATA", str(data))
    raw = tiny_raw()
    for i, (ds, spec) in enumerate(raw["demo"]["datasets"].items()):
        generate_demo_file(str(cfg_dir / "samples" / f"{ds}_0.root"), ds, spec["entries_per_file"],
                           spec["class_fractions"], spec["pt_scale"], spec["eta_width"], seed=100 + i)
    del raw["demo"]
    raw["inputs"]["datasets"] = {ds: {"files": [f"samples/{ds}_*.root"]} for ds in ("DY", "QCD", "TT", "WJets")}
    cfg = load_config(write_config(raw, cfg_dir))
    spectra = []
    for i, (ds, path) in enumerate((ds, p) for ds, ps in cfg.dataset_files().items() for p in ps):
        r = file_spectrum(cfg, path, ds)
        write_spectrum(r, str(data / "Spectrum" / f"spectrum_{i}.npz"), str(data / "Spectrum" / f"spectrum_{i}.root"),
                       cfg.class_names)
        spectra.append(spectrum_summary(cfg, r))
    n_jobs = cfg.raw["resampling"]["n_jobs"]
    shards, moments = [], []
    for j in range(n_jobs):
        plan = plan_job(cfg, spectra, j, n_jobs)
        out = data / "ShuffleMergeSpectral"
        shards.append(str(out / f"shard_{j}{shard_suffix(cfg)}"))
        run_job(cfg, j, plan.segments, plan.P, plan.p_class, shards[-1], str(out / f"manifest_{j}.json"),
                group_classes=plan.group_classes, N=plan.N, ids_path=str(out / f"ids_{j}.json"))
        moments.append(str(data / "FeatureScaling" / f"moments_{j}.json"))
        write_json(moments[-1], feature_scaling_job(cfg, [shards[-1]]))
    write_scaling_outputs(cfg, moments, str(data / "MergeScaling"), plots=False)
    validate_shards(cfg, shards, str(data / "ShardValidation"))
    return {os.path.relpath(p, data): open(p, "rb").read()
            for p in glob.glob(str(data / "**" / "*"), recursive=True) if os.path.isfile(p)}


def test_outputs_equal_in_two_places_and_hold_no_absolute_path(tmp_path, monkeypatch):
    from taggerflow.config import load_config

    a = _chain(tmp_path / "a", monkeypatch)
    b = _chain(tmp_path / "b" / "deeper", monkeypatch)
    assert sorted(a) == sorted(b) and len(a) >= 20
    assert [k for k in a if a[k] != b[k]] == []
    # no absolute path of the places (numpy stores strings as UTF-32 in the npz files)
    for name, blob in a.items():
        for enc in ("utf-8", "utf-32-le"):
            assert str(tmp_path).encode(enc) not in blob, (name, enc)

    # the paths as stored, and that they lead to the files
    data, cfg_dir = tmp_path / "b" / "deeper" / "data", tmp_path / "b" / "deeper" / "cfg"
    # input files as <dataset>/<path below the dataset's root>, found again through the configuration
    with np.load(data / "Spectrum" / "spectrum_0.npz") as d:
        assert str(d["path"]) == "DY/DY_0.root"
    manifest = json.load(open(data / "ShuffleMergeSpectral" / "manifest_0.json"))
    assert sorted(manifest["files"]) == [f"{ds}/{ds}_0.root" for ds in ("DY", "QCD", "TT", "WJets")]
    cfg = load_config(str(cfg_dir / "tiny.yaml"))
    for seg in (s for segs in manifest["segments"].values() for s in segs):
        assert cfg.resolve_stored_input(seg[0]) == str(cfg_dir / "samples" / f"{seg[3]}_0.root")
        assert os.path.isfile(cfg.resolve_stored_input(seg[0]))
    job = json.load(open(data / "FeatureScaling" / "moments_1.json"))
    assert job["files"] == [DATA_PREFIX + "ShuffleMergeSpectral/shard_1.root"]
    assert [pf["file"] for pf in job["per_file"]] == job["files"]
    assert os.path.isfile(resolve_path(job["files"][0]))
    report = json.load(open(data / "MergeScaling" / "scaling_report.json"))
    assert report["sources"] == [DATA_PREFIX + f"FeatureScaling/moments_{j}.json" for j in range(2)]
    assert [q["file"] for q in report["quantiles"]] == [DATA_PREFIX + f"ShuffleMergeSpectral/shard_{j}.root"
                                                        for j in range(2)]
    validation = json.load(open(data / "ShardValidation" / "report.json"))
    assert validation["shards"] == [DATA_PREFIX + f"ShuffleMergeSpectral/shard_{j}.root" for j in range(2)]
    assert validation["plots"] and all(os.path.isfile(data / "ShardValidation" / p) for p in validation["plots"])


def test_spectrum_of_a_file_in_the_data_directory(tmp_path, monkeypatch, tiny_config, demo_files):
    """A demo input (written below $TAGGERFLOW_DATA): stored relative to it, and the ROOT file's
    UUID derives from that, so two data directories give the same bytes."""
    import shutil

    import uproot

    from taggerflow.spectrum import file_spectrum, write_spectrum

    blobs = []
    for place in ("a", "b/deeper"):
        data = tmp_path / place / "data"
        monkeypatch.setenv("TAGGERFLOW_DATA", str(data))
        src = data / "GenerateDemoSamples" / "DY" / "DY_0.root"
        src.parent.mkdir(parents=True)
        shutil.copyfile(demo_files["DY"], src)
        r = file_spectrum(tiny_config, str(src), "DY")
        assert r["path"] == str(src) and r["source"] == DATA_PREFIX + "GenerateDemoSamples/DY/DY_0.root"
        npz, root = str(data / "s.npz"), str(data / "s.root")
        write_spectrum(r, npz, root, tiny_config.class_names)
        with np.load(npz) as d:
            assert str(d["path"]) == r["source"]
        assert uproot.open(root)["spectrum_tau"].values().sum() == r["hists"]["tau"].values().sum()
        blobs.append((open(npz, "rb").read(), open(root, "rb").read()))
    assert blobs[0] == blobs[1]

