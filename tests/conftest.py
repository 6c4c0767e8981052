"""Shared fixtures: a tiny configuration derived from configs/default.yaml, tiny demo files."""

from __future__ import annotations

import copy
import os

import pytest
import yaml

import taggerflow  # noqa: F401  (loads the XRootD client before any test module imports TensorFlow)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "default.yaml")


def load_default_raw() -> dict:
    with open(DEFAULT_CONFIG) as f:
        return yaml.safe_load(f)


def tiny_raw(entries_per_file: int = 1500, n_files: int = 1) -> dict:
    """The default configuration, shrunk: fewer/smaller files, coarse bins, few epochs."""
    raw = copy.deepcopy(load_default_raw())
    raw["name"] = "tiny"
    for spec in raw["demo"]["datasets"].values():
        spec["n_files"] = n_files
        spec["entries_per_file"] = entries_per_file
    raw["inputs"]["chunk_size"] = 700
    raw["resampling"]["n_jobs"] = 2
    raw["resampling"]["pt_bins"] = [20, 40, 70, 1000]
    raw["resampling"]["eta_bins"] = [0.0, 1.0, 2.3]
    raw["resampling"]["mix_buffer"] = 800
    raw["training"]["epochs"] = 3
    raw["export"]["n_check"] = 500
    return raw


def llp_tiny_raw(variants: tuple[str, ...] = ("adversarial",), entries_per_file: int = 600, epochs: int = 1) -> dict:
    """configs/llp.yaml shrunk, with only the training ``variants`` named (the adversarial one: the
    control sample runs through every stage, its Training is the adversarial loop)."""
    with open(os.path.join(REPO, "configs", "llp.yaml")) as f:
        raw = yaml.safe_load(f)
    raw["name"] = "llp_tiny"
    for spec in list(raw["demo"]["datasets"].values()) + list(raw["demo"]["control"]["datasets"].values()):
        spec["entries_per_file"] = entries_per_file
    raw["training"]["epochs"] = epochs
    raw["training"]["variants"] = [v for v in raw["training"]["variants"] if v["name"] in variants]
    assert [v["name"] for v in raw["training"]["variants"]] == list(variants)
    raw["export"]["n_check"] = 200
    return raw


def write_config(raw: dict, directory) -> str:
    path = os.path.join(str(directory), f"{raw['name']}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(raw, f, sort_keys=False)
    return path


@pytest.fixture
def tiny_config(tmp_path):
    from taggerflow.config import load_config

    return load_config(write_config(tiny_raw(), tmp_path))


@pytest.fixture(scope="session")
def demo_files(tmp_path_factory):
    """One small demo file per dataset of the tiny configuration: {dataset: path}."""
    from taggerflow.demo import generate_demo_file

    d = tmp_path_factory.mktemp("demo")
    raw = tiny_raw()
    out = {}
    for i, (ds, spec) in enumerate(raw["demo"]["datasets"].items()):
        path = str(d / f"{ds}.root")
        generate_demo_file(path, ds, spec["entries_per_file"], spec["class_fractions"], spec["pt_scale"],
                           spec["eta_width"], seed=100 + i, file_index=0)
        out[ds] = path
    return out


@pytest.fixture(scope="session")
def files_config(demo_files, tmp_path_factory):
    """A non-demo configuration reading the demo files through inputs.datasets globs."""
    from taggerflow.config import load_config

    raw = tiny_raw()
    del raw["demo"]
    raw["inputs"]["datasets"] = {ds: {"files": [p]} for ds, p in demo_files.items()}
    return load_config(write_config(raw, tmp_path_factory.mktemp("cfg")))


@pytest.fixture(scope="session")
def shard_and_scaling(files_config, demo_files, tmp_path_factory):
    """One resampled shard of the demo files and the scaling computed from it."""
    import numpy as np

    from taggerflow.resample import acceptance, run_job, split_entries
    from taggerflow.scaling import accumulate, scaling_parameters
    from taggerflow.spectrum import coarse_counts, file_spectrum, fine_edges

    cfg = files_config
    d = tmp_path_factory.mktemp("shard")
    rs = cfg.raw["resampling"]
    pt_e, eta_e = fine_edges(cfg)
    coarse, per_ds = {}, {}
    for ds, path in demo_files.items():
        res = file_spectrum(cfg, path)
        counts = np.stack([res["hists"][c].values(flow=True) for c in cfg.class_names]).astype(np.int64)
        coarse[ds] = coarse_counts(counts, pt_e, eta_e, rs["pt_bins"], rs["eta_bins"])
        per_ds[ds] = [(path, res["entries"])]
    P, p = acceptance(coarse, cfg.class_names, rs["class_ratio"], False, rs["pt_bins"], rs["eta_bins"])
    segs = {ds: split_entries(f, 1)[0] for ds, f in per_ds.items()}
    shard = str(d / "shard.root")
    run_job(cfg, 0, segs, P, p, shard, str(d / "m.json"))
    scaling = scaling_parameters(cfg, accumulate(cfg, [shard]))
    return shard, scaling, d


