"""The control sample through the DAG (taggerflow.control_sample, ``--sample control``) and the
adversarial Training variants: the config's control section and its errors; with law (real
subprocesses) a tiny main sample and a control sample of data (no truth branch, one input shifted)
and MC (event weight 2) through Spectrum, ShuffleMergeSpectral and WriteTrainSample into their own
training files (every candidate in the bins kept, is_data, the main scaling), Training with
lambda > 0 (KS columns in history.csv, the exported model the main network only, exported to
lwtnn), lambda = 0 giving the plain loop's model bytes, and a plain variant beside them."""

from __future__ import annotations

import copy
import glob
import json
import os

import numpy as np
import pytest

from conftest import tiny_raw, write_config

CONTROL_ENTRIES = 700
SHIFTED = "ip_sig"  # the input in which "data" differs from MC


def _control_file(src: str, dst: str, data: bool) -> None:
    """A control file from a demo file of jets: as data without the truth branch and with SHIFTED
    moved by one unit; as MC unchanged."""
    import awkward as ak
    import uproot

    with uproot.open(src) as f:
        arrays = f["candidates"].arrays()
    fields = [k[len("pfcand_"):] for k in arrays.fields if k.startswith("pfcand_")]
    out = {k: arrays[k] for k in arrays.fields if not k.startswith("pfcand_") and k != "npfcand"}
    if data:
        del out["gen_match"]
        out[SHIFTED] = out[SHIFTED] + np.float32(1.0)
    types = {k: v.type.content for k, v in out.items()}
    pf = ak.zip({k: arrays[f"pfcand_{k}"] for k in fields})
    types["pfcand"] = "var * {" + ", ".join(f"{k}: {pf[k].type.content.content}" for k in fields) + "}"
    out["pfcand"] = pf
    with uproot.recreate(dst) as f:
        f.mktree("candidates", types).extend(out)


@pytest.fixture(scope="module")
def control_files(tmp_path_factory):
    """{CR_data: path, CR_mc: path}: jets of a signal-free region, written with the demo generator."""
    from taggerflow.demo import generate_demo_file

    d = tmp_path_factory.mktemp("control")
    out = {}
    for i, (name, data) in enumerate((("CR_data", True), ("CR_mc", False))):
        raw = str(d / f"{name}_raw.root")
        generate_demo_file(raw, name, CONTROL_ENTRIES, {"jet": 1.0}, 30.0, 1.6, seed=500 + i)
        out[name] = str(d / f"{name}.root")
        _control_file(raw, out[name], data)
    return out


def _raw(demo_files, control_files) -> dict:
    raw = tiny_raw()
    del raw["demo"]
    raw["name"] = "ctrl"
    raw["inputs"]["datasets"] = {ds: {"files": [p]} for ds, p in demo_files.items()}
    raw["control"] = {"datasets": {"CR_data": {"files": [control_files["CR_data"]], "is_data": True},
                                   "CR_mc": {"files": [control_files["CR_mc"]], "is_data": False,
                                             "weight": "2.0"}}}
    return raw


# ----------------------------------------------------------------------------------------------
# configuration errors


def _error(raw, tmp_path) -> str:
    from taggerflow.config import ConfigError, load_config

    path = write_config(raw, tmp_path)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert msg.startswith(path + ": "), msg
    assert "\n" not in msg
    return msg


def test_control_section_errors(demo_files, control_files, tmp_path):
    from taggerflow.config import load_config

    good = _raw(demo_files, control_files)
    cfg = load_config(write_config(good, tmp_path))
    assert sorted(cfg.raw["control"]["datasets"]) == ["CR_data", "CR_mc"]

    raw = copy.deepcopy(good)
    raw["control"]["region"] = "CR"
    assert "control.region: unknown key (allowed: datasets)" in _error(raw, tmp_path)

    raw = copy.deepcopy(good)
    raw["control"]["datasets"]["CR_mc"]["xsec"] = 1.0
    assert "control.datasets.CR_mc.xsec: unknown key" in _error(raw, tmp_path)

    raw = copy.deepcopy(good)
    del raw["control"]["datasets"]["CR_data"]["is_data"]
    assert "control.datasets.CR_data.is_data: missing required key" in _error(raw, tmp_path)

    raw = copy.deepcopy(good)
    raw["control"]["datasets"]["CR_data"]["is_data"] = "yes"
    assert "control.datasets.CR_data.is_data: expected true/false, got 'yes'" in _error(raw, tmp_path)

    raw = copy.deepcopy(good)
    raw["control"]["datasets"]["CR_mc"]["is_data"] = True
    assert "control.datasets: needs datasets of both data and MC: none of MC (is_data: false)" \
        in _error(raw, tmp_path)

    raw = copy.deepcopy(good)
    raw["control"]["datasets"]["QCD"] = raw["control"]["datasets"].pop("CR_mc")
    assert "control.datasets.QCD: 'QCD' is also a dataset of the main sample" in _error(raw, tmp_path)

    raw = copy.deepcopy(good)
    raw["control"]["datasets"]["CR_mc"]["weight"] = "2.0 +"
    assert "control.datasets.CR_mc.weight" in _error(raw, tmp_path)

    raw = copy.deepcopy(good)
    del raw["control"]
    raw["training"]["variants"] = [{"name": "plain"}, {"name": "adv", "adversary": {"lambda": 1.0}}]
    assert "training.variants[1].adversary: an adversary needs the control sample" in _error(raw, tmp_path)


def test_control_view(demo_files, control_files, tmp_path):
    """The control view reads the control datasets, one pseudo-class, take-all, the main features."""
    from taggerflow.config import load_config
    from taggerflow.control_config import CONTROL_CLASS, control_config, control_datasets

    cfg = load_config(write_config(_raw(demo_files, control_files), tmp_path))
    view = control_config(cfg)
    assert view is control_config(cfg)  # one view per configuration
    assert view.dataset_files() == {"CR_data": [control_files["CR_data"]], "CR_mc": [control_files["CR_mc"]]}
    assert view.class_names == [CONTROL_CLASS]
    assert view.raw["resampling"]["class_ratio"] == {CONTROL_CLASS: -1}
    assert control_datasets(view) == {"CR_data": True, "CR_mc": False}
    assert [v.name for v in view.candidate_variables] == [v.name for v in cfg.candidate_variables]
    assert cfg.class_names == ["tau", "e", "mu", "jet"]  # the main configuration untouched
    with pytest.raises(ValueError, match="control: the control sample .* needs a top-level 'control' section"):
        control_config(load_config(write_config(tiny_raw(), tmp_path)))


# ----------------------------------------------------------------------------------------------
# through the DAG


def _in_bins(path: str) -> dict[str, int]:
    import uproot

    with uproot.open(path) as f:
        a = f["candidates"].arrays(["pt", "eta"], library="np")
    ok = (a["pt"] >= 20) & (a["pt"] < 1000) & (np.abs(a["eta"]) < 2.3)
    return int(ok.sum())


@pytest.fixture(scope="module")
def dag(demo_files, control_files, tmp_path_factory):
    from test_e2e import _law, _law_env

    tmp = tmp_path_factory.mktemp("dag")
    raw = _raw(demo_files, control_files)
    raw["training"]["epochs"] = 2
    raw["training"]["batch_size"] = 128
    raw["training"]["model"] = {"type": "dense", "f_layers": [16]}
    adv = {"layers": [8], "plot_every": 1, "ks_cut": None}
    raw["training"]["variants"] = [
        {"name": "adv", "adversary": {"lambda": 2.0, **adv, "ks_cut": {"output": "jet", "max": 0.9}}},
        {"name": "adv0", "adversary": {"lambda": 0.0, **adv, "plot_every": 0}},
        {"name": "plain", "source": "h5"}]
    config = write_config(raw, tmp)
    env = _law_env(tmp)
    _law(["index", "-q"], env)
    proc = _law(["run", "ConvertLwtnn", "--version", "ctrl", "--config", config, "--workflow", "local"], env)
    # the evaluation and the report over every variant, adversarial or not
    proc2 = _law(["run", "Pipeline", "--version", "ctrl", "--config", config], env)
    return {"data": tmp / "data", "config": config, "log": proc.stdout + proc.stderr + proc2.stderr}


def _files(data, pattern: str) -> list[str]:
    return sorted(glob.glob(str(data / pattern), recursive=True))


def test_control_training_files(dag, control_files):
    import h5py

    from taggerflow.resample import dataset_id

    data = dag["data"]
    main = _files(data, "WriteTrainSample/ctrl/ctrl_*/train_*.h5")
    control = {s: _files(data, f"WriteTrainSample/ctrl/control/ctrl_*/{s}_*.h5") for s in ("train", "validation", "test")}
    assert main and all(control.values()), (main, control)
    assert not set(main) & set(control["train"])
    # the spectra and shards of the control sample have their own folders too
    assert len(_files(data, "Spectrum/ctrl/control/*/spectrum_*.npz")) == 2
    assert _files(data, "ShuffleMergeSpectral/ctrl/control/*/shard_*.root")
    with h5py.File(main[0]) as f:
        main_scaling = f.attrs["scaling"]
        main_layout = {k: f[f"jets/{k}"].dtype for k in f["jets"]}
    ids = {"CR_data": dataset_id("CR_data"), "CR_mc": dataset_id("CR_mc")}
    n, per_ds, transitions = 0, {k: 0 for k in ids}, 0
    for s, paths in control.items():
        for p in paths:
            with h5py.File(p) as f:
                assert f.attrs["scaling"] == main_scaling  # the main sample's scaling
                assert set(f["jets"]) == set(main_layout) | {"is_data", "event_weight"}
                d, is_data, w = f["jets/dataset_id"][:], f["jets/is_data"][:], f["jets/event_weight"][:]
                np.testing.assert_array_equal(is_data, (d == ids["CR_data"]).astype(np.int8))
                np.testing.assert_array_equal(w, np.where(d == ids["CR_data"], 1.0, 2.0).astype(np.float32))
                n += len(d)
                for k, i in ids.items():
                    per_ds[k] += int((d == i).sum())
                transitions += int(np.count_nonzero(np.diff(d)))
    # every control candidate inside the resampling bins, none resampled away, none twice
    assert per_ds == {k: _in_bins(p) for k, p in control_files.items()}
    assert n > 1000
    assert transitions > n / 10  # mixed: data and MC alternate, not one file after the other


def test_adversarial_training_history_and_export(dag):
    from taggerflow.training import read_history

    data = dag["data"]
    [hist] = _files(data, "Training/ctrl/*/adv/history.csv")
    rows = read_history(hist)
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    classes = ["tau", "e", "mu", "jet"]
    for r in rows:
        assert float(r["lambda"]) == 2.0
        for c in classes:
            assert 0.0 <= float(r[f"ks_{c}"]) <= 1.0 and 0.0 <= float(r[f"ks_pvalue_{c}"]) <= 1.0
        assert float(r["adv_loss"]) > 0 and float(r["val_adv_loss"]) > 0
    # "data" differs from MC in one input: the plain network's outputs differ too (KS well above 0)
    assert max(float(r[f"ks_{c}"]) for r in rows for c in classes) > 0.05
    sel = json.load(open(_files(data, "Training/ctrl/*/adv/selection.json")[0]))
    assert sel["chosen"]["epoch"] in (0, 1) and sel["ks_cut"] == {"output": "jet", "max": 0.9}
    assert _files(data, "Training/ctrl/*/adv/plots/epoch-0002/*.png")
    summary = json.load(open(_files(data, "Training/ctrl/*/adv/summary.json")[0]))
    assert summary["adversarial"]["lambda"] == 2.0 and summary["test"]["accuracy"] > 0.3
    # the exported model and its lwtnn file: the main network (4 class outputs), not the adversary
    lw = json.load(open(_files(data, "ConvertLwtnn/ctrl/*/adv/lwtnn.json")[0]))
    assert lw["outputs"] == classes
    check = json.load(open(_files(data, "ConvertLwtnn/ctrl/*/adv/export_check.json")[0]))
    assert check["lwtnn"]["passed"] and check["lwtnn"]["max_abs_diff"] < 1e-6
    assert _files(data, "Training/ctrl/*/adv/checkpoint/adversary-epoch-0002.keras")
    assert _files(data, "Evaluation/ctrl/**/adv/*.json") and _files(data, "EvaluationReport/ctrl/**/*.md")
    # the plain variant trained as before: no adversary, no selection
    assert _files(data, "Training/ctrl/*/plain/model.keras")
    assert not _files(data, "Training/ctrl/*/plain/selection.json")
    assert "ks_jet" not in read_history(_files(data, "Training/ctrl/*/plain/history.csv")[0])[0]


def test_lambda_zero_is_the_plain_loop(dag, tmp_path):
    """The lambda = 0 variant of the DAG exports the model bytes of train_plain on the same main
    training files, seed and variant (the core's promise, kept through the tasks)."""
    from taggerflow.adversarial import train_plain
    from taggerflow.config import load_config
    from taggerflow.control_sample import read_main_split
    from taggerflow.models import build_model
    from taggerflow.utils import job_seed

    cfg = load_config(dag["config"])
    variant = next(v for v in cfg.training_variants() if v["name"] == "adv0")
    seed = int(job_seed(cfg.seed, "training", "adv0").generate_state(1)[0] % (2**31))
    data = dag["data"]
    main = {s: read_main_split(_files(data, f"WriteTrainSample/ctrl/ctrl_*/{s}_*.h5"), [], False)
            for s in ("train", "validation")}
    n_cand = len(cfg.candidate_variables)

    def build_main(s):
        return build_model(variant["model"], n_cand, {}, len(cfg.class_names), seed=s)

    out = {"checkpoint_dir": str(tmp_path / "ckpt"), "model": str(tmp_path / "model.keras"),
           "history": str(tmp_path / "history.csv")}
    train_plain(variant, cfg.class_names, build_main, main, out, seed, log=lambda m: None)
    [dag_model] = _files(data, "Training/ctrl/*/adv0/model.keras")
    assert open(out["model"], "rb").read() == open(dag_model, "rb").read()


@pytest.mark.parametrize("pause", ["batch-5@1", "state-committed@0"])
def test_adversarial_training_killed_and_resumed_through_law(dag, tmp_path, pause):
    """`law run Training` killed with SIGKILL (its process group) mid-epoch of the adversarial
    variant, or right after an epoch's state is committed and before its plots are handed to the
    helper process, then run again: the same model, history, selection and plot bytes as the
    uninterrupted run, and no plot inputs left."""
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from test_e2e import REPO, _law, _law_env

    data = tmp_path / "data"
    shutil.copytree(dag["data"], data)
    [adv] = glob.glob(str(data / "Training/ctrl/*/adv"))
    shutil.rmtree(adv)
    env = _law_env(tmp_path)
    marker = tmp_path / "paused"
    law_bin = shutil.which("law", path=os.path.dirname(sys.executable)) or shutil.which("law")
    args = ["run", "Training", "--version", "ctrl", "--config", dag["config"], "--workflow", "local"]
    _law(["index", "-q"], env)
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen([law_bin, *args], env={**env, "TAGGERFLOW_TEST_PAUSE": f"{pause}:{marker}"},
                                cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not marker.exists():
            assert proc.poll() is None, open(tmp_path / "killed.log").read()[-3000:]
            assert time.time() < deadline, f"the training never reached {pause}"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not os.path.exists(os.path.join(adv, "model.keras"))
    assert json.load(open(os.path.join(adv, "checkpoint", "state.json")))["epoch"] == 1
    proc = _law(args, env)
    assert "resuming from checkpoint after epoch 1" in proc.stdout + proc.stderr
    [ref] = glob.glob(str(dag["data"] / "Training/ctrl/*/adv"))
    for name in ("model.keras", "history.csv", "selection.json", "checkpoint/adversary-epoch-0002.keras"):
        assert open(os.path.join(adv, name), "rb").read() == open(os.path.join(ref, name), "rb").read(), name
    plots = sorted(os.path.relpath(os.path.join(d, f), adv) for d, _, fs in os.walk(os.path.join(adv, "plots"))
                   for f in fs)
    assert plots == sorted(os.path.relpath(os.path.join(d, f), ref) for d, _, fs in os.walk(os.path.join(ref, "plots"))
                           for f in fs) and "plots/epoch-0001/control.png" in plots
    for name in plots:
        assert open(os.path.join(adv, name), "rb").read() == open(os.path.join(ref, name), "rb").read(), name
    assert not glob.glob(os.path.join(adv, "checkpoint", "plot-inputs-*"))
