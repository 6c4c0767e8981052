"""The point of the adversary on the LLP demo: real demo files (taggerflow.demo_llp: signal, QCD and
BIB, and a control region whose "data" has log_ratio shifted), a dense tagger on the candidate
variables trained with lambda = 0 and lambda > 0 on the same samples and seeds
(taggerflow.adversarial.train_adversarial): with lambda > 0 the data/MC KS of the outputs on the
control validation sample is far lower, the signal-vs-QCD AUC only a little lower."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import uproot

from taggerflow.demo_llp import generate_control_file, generate_llp_file

CLASSES = ["qcd", "signal", "bib"]   # = llp_class 0, 1, 2
SEED = 5
SHIFT = 1.0                          # log_ratio of the control "data" minus that of MC
MAIN = {"mH125_mS15": ("signal", {"m_H": 125, "m_S": 15}), "mH125_mS40": ("signal", {"m_H": 125, "m_S": 40}),
        "QCD": ("qcd", None), "BIB": ("bib", None)}
N_MAIN = {"mH125_mS15": 1500, "mH125_mS40": 1500, "QCD": 3000, "BIB": 3000}
N_CONTROL = 4000                     # per control dataset (data, MC)


def _features(path) -> tuple[np.ndarray, np.ndarray]:
    """Candidate variables and counts of a demo file, and its llp_class."""
    t = uproot.open(path)["candidates"]
    a = t.arrays(["pt", "eta", "log_ratio", "width", "time", "nclus", "ntrk", "nmseg", "llp_class"], library="np")
    x = np.stack([np.log(a["pt"]), np.abs(a["eta"]), a["log_ratio"], a["width"], a["time"],
                  a["nclus"], a["ntrk"], a["nmseg"]], axis=1).astype(np.float64)
    return x, a["llp_class"].astype(np.int32)


def _halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return order[: 2 * n // 3], order[2 * n // 3:]


@pytest.fixture(scope="module")
def trainings(tmp_path_factory):
    from taggerflow.adversarial import train_adversarial
    from taggerflow.models import build_model

    d = tmp_path_factory.mktemp("llp_files")
    xs, ys = [], []
    for i, (ds, (process, params)) in enumerate(MAIN.items()):
        generate_llp_file(d / f"{ds}.root", ds, N_MAIN[ds], process, seed=SEED + i, parameters=params, pt_scale=150.0)
        x, y = _features(d / f"{ds}.root")
        xs.append(x), ys.append(y)
    x_main, y_main = np.concatenate(xs), np.concatenate(ys)
    cx, cd = [], []
    for is_data in (True, False):
        name = "CR_data" if is_data else "CR_mc"
        generate_control_file(d / f"{name}.root", name, N_CONTROL, is_data, "log_ratio", SHIFT, seed=SEED,
                              pt_scale=150.0)
        cx.append(_features(d / f"{name}.root")[0]), cd.append(np.full(N_CONTROL, int(is_data), np.int32))
    x_control, is_data = np.concatenate(cx), np.concatenate(cd)
    # the scaling of the main sample, for both samples (as MergeScaling's)
    mean, std = x_main.mean(0), x_main.std(0)

    def x_of(x, idx):
        return {"candidate": ((x[idx] - mean) / std).astype(np.float32)}

    mt, mv = _halves(len(y_main), 1)
    ct, cv = _halves(len(is_data), 2)
    main = {"train": {"x": x_of(x_main, mt), "y": y_main[mt], "weights": None},
            "validation": {"x": x_of(x_main, mv), "y": y_main[mv], "weights": None}}
    control = {s: {"x": x_of(x_control, idx), "is_data": is_data[idx], "weights": None,
                   "pt": np.exp(x_control[idx, 0])} for s, idx in (("train", ct), ("validation", cv))}

    def build_main(seed: int):
        return build_model({"type": "dense", "f_layers": [32, 32], "dropout": 0.0}, x_main.shape[1], {},
                           len(CLASSES), seed=seed)

    runs = {}
    for lam in (0.0, 5.0):
        out = tmp_path_factory.mktemp(f"lambda{lam}")
        variant = {"name": f"lambda{lam}", "batch_size": 256, "epochs": 5, "learning_rate": 0.003,
                   "adversary": {"lambda": lam, "ramp_up_epochs": 1, "layers": [16, 16], "plot_every": 0}}
        train_adversarial(variant, CLASSES, build_main, main, control,
                          {"checkpoint_dir": str(out / "ckpt"), "model": str(out / "model.keras"),
                           "history": str(out / "history.csv"), "selection": str(out / "selection.json"),
                           "plots": str(out / "plots")}, SEED, log=lambda m: None)
        runs[lam] = out
    return runs, main


def _last(out) -> dict:
    with open(os.path.join(out, "history.csv")) as f:
        return list(csv.DictReader(f))[-1]


def _auc(score: np.ndarray, positive: np.ndarray) -> float:
    ranks = np.argsort(np.argsort(score)) + 1
    n1, n0 = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def test_adversary_lowers_the_llp_demo_data_mc_ks_at_a_small_cost(trainings):
    import keras

    runs, main = trainings
    h0, h5 = _last(runs[0.0]), _last(runs[5.0])
    ks0, ks5 = float(h0["ks_qcd"]), float(h5["ks_qcd"])
    print(f"\nks_qcd: lambda 0 {ks0:.3f}, lambda 5 {ks5:.3f}")
    assert ks0 > 0.07                   # the plain tagger's outputs tell data from MC ...
    assert ks5 < 0.5 * ks0              # ... the adversarial one's far less
    assert float(h5["val_adv_accuracy"]) < float(h0["val_adv_accuracy"])
    val = main["validation"]
    keep = np.isin(val["y"], (0, 1))    # signal vs QCD
    aucs = {}
    for lam, out in runs.items():
        p = np.asarray(keras.models.load_model(out / "model.keras")(val["x"], training=False))
        s = p[keep, 1] / (p[keep, 0] + p[keep, 1])
        aucs[lam] = _auc(s, val["y"][keep] == 1)
    print(f"signal-vs-QCD AUC: lambda 0 {aucs[0.0]:.4f}, lambda 5 {aucs[5.0]:.4f}")
    assert 0.85 < aucs[0.0] < 0.99      # the demo is not trivial
    assert aucs[0.0] - 0.05 < aucs[5.0] <= aucs[0.0] + 0.01   # the cost: small
