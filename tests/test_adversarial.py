"""Adversarial training (taggerflow.adversarial) on small synthetic samples (adversarial_samples):
lambda = 0 is the plain classifier bit for bit, lambda > 0 lowers the data/MC KS of the outputs at
a small cost in accuracy and AUC; epoch-averaged history; KS selection; weighted KS against scipy;
class-balancing weights; config validation; and a training killed with SIGKILL (a real process)
mid-epoch, while checkpointing and between epochs, resumed to the same weights, optimizer states
and files as an uninterrupted run.

Run as a script (``python tests/test_adversarial.py spec.json``) this module is the training
process the resume test starts and kills.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
sys.path.insert(0, TESTS)

from adversarial_samples import CLASSES, VARIABLES, build_main, samples  # noqa: E402

SEED = 3
KS_CUT = {"output": "qcd", "max": 0.3}


def _variant(lam: float, epochs: int = 6, **adversary) -> dict:
    return {"name": f"lambda{lam}", "batch_size": 128, "epochs": epochs, "learning_rate": 0.003,
            "adversary": {"lambda": lam, "layers": [32, 32], "learning_rate": 0.003, "ks_cut": KS_CUT,
                          "plot_every": 0, **adversary}}


def _out(d) -> dict:
    d = str(d)
    return {"checkpoint_dir": f"{d}/ckpt", "model": f"{d}/model.keras", "history": f"{d}/history.csv",
            "selection": f"{d}/selection.json", "plots": f"{d}/plots"}


def _variables(path):
    import keras

    import taggerflow.models  # noqa: F401  (custom layers)

    model = keras.models.load_model(path)
    return [np.array(w) for w in model.get_weights()], [np.array(v.numpy()) for v in model.optimizer.variables]


def _bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUC (no ties in continuous scores)."""
    ranks = np.argsort(np.argsort(score)) + 1
    n1, n0 = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


# ----------------------------------------------------------------------------------------------
# the KS test and the weights


def test_weighted_ks_equals_scipy_for_unit_weights():
    from scipy.stats import ks_2samp

    from taggerflow.ks_monitor import ks_2samp_weighted

    rng = np.random.default_rng(1)
    cases = [(rng.normal(size=300), rng.normal(0.2, 1.0, size=200)),
             (rng.normal(size=50), rng.normal(size=70)),
             (rng.integers(0, 5, 120).astype(float), rng.integers(0, 6, 90).astype(float)),  # ties
             (rng.uniform(size=1000), rng.uniform(0.05, 1.0, size=1500))]
    for a, b in cases:
        ref = ks_2samp(a, b, method="asymp")
        d, p = ks_2samp_weighted(a, b)
        assert d == pytest.approx(ref.statistic, abs=1e-12)
        assert p == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)
        assert ks_2samp_weighted(a, b, np.ones(len(a)), np.full(len(b), 2.5))[0] == pytest.approx(d, abs=1e-12)


def test_weighted_ks_statistic_equals_that_of_repeated_samples():
    """Integer weights = repeated values: the same CDFs, so the same statistic; the p-value uses the
    effective sizes (sum w)^2 / sum w^2, smaller than the repeated counts."""
    from scipy.stats import ks_2samp

    from taggerflow.ks_monitor import effective_size, ks_2samp_weighted

    rng = np.random.default_rng(2)
    a, b = rng.normal(size=80), rng.normal(0.5, 1.0, size=60)
    wa, wb = rng.integers(1, 4, 80), rng.integers(1, 4, 60)
    d, p = ks_2samp_weighted(a, b, wa, wb)
    assert d == pytest.approx(ks_2samp(np.repeat(a, wa), np.repeat(b, wb)).statistic, abs=1e-12)
    assert effective_size(wa) == pytest.approx(wa.sum() ** 2 / (wa ** 2).sum())
    assert ks_2samp(np.repeat(a, wa), np.repeat(b, wb), method="asymp").pvalue < p < 1
    with pytest.raises(ValueError, match="weights must be finite and >= 0"):
        ks_2samp_weighted(a, b, -wa, wb)
    with pytest.raises(ValueError, match="2 weights for 80 values"):
        ks_2samp_weighted(a, b, [1, 2], wb)


def test_class_balance_weights_give_equal_class_totals():
    from taggerflow.ks_monitor import class_balance_weights

    labels = np.array([0, 0, 1, 2, 2, 2])
    w = class_balance_weights(labels, 3, [1.0, 2.0, 1.0, 1.0, 1.0, 1.0])
    # totals 3, 1, 3 of 7: factors 7/9, 7/3, 7/9
    assert np.allclose(w, [7 / 9, 14 / 9, 7 / 3, 7 / 9, 7 / 9, 7 / 9], rtol=1e-15)
    assert np.allclose(np.bincount(labels, weights=w), [7 / 3] * 3)
    assert np.allclose(class_balance_weights(np.array([1, 1, 1, 0]), 2), [2 / 3, 2 / 3, 2 / 3, 2.0])
    with pytest.raises(ValueError, match=r"every class with a positive total weight, got totals \[2.0, 0.0, 1.0\]"):
        class_balance_weights(np.array([0, 0, 2]), 3)


# ----------------------------------------------------------------------------------------------
# configuration


@pytest.mark.parametrize("adversary, key, words", [
    ({"lambda": -1}, "training.adversary.lambda", "expected a number >= 0"),
    ({"ramp_up_epochs": 2}, "training.adversary.lambda", "missing required key"),
    ({"lambda": 1, "ramp_up_epochs": -1}, "training.adversary.ramp_up_epochs", "integer >= 0"),
    ({"lambda": 1, "layers": [16, 0]}, "training.adversary.layers", "widths >= 1"),
    ({"lambda": 1, "inputs": ["pt", "colour"]}, "training.adversary.inputs", "'colour' is not a candidate variable"),
    ({"lambda": 1, "ks_cut": {"output": "gluon", "max": 0.3}}, "training.adversary.ks_cut.output",
     "'gluon' is not a class"),
    ({"lambda": 1, "ks_cut": {"output": "jet", "max": 1.5}}, "training.adversary.ks_cut.max", "in (0, 1]"),
    ({"lambda": 1, "ks_cut": {"output": "jet"}}, "training.adversary.ks_cut", "expected {output"),
    ({"lambda": 1, "select_by": "ks"}, "training.adversary.select_by", "needs a ks_cut"),
    ({"lambda": 1, "select_by": "auc"}, "training.adversary.select_by", "unknown 'auc'"),
    ({"lambda": 1, "lamda": 2}, "training.adversary.lamda", "unknown key"),
])
def test_adversary_config_errors_name_the_key(tmp_path, adversary, key, words):
    from conftest import load_default_raw, write_config
    from taggerflow.config import ConfigError, load_config

    raw = load_default_raw()
    raw["training"]["adversary"] = adversary
    path = write_config(raw, tmp_path)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert f"{path}: {key}: " in str(e.value) and words in str(e.value)


def test_adversary_config_accepted_and_overridden_per_variant(tmp_path):
    from conftest import load_default_raw, write_config
    from taggerflow.config import load_config

    raw = load_default_raw()
    raw["training"]["adversary"] = {"lambda": 2, "ramp_up_epochs": 3, "inputs": ["pt"],
                                    "ks_cut": {"output": "jet", "max": 0.3}, "select_by": "ks"}
    raw["training"]["variants"][1]["adversary"] = {"lambda": 0}
    # an adversary needs the control sample (taggerflow.control_sample); its files are not read here
    raw["control"] = {"datasets": {"CR_data": {"files": ["cr_data.root"], "is_data": True},
                                   "CR_mc": {"files": ["cr_mc.root"], "is_data": False}}}
    variants = load_config(write_config(raw, tmp_path)).training_variants()
    assert variants[0]["adversary"]["lambda"] == 2 and variants[1]["adversary"]["lambda"] == 0
    assert variants[1]["adversary"]["ks_cut"] == {"output": "jet", "max": 0.3}  # merged with the base


def test_lambda_ramp_up_and_epoch_choice():
    from taggerflow.adversarial import choose_epoch, lambda_at, selection_of

    assert [lambda_at({"lambda": 2.0, "ramp_up_epochs": 4}, e) for e in range(6)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert lambda_at({"lambda": 2.0, "ramp_up_epochs": 0}, 0) == 2.0
    history = [{"epoch": e, "val_loss": v, "val_accuracy": a, "ks_qcd": k}
               for e, (v, a, k) in enumerate([(0.9, 0.6, 0.5), (0.7, 0.7, 0.2), (0.6, 0.72, 0.35), (0.65, 0.71, 0.1)])]
    cut = {"output": "qcd", "max": 0.3}
    selection = [{"epoch": r["epoch"], **dict(zip(("selected", "reason"), selection_of(r, cut)))} for r in history]
    assert [s["selected"] for s in selection] == [False, True, False, True]
    assert selection[2]["reason"] == "ks_qcd = 0.3500 >= 0.3"
    chosen = choose_epoch(history, selection, {"select_by": "val_loss", "ks_cut": cut})
    assert (chosen["epoch"], chosen["value"]) == (3, 0.65)  # epoch 2 has a lower loss but fails the cut
    assert "of the 2 selected epochs (ks_qcd = 0.1000 < 0.3)" in chosen["reason"]
    assert choose_epoch(history, selection, {"select_by": "ks", "ks_cut": cut})["epoch"] == 3
    assert choose_epoch(history, selection, {"select_by": "val_accuracy", "ks_cut": cut})["epoch"] == 3
    none = [dict(s, selected=False) for s in selection]
    fallback = choose_epoch(history, none, {"select_by": "val_loss", "ks_cut": cut})
    assert fallback["epoch"] == 3 and not fallback["selected"] and "no epoch passed the KS cut" in fallback["reason"]


# ----------------------------------------------------------------------------------------------
# trainings in this process


@pytest.fixture(scope="module")
def trainings(tmp_path_factory):
    """The plain classifier, lambda = 0 and lambda = 2 on the same samples and seeds."""
    from taggerflow.adversarial import train_adversarial, train_plain

    main, control = samples()
    runs = {}
    d = tmp_path_factory.mktemp("plain")
    runs["plain"] = (d, train_plain(_variant(0.0), CLASSES, build_main, main, _out(d), SEED, log=lambda m: None))
    for lam, plots in ((0.0, 3), (2.0, 0)):
        d = tmp_path_factory.mktemp(f"lambda{lam}")
        s = train_adversarial(_variant(lam, plot_every=plots), CLASSES, build_main, main, control, _out(d), SEED,
                              VARIABLES, log=lambda m: None)
        runs[lam] = (d, s)
    runs["samples"] = (main, control)
    return runs


def _history(d) -> list[dict]:
    from taggerflow.training import read_history

    return read_history(os.path.join(d, "history.csv"))


def test_lambda_zero_is_the_plain_classifier(trainings):
    """lambda = 0: the adversary trains (and is monitored) but the main network's updates are those
    of the plain loop: the same main model file (weights and optimizer state) every epoch's end, the
    same classification history."""
    (plain, _), (zero, _), (two, _) = trainings["plain"], trainings[0.0], trainings[2.0]
    name = "ckpt/epoch-0006.keras"
    assert _bytes(os.path.join(plain, name)) == _bytes(os.path.join(zero, name))
    w, opt = _variables(os.path.join(zero, name))
    assert int(opt[0]) == 6 * 24  # six epochs of 24 steps: the main optimizer stepped once per step
    hp, h0 = _history(plain), _history(zero)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert [r[key] for r in hp] == [r[key] for r in h0], key
    # the combined loss is the classification loss (summed per batch in float32, hence approx)
    assert all(r["lambda"] == "0.0" and float(r["total_loss"]) == pytest.approx(float(r["loss"]), rel=1e-6)
               for r in h0)
    assert all(0.3 < float(r["adv_loss"]) < 0.8 for r in h0)  # the adversary trained beside
    w2, _ = _variables(os.path.join(two, name))
    assert any(not np.array_equal(a, b) for a, b in zip(w, w2))  # lambda > 0 does change the main network


def test_adversary_lowers_data_mc_ks_at_a_small_cost(trainings):
    main, _ = trainings["samples"]
    h0, h2 = _history(trainings[0.0][0]), _history(trainings[2.0][0])
    ks0 = max(float(h0[-1][f"ks_{c}"]) for c in CLASSES)
    ks2 = max(float(h2[-1][f"ks_{c}"]) for c in CLASSES)
    acc0, acc2 = float(h0[-1]["val_accuracy"]), float(h2[-1]["val_accuracy"])
    import keras

    x, y = main["validation"]["x"], main["validation"]["y"]
    auc = {}
    for lam in (0.0, 2.0):
        model = keras.models.load_model(os.path.join(trainings[lam][0], "ckpt", "epoch-0006.keras"))
        p = np.asarray(model(x, training=False))
        sel = y != 2  # signal vs qcd
        auc[lam] = _auc(p[sel, 0] / (p[sel, 0] + p[sel, 1]), y[sel] == 0)
    print(f"\nlast epoch: max KS data/MC {ks0:.4f} (lambda 0) -> {ks2:.4f} (lambda 2); "
          f"val accuracy {acc0:.4f} -> {acc2:.4f}; AUC signal vs qcd {auc[0.0]:.4f} -> {auc[2.0]:.4f}")
    assert ks2 < 0.6 * ks0
    assert ks0 > 0.09  # the plain classifier does see the data/MC difference
    assert float(h2[-1]["ks_pvalue_qcd"]) > float(h0[-1]["ks_pvalue_qcd"])
    assert 0 <= acc0 - acc2 < 0.03 and 0 <= auc[0.0] - auc[2.0] < 0.03
    # the adversary is fooled more: it tells data from MC less well on the control validation sample
    assert float(h2[-1]["val_adv_accuracy"]) < float(h0[-1]["val_adv_accuracy"])


def test_selection_record_and_exported_epoch(trainings):
    d, summary = trainings[0.0]
    history = _history(d)
    with open(os.path.join(d, "selection.json")) as f:
        record = json.load(f)
    assert record == json.loads(json.dumps(summary["selection"]))
    for s, r in zip(record["epochs"], history):
        assert s["selected"] == (float(r["ks_qcd"]) < KS_CUT["max"])
        assert s["reason"].startswith(f"ks_qcd = {float(r['ks_qcd']):.4f} ")
    picked = [s["epoch"] for s in record["epochs"] if s["selected"]]
    best = min(picked, key=lambda e: float(history[e]["val_loss"]))
    assert record["chosen"]["epoch"] == best and record["chosen"]["selected"]
    assert sorted(os.listdir(os.path.join(d, "ckpt", "selected"))) == [f"epoch-{e + 1:04d}.keras" for e in picked]
    assert _bytes(os.path.join(d, "model.keras")) == _bytes(os.path.join(d, "ckpt", "selected",
                                                                         f"epoch-{best + 1:04d}.keras"))
    # the plots of every third epoch and of the last
    assert sorted(os.listdir(os.path.join(d, "plots"))) == ["epoch-0003", "epoch-0006"]
    assert sorted(os.listdir(os.path.join(d, "plots", "epoch-0006"))) == ["control.png", "history.png", "scores.png"]
    t = summary["timing"]
    # drawn by a helper process: on the training's path only the inputs' writing and the final wait
    assert t["plot_wait_seconds"] >= 0 and len(t["plot_seconds"]) == 6
    print(f"\nplot cost on the training's path: {np.sum(t['plot_seconds']):.3f} s (inputs of 2 plotted epochs) + "
          f"{t['plot_wait_seconds']:.2f} s final wait; training+validation {np.sum(t['epoch_seconds']):.2f} s")


def test_history_is_the_epoch_average_not_the_last_batch(tmp_path):
    """With learning rate 0 nothing changes during the epoch, so the epoch average of the batch
    losses is the weighted loss of the whole train sample (each candidate once), which differs from
    any one batch's; the same for the adversary over its control batches."""
    import keras

    from taggerflow.adversarial import _weights_of, train_adversarial
    from taggerflow.ks_monitor import class_balance_weights

    main, control = samples(n_main=1000, n_control=1000)
    variant = _variant(1.0, epochs=1)
    variant["batch_size"] = 100
    variant["learning_rate"] = 0.0
    variant["adversary"]["learning_rate"] = 1e-30  # > 0 by the schema; no change at float32
    train_adversarial(variant, CLASSES, lambda s: build_main(s, dropout=0.0), main, control, _out(tmp_path), SEED,
                      VARIABLES, log=lambda m: None)
    row = _history(tmp_path)[0]
    model = keras.models.load_model(tmp_path / "ckpt" / "epoch-0001.keras")
    tr = main["train"]
    p = np.asarray(model(tr["x"], training=False), np.float64)
    w = class_balance_weights(tr["y"], 3, tr["weights"])
    losses = -np.log(np.clip(p[np.arange(1000), tr["y"]], 1e-7, 1))
    assert float(row["loss"]) == pytest.approx(np.sum(w * losses) / 1000, rel=1e-5)
    assert float(row["accuracy"]) == pytest.approx(np.sum(w * (p.argmax(1) == tr["y"])) / np.sum(w), rel=1e-5)
    batch_losses = [np.sum((w * losses)[i:i + 100]) / 100 for i in range(0, 1000, 100)]
    assert min(abs(float(row["loss"]) - b) for b in batch_losses) > 1e-4
    adversary = keras.models.load_model(tmp_path / "ckpt" / "adversary-epoch-0001.keras")
    ct = control["train"]
    q = np.asarray(adversary(p_c := np.asarray(model(ct["x"], training=False)), training=False))[:, 0]
    assert p_c.shape == (1000, 3)
    d = ct["is_data"]
    wc = _weights_of(ct, d, 2, True).astype(np.float64)
    q = np.clip(q.astype(np.float64), 1e-7, 1 - 1e-7)
    bce = -(d * np.log(q) + (1 - d) * np.log(1 - q))
    assert float(row["adv_loss"]) == pytest.approx(np.sum(wc * bce) / 1000, rel=1e-4)


def test_bad_control_sample_is_a_clear_error(tmp_path):
    from taggerflow.adversarial import train_adversarial

    main, control = samples(n_main=300, n_control=200)
    control["validation"]["is_data"] = np.zeros_like(control["validation"]["is_data"])
    with pytest.raises(ValueError, match="control validation sample: is_data must hold 0 .MC. and 1 .data., both"):
        train_adversarial(_variant(1.0, epochs=1), CLASSES, build_main, main, control, _out(tmp_path), SEED,
                          VARIABLES, log=lambda m: None)
    assert not os.path.exists(tmp_path / "ckpt" / "state.json")


# ----------------------------------------------------------------------------------------------
# resume after SIGKILL (real processes)

RESUME_EPOCHS = 3
STARTUP_TIMEOUT = 240


def _worker(spec_path: str) -> None:
    sys.path.insert(0, REPO)
    from taggerflow.adversarial import train_adversarial

    with open(spec_path) as f:
        spec = json.load(f)
    main, control = samples(n_main=1500, n_control=1000)
    variant = _variant(2.0, epochs=RESUME_EPOCHS, plot_every=1, ramp_up_epochs=2, inputs=["x0"])
    train_adversarial(variant, CLASSES, build_main, main, control, spec["out"], SEED, VARIABLES, log=lambda m: None)


def _run(out_dir, kill: str | None = None) -> None:
    """Run the worker to completion, or until the TAGGERFLOW_TEST_PAUSE point ``kill`` (e.g.
    'batch-5@1'), then SIGKILL its process group."""
    from taggerflow.training import PAUSE_ENV

    os.makedirs(out_dir, exist_ok=True)
    spec_path = os.path.join(out_dir, "spec.json")
    with open(spec_path, "w") as f:
        json.dump({"out": _out(out_dir)}, f)
    marker = os.path.join(out_dir, "paused")
    if os.path.exists(marker):
        os.remove(marker)
    env = {k: v for k, v in os.environ.items() if k != PAUSE_ENV}
    if kill:
        env[PAUSE_ENV] = f"{kill}:{marker}"
    log_path = os.path.join(out_dir, "worker.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), spec_path], env=env, cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if kill is None:
            assert proc.wait(timeout=STARTUP_TIMEOUT) == 0, open(log_path).read()[-3000:]
            return
        deadline = time.time() + STARTUP_TIMEOUT
        while not os.path.exists(marker):
            assert proc.poll() is None, f"the worker ended (rc {proc.returncode}) before {kill}: " \
                                        + open(log_path).read()[-3000:]
            assert time.time() < deadline, f"the worker did not reach {kill}"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


#: (pause point, epochs committed after the kill): mid-epoch, the main model file written under
#: its temporary name, state.json committed (history.csv not rewritten), between epochs
KILLS = [("batch-5@1", 1), ("model-saved@1", 1), ("state-committed@1", 2), ("batch-0@2", 2)]


def test_killed_and_resumed_equals_uninterrupted(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    _run(ref)
    for point, committed in KILLS:
        _run(run, kill=point)
        with open(run / "ckpt" / "state.json") as f:
            assert json.load(f)["epoch"] == committed, point
    _run(run)
    last = f"epoch-{RESUME_EPOCHS:04d}.keras"
    for name in (f"ckpt/{last}", f"ckpt/adversary-{last}"):
        (w, opt), (w_ref, opt_ref) = _variables(run / name), _variables(ref / name)
        assert len(w) == len(w_ref) > 0 and len(opt) == len(opt_ref) > 0
        assert all(np.array_equal(a, b) for a, b in zip(w, w_ref)), name
        assert all(np.array_equal(a, b) for a, b in zip(opt, opt_ref)), name
        assert int(opt[0]) == RESUME_EPOCHS * 12  # 1500 candidates in batches of 128: 12 steps an epoch
    for name in ("model.keras", "history.csv", "selection.json", "ckpt/state.json", "ckpt/history.csv",
                 f"ckpt/{last}", f"ckpt/adversary-{last}"):
        assert _bytes(run / name) == _bytes(ref / name), name
    assert sorted(os.listdir(run / "ckpt" / "selected")) == sorted(os.listdir(ref / "ckpt" / "selected"))
    assert sorted(n for n in os.listdir(run / "ckpt") if n != "selected") == \
        [f"adversary-{last}", last, "history.csv", "state.json"]
    rows = _history(run)
    assert [r["lambda"] for r in rows] == ["1.0", "2.0", "2.0"]  # the ramp-up over two epochs
    assert sorted(os.listdir(run / "plots")) == [f"epoch-{e:04d}" for e in range(1, RESUME_EPOCHS + 1)]


if __name__ == "__main__":
    _worker(sys.argv[1])
