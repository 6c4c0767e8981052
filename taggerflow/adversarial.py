"""Adversarial training against data/MC differences (CalRatio-style), with per-epoch KS monitoring.

A main network (any taggerflow model) classifies the main sample; an adversary reads the main
network's outputs (plus chosen candidate inputs) on a control sample of data and MC candidates and
predicts which is data. Every step (one main mini-batch, one control mini-batch):

1. adversary step: the main network frozen (inference mode), the adversary learns data vs MC;
2. main step: loss = classification loss(main batch) - lambda_e * adversary loss(control batch),
   gradients to the main network only. lambda_e = lambda * min(1, (epoch + 1) / ramp_up_epochs)
   (a linear ramp-up; lambda itself without one).

With lambda_e = 0 the control term is not evaluated at all: it would add exactly zero to the
gradients, but its forward pass would draw dropout masks and so shift the main network's masks.
The main network then trains exactly as train_plain (the same loop without an adversary): same
batches, same masks, same updates, bit for bit (tests/test_adversarial.py).

Both losses are weighted: event weights (an input array, default 1) times class-balancing weights
giving every class (data and MC in the control sample) the same total weight (class_balance_weights).
A batch loss is sum(w * l) / batch size (Keras's convention for sample weights); the epoch's train
loss and accuracy in history.csv are averages over all its batches (sum(w * l) / candidates,
weighted accuracy), not the last batch's.

Per epoch, on the validation parts: main loss and accuracy, adversary loss and accuracy, and per
main output the (weighted) KS statistic and p-value between data and MC on the control validation
sample (taggerflow.ks_monitor). Checkpoints follow taggerflow.training: per epoch the main model
and the adversary, each with its optimizer state, are written (stable bytes, renamed into place),
then ``state.json`` names both with their SHA-256 (the commit). An epoch passing the configured KS
cut is "selected": its main model is kept under ``selected/`` and the reason recorded. At the end
the best selected epoch (by ``select_by``) is exported, and selection.json says which and why. A
resumed run (after a kill anywhere) reproduces the uninterrupted one exactly: the batch order of an
epoch is a function of (seed, epoch), the dropout states are reseeded per epoch, kernels are
deterministic. The test hook of taggerflow.training (TAGGERFLOW_TEST_PAUSE) pauses at its
checkpoint points and, here, also at ``batch-<step>@<epoch>`` (before that step).

TensorFlow is imported inside the functions that need it; validate_adversary_section is TF-free.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence

import numpy as np

from taggerflow.adversary_config import DEFAULTS, SELECT_BY, validate_adversary_section
from taggerflow.epoch_plots import EpochPlotter, inputs_path, left_inputs, write_inputs
from taggerflow.ks_monitor import class_balance_weights, ks_2samp_weighted
from taggerflow.training import _pause_point, epoch_seed, learning_rate, reseed_random_layers, write_history
from taggerflow.utils import atomic_path, file_sha256, read_json, write_json

CHECKPOINT_VERSION = 1


def resolve_adversary(variant: dict) -> dict:
    """The variant's adversary section with the defaults filled in (ValueError naming the key)."""
    section = variant.get("adversary")
    if section is None:
        raise ValueError(f"training variant '{variant.get('name')}': no 'adversary' section")
    problem = validate_adversary_section(section, "adversary")
    if problem:
        raise ValueError(f"training variant '{variant.get('name')}': {problem[0]}: {problem[1]}")
    return {**DEFAULTS, **section}


def lambda_at(adv: dict, epoch: int) -> float:
    """lambda of an epoch (0-based): linear ramp-up to ``lambda`` over ramp_up_epochs epochs."""
    lam, ramp = float(adv["lambda"]), int(adv["ramp_up_epochs"])
    return lam if ramp <= 0 else lam * min(1.0, (epoch + 1) / ramp)


# ----------------------------------------------------------------------------------------------
# the networks and the steps


def build_adversary(n_inputs: int, layers: Sequence[int], seed: int):
    """Dense ReLU layers and one sigmoid output (probability of data), seeded initialisers."""
    import keras

    x = inp = keras.Input((int(n_inputs),), name="adversary_input")
    for i, width in enumerate(layers):
        x = keras.layers.Dense(int(width), activation="relu", name=f"adversary_dense{i}",
                               kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1 + i))(x)
    out = keras.layers.Dense(1, activation="sigmoid", name="adversary_output",
                             kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1000))(x)
    return keras.Model(inp, out, name="adversary")


def _check_split(split: dict, label_key: str, what: str) -> int:
    x = split.get("x")
    if not isinstance(x, dict) or not x:
        raise ValueError(f"{what}: needs 'x', a mapping of model input name -> array")
    n = len(np.asarray(split[label_key]))
    for k, v in list(x.items()) + [("weights", split.get("weights")), ("pt", split.get("pt"))]:
        if v is not None and len(v) != n:
            raise ValueError(f"{what}: '{k}' has {len(v)} rows, '{label_key}' {n}")
    if n == 0:
        raise ValueError(f"{what}: empty")
    return n


def _take(x: dict, idx: np.ndarray) -> dict:
    return {k: np.asarray(v)[idx] for k, v in x.items()}


def _weights_of(split: dict, labels: np.ndarray, n_classes: int, balance: bool) -> np.ndarray:
    w = split.get("weights")
    w = np.ones(len(labels)) if w is None else np.asarray(w, dtype=np.float64)
    return (class_balance_weights(labels, n_classes, w) if balance else w).astype(np.float32)


class _Loop:
    """The compiled steps of one training (main model, optional adversary)."""

    def __init__(self, main, adversary, adv_columns: Sequence[int]):
        import keras
        import tensorflow as tf

        self.tf, self.main, self.adversary = tf, main, adversary
        cols = [int(c) for c in adv_columns]

        def adv_input(scores, x):
            if not cols:
                return scores
            return tf.concat([scores, tf.gather(tf.cast(x["candidate"], scores.dtype), cols, axis=1)], axis=1)

        def cls_sums(x, y, w, training):
            p = main(x, training=training)
            losses = keras.losses.sparse_categorical_crossentropy(y, p)
            correct = tf.cast(tf.equal(tf.argmax(p, axis=1, output_type=tf.int32), y), w.dtype)
            return tf.reduce_sum(w * losses), tf.reduce_sum(w * correct), tf.reduce_sum(w)

        def adv_sums(xc, d, wc, main_training, adv_training):
            p = adversary(adv_input(main(xc, training=main_training), xc), training=adv_training)[:, 0]
            losses = keras.losses.binary_crossentropy(d[:, None], p[:, None])
            correct = tf.cast(tf.equal(tf.cast(p > 0.5, d.dtype), d), wc.dtype)
            return tf.reduce_sum(wc * losses), tf.reduce_sum(wc * correct), tf.reduce_sum(wc)

        def n_of(w):
            return tf.cast(tf.shape(w)[0], w.dtype)

        @tf.function(reduce_retracing=True)
        def main_plain(x, y, w):
            with tf.GradientTape() as tape:
                sums = cls_sums(x, y, w, True)
                loss = sums[0] / n_of(w)
            var = main.trainable_variables
            main.optimizer.apply_gradients(zip(tape.gradient(loss, var), var))
            return sums + (loss,)

        @tf.function(reduce_retracing=True)
        def main_adversarial(x, y, w, xc, d, wc, lam):
            with tf.GradientTape() as tape:
                sums = cls_sums(x, y, w, True)
                adv_loss = adv_sums(xc, d, wc, True, False)[0] / n_of(wc)
                loss = sums[0] / n_of(w) - lam * adv_loss
            var = main.trainable_variables
            main.optimizer.apply_gradients(zip(tape.gradient(loss, var), var))
            return sums + (loss,)

        @tf.function(reduce_retracing=True)
        def adversary_step(xc, d, wc):
            with tf.GradientTape() as tape:
                sums = adv_sums(xc, d, wc, False, True)  # the main network frozen, in inference mode
                loss = sums[0] / n_of(wc)
            var = adversary.trainable_variables
            adversary.optimizer.apply_gradients(zip(tape.gradient(loss, var), var))
            return sums

        @tf.function(reduce_retracing=True)
        def predict(x):
            return main(x, training=False)

        @tf.function(reduce_retracing=True)
        def adv_eval(xc, d, wc):
            return adv_sums(xc, d, wc, False, False)

        self.main_plain, self.main_adversarial, self.adversary_step = main_plain, main_adversarial, adversary_step
        self._predict, self._adv_eval = predict, adv_eval

    def predict(self, x: dict, batch: int = 4096) -> np.ndarray:
        n = len(next(iter(x.values())))
        return np.concatenate([self._predict(_take(x, np.arange(i, min(n, i + batch)))).numpy()
                               for i in range(0, n, batch)])

    def adv_eval(self, x: dict, d: np.ndarray, w: np.ndarray, batch: int = 4096) -> tuple[float, float]:
        n, sums = len(d), np.zeros(3)
        for i in range(0, n, batch):
            idx = np.arange(i, min(n, i + batch))
            sums += [float(s) for s in self._adv_eval(_take(x, idx), d[idx], w[idx])]
        return sums[0] / n, sums[1] / sums[2]


# ----------------------------------------------------------------------------------------------
# checkpoints


def _load_state(ckpt_dir: str, log) -> dict | None:
    """The committed state (both model files present with their recorded SHA-256, one history row
    per epoch), or None to train from scratch."""
    path = os.path.join(ckpt_dir, "state.json")
    if not os.path.exists(path):
        return None
    try:
        state = read_json(path)
        problem = None
        if state.get("version") != CHECKPOINT_VERSION:
            problem = "another checkpoint format"
        else:
            for key in ("main", "adversary"):
                f = os.path.join(ckpt_dir, os.path.basename(state[key]))
                if not os.path.exists(f) or file_sha256(f) != state[f"{key}_sha256"]:
                    problem = f"{key} model file {f} missing or not the recorded one"
            if [int(r["epoch"]) for r in state["history"]] != list(range(int(state["epoch"]))):
                problem = "history is not one row per epoch"
    except (OSError, ValueError, KeyError, TypeError) as err:
        problem = f"unreadable ({err})"
    if problem:
        log(f"checkpoint {path}: {problem}; training from scratch")
        return None
    return state


def _clean(ckpt_dir: str, keep: Sequence[str]) -> None:
    """Remove model files of other epochs and temporaries a kill left (not selected/)."""
    for name in os.listdir(ckpt_dir):
        path = os.path.join(ckpt_dir, name)
        model = name.endswith(".keras") and name.startswith(("epoch-", "adversary-epoch-")) and name not in keep
        tmp = name.startswith((".epoch-", ".adversary-epoch-", ".state.json.", ".history.csv."))
        if (model or tmp) and os.path.isfile(path):
            os.remove(path)


def _save(model, path: str, pause: str | None = None, epoch: int = 0) -> None:
    from taggerflow.models import save_model

    with atomic_path(path, suffix=".keras") as tmp:
        save_model(model, tmp)
        if pause:
            _pause_point(pause, epoch)


def _copy(src: str, dst: str) -> None:
    with atomic_path(dst, suffix=".keras") as tmp:
        shutil.copyfile(src, tmp)


def selection_of(row: dict, cut: dict | None) -> tuple[bool, str]:
    """Whether an epoch passes the KS cut, and why (or why not)."""
    if cut is None:
        return True, "no ks_cut configured: every epoch is selected"
    key = f"ks_{cut['output']}"
    value = float(row[key])
    if value < float(cut["max"]):
        return True, f"{key} = {value:.4f} < {cut['max']}"
    return False, f"{key} = {value:.4f} >= {cut['max']}"


def choose_epoch(history: Sequence[dict], selection: Sequence[dict], adv: dict) -> dict:
    """The exported epoch: the best selected one by ``select_by`` (first on ties), or the last epoch
    when none passed the cut (said in the reason). Epochs are 0-based as in history.csv."""
    by, cut = adv["select_by"], adv["ks_cut"]
    key = f"ks_{cut['output']}" if by == "ks" else by
    sign = 1.0 if SELECT_BY[by] == "min" else -1.0
    chosen = [s["epoch"] for s in selection if s["selected"]]
    if not chosen:
        last = int(history[-1]["epoch"])
        return {"epoch": last, "selected": False, "select_by": key, "value": float(history[-1][key]),
                "reason": f"no epoch passed the KS cut ({selection[-1]['reason']} in the last): "
                          f"exporting the last epoch {last}"}
    best = min(chosen, key=lambda e: (sign * float(history[e][key]), e))
    value = float(history[best][key])
    why = next(s["reason"] for s in selection if s["epoch"] == best)
    return {"epoch": int(best), "selected": True, "select_by": key, "value": value,
            "reason": f"best {SELECT_BY[by]} {key} = {value:.6g} of the {len(chosen)} selected epochs "
                      f"({why})"}


# ----------------------------------------------------------------------------------------------
# monitoring


def ks_per_output(scores: np.ndarray, is_data: np.ndarray, weights: np.ndarray | None, classes: Sequence[str]) \
        -> dict[str, float]:
    """ks_<class> and ks_pvalue_<class> between data and MC scores of every main output."""
    data = np.asarray(is_data) > 0.5
    w = np.ones(len(data)) if weights is None else np.asarray(weights, dtype=np.float64)
    out = {}
    for i, c in enumerate(classes):
        d, p = ks_2samp_weighted(scores[data, i], scores[~data, i], w[data], w[~data])
        out[f"ks_{c}"], out[f"ks_pvalue_{c}"] = d, p
    return out


def pt_bin_edges(pt: np.ndarray, configured: Sequence[float] | None) -> np.ndarray:
    """Three pT bins: the configured edges, or the tertiles of the control validation sample."""
    if configured is not None:
        return np.asarray(configured, dtype=np.float64)
    q = np.quantile(np.asarray(pt, dtype=np.float64), [0, 1 / 3, 2 / 3, 1])
    return q


# ----------------------------------------------------------------------------------------------
# the training


def train_adversarial(variant: dict, classes: Sequence[str], build_main: Callable[[int], object], main: dict,
                      control: dict | None, out: dict[str, str], seed: int, candidate_variables: Sequence[str] = (),
                      log=print) -> dict:
    """Train the main model (``build_main(seed)``: an uncompiled Keras model) against an adversary.

    ``main``/``control``: {"train": split, "validation": split}; a main split is {"x": {model input:
    array}, "y": labels, "weights": event weights or None}, a control split {"x", "is_data" (1 data,
    0 MC), "weights", "pt" (for the pT-binned plots, optional)}. ``control=None`` with no adversary
    section: the plain classifier (train_plain). ``variant``: batch_size, epochs, learning_rate,
    lr_schedule and the ``adversary`` section (see validate_adversary_section). ``out``:
    checkpoint_dir, model (the exported .keras), history (.csv), selection (.json), plots (a folder).

    Returns the summary: epochs, the chosen epoch and why, the last epoch's validation metrics and
    the timing of the epochs and of the plots."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    adv = resolve_adversary(variant) if control is not None else None
    classes = list(classes)
    n_main = _check_split(main["train"], "y", "main train sample")
    _check_split(main["validation"], "y", "main validation sample")
    if adv is not None:
        for part in ("train", "validation"):
            _check_split(control[part], "is_data", f"control {part} sample")
            d = np.asarray(control[part]["is_data"])
            if not np.isin(d, (0, 1)).all() or len(np.unique(d)) != 2:
                raise ValueError(f"control {part} sample: is_data must hold 0 (MC) and 1 (data), both")
    adv_inputs = adv["inputs"] if adv else []
    missing = [v for v in adv_inputs if v not in candidate_variables]
    if missing:
        raise ValueError(f"adversary.inputs: {missing} not among the candidate variables {list(candidate_variables)}")
    adv_columns = [list(candidate_variables).index(v) for v in adv_inputs]
    balance = (adv or DEFAULTS)["balance_classes"]

    ckpt_dir = out["checkpoint_dir"]
    os.makedirs(os.path.join(ckpt_dir, "selected"), exist_ok=True)
    state = _load_state(ckpt_dir, log)
    _clean(ckpt_dir, keep=[state["main"], state["adversary"]] if state else [])
    if state:
        main_model = keras.models.load_model(os.path.join(ckpt_dir, state["main"]))
        adversary = keras.models.load_model(os.path.join(ckpt_dir, state["adversary"]))
        log(f"resuming from checkpoint after epoch {state['epoch']}")
    else:
        main_model = build_main(seed)
        main_model.compile(optimizer=keras.optimizers.Adam(learning_rate(variant), name="adam"))
        n_adv_in = int(main_model.outputs[0].shape[-1]) + len(adv_columns)
        adversary = build_adversary(n_adv_in, (adv or DEFAULTS)["layers"], seed)
        adv_lr = (adv or DEFAULTS)["learning_rate"] or float(variant["learning_rate"])
        adversary.compile(optimizer=keras.optimizers.Adam(float(adv_lr), name="adam_adversary"))
    loop = _Loop(main_model, adversary, adv_columns)

    n_classes = len(classes)
    mt, mv = main["train"], main["validation"]
    y_train, y_val = np.asarray(mt["y"], np.int32), np.asarray(mv["y"], np.int32)
    w_train, w_val = (_weights_of(s, y, n_classes, balance) for s, y in ((mt, y_train), (mv, y_val)))
    if adv is not None:
        ct, cv = control["train"], control["validation"]
        d_train, d_val = (np.asarray(s["is_data"], np.float32) for s in (ct, cv))
        wc_train, wc_val = (_weights_of(s, d.astype(np.int64), 2, adv["balance_classes"])
                            for s, d in ((ct, d_train), (cv, d_val)))
        cv_event_w = None if cv.get("weights") is None else np.asarray(cv["weights"], np.float64)
        n_ctrl = len(d_train)
        pt_edges = None if cv.get("pt") is None else pt_bin_edges(cv["pt"], adv["pt_bins"])
    batch = int(variant["batch_size"])
    cbatch = int((adv["control_batch_size"] if adv else None) or batch)

    history = list(state["history"]) if state else []
    selection = list(state["selection"]) if state else []
    initial_epoch = int(state["epoch"]) if state else 0
    epochs = int(variant["epochs"])
    timing = {"epoch_seconds": [], "plot_seconds": []}
    plotter = EpochPlotter(out["plots"]) if out.get("plots") else None
    for e, path in sorted(left_inputs(ckpt_dir).items()):
        # a kill left them: drawn if the committed state holds their epoch, else that epoch reruns
        if plotter is not None and e < initial_epoch:
            plotter.submit(path)
        else:
            os.remove(path)
    try:
        for epoch in range(initial_epoch, epochs):
            t0 = time.perf_counter()
            lam = lambda_at(adv, epoch) if adv else 0.0
            reseed_random_layers(main_model, seed, epoch)
            rng = np.random.default_rng(epoch_seed(seed, epoch))
            order = rng.permutation(n_main)
            ctrl_order = rng.permutation(n_ctrl) if adv else None
            sums = np.zeros(5)  # main: sum w*l, sum w*correct, sum w, n, sum of combined batch losses * n
            asums = np.zeros(4)  # adversary: sum w*l, sum w*correct, sum w, n
            steps = -(-n_main // batch)
            for step in range(steps):
                _pause_point(f"batch-{step}", epoch)
                idx = order[step * batch:(step + 1) * batch]
                x, y, w = _take(mt["x"], idx), y_train[idx], w_train[idx]
                if adv is not None:
                    cidx = ctrl_order[(step * cbatch + np.arange(cbatch)) % n_ctrl]
                    xc, dc, wc = _take(ct["x"], cidx), d_train[cidx], wc_train[cidx]
                    a = [float(v) for v in loop.adversary_step(xc, dc, wc)]
                    asums += a + [len(cidx)]
                if adv is not None and lam > 0:
                    r = loop.main_adversarial(x, y, w, xc, dc, wc, tf.constant(lam, tf.float32))
                else:
                    r = loop.main_plain(x, y, w)
                r = [float(v) for v in r]
                sums += [r[0], r[1], r[2], len(idx), r[3] * len(idx)]
            row = {"epoch": epoch, "loss": sums[0] / sums[3], "accuracy": sums[1] / sums[2],
                   "total_loss": sums[4] / sums[3], "lambda": lam}
            val_scores = loop.predict(mv["x"])
            p_true = np.clip(val_scores[np.arange(len(y_val)), y_val], 1e-7, 1.0)  # as Keras's crossentropy
            row["val_loss"] = float(np.sum(w_val * -np.log(p_true)) / len(y_val))
            row["val_accuracy"] = float(np.sum(w_val * (val_scores.argmax(1) == y_val)) / np.sum(w_val))
            if adv is not None:
                row["adv_loss"], row["adv_accuracy"] = asums[0] / asums[3], asums[1] / asums[2]
                row["val_adv_loss"], row["val_adv_accuracy"] = loop.adv_eval(cv["x"], d_val, wc_val)
                ctrl_scores = loop.predict(cv["x"])
                row.update(ks_per_output(ctrl_scores, d_val, cv_event_w, classes))
            row = {k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()}
            history.append(row)
            t1 = time.perf_counter()

            name, adv_name = f"epoch-{epoch + 1:04d}.keras", f"adversary-epoch-{epoch + 1:04d}.keras"
            _save(main_model, os.path.join(ckpt_dir, name), "model-saved", epoch)
            _save(adversary, os.path.join(ckpt_dir, adv_name))
            _pause_point("model-renamed", epoch)
            selected, reason = selection_of(row, adv["ks_cut"]) if adv else (True, "plain training")
            selection = [s for s in selection if s["epoch"] < epoch] + \
                [{"epoch": epoch, "selected": selected, "reason": reason}]
            if selected:
                _copy(os.path.join(ckpt_dir, name), os.path.join(ckpt_dir, "selected", name))
            every = int(adv["plot_every"]) if adv else 0
            tp = time.perf_counter()
            plot_inputs = None
            if every and plotter is not None and ((epoch + 1) % every == 0 or epoch + 1 == epochs):
                # written before the state is committed: a committed epoch has its plots or their inputs
                plot_inputs = inputs_path(ckpt_dir, epoch)
                write_inputs(plot_inputs, f"epoch-{epoch + 1:04d}", epoch, classes, val_scores, y_val, ctrl_scores,
                             d_val, np.ones(len(d_val)) if cv_event_w is None else cv_event_w, cv.get("pt"),
                             pt_edges, history)
            timing["plot_seconds"].append(time.perf_counter() - tp)
            write_json(os.path.join(ckpt_dir, "state.json"),
                       {"version": CHECKPOINT_VERSION, "epoch": epoch + 1, "main": name, "adversary": adv_name,
                        "main_sha256": file_sha256(os.path.join(ckpt_dir, name)),
                        "adversary_sha256": file_sha256(os.path.join(ckpt_dir, adv_name)),
                        "history": history, "selection": selection})
            _pause_point("state-committed", epoch)
            if plot_inputs is not None:
                plotter.submit(plot_inputs)   # drawn while the next epoch trains
            write_history(os.path.join(ckpt_dir, "history.csv"), history)
            _clean(ckpt_dir, keep=[name, adv_name])
            timing["epoch_seconds"].append(t1 - t0)
            log(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch"))
    except BaseException:
        if plotter is not None:
            plotter.close(wait=False)
        raise
    if plotter is not None:
        tw = time.perf_counter()
        plotter.close()   # the last epochs' plots: the outputs are complete when the training returns
        timing["plot_wait_seconds"] = time.perf_counter() - tw

    chosen = choose_epoch(history, selection, adv or {"select_by": "val_loss", "ks_cut": None})
    src = f"epoch-{chosen['epoch'] + 1:04d}.keras"
    src = os.path.join(ckpt_dir, "selected" if chosen["selected"] else "", src)
    if not os.path.exists(src):  # the last epoch, not selected: the latest checkpoint
        src = os.path.join(ckpt_dir, f"epoch-{chosen['epoch'] + 1:04d}.keras")
    _copy(src, out["model"])
    write_history(out["history"], history)
    record = {"chosen": chosen, "epochs": selection,
              "ks_cut": adv["ks_cut"] if adv else None, "select_by": adv["select_by"] if adv else "val_loss"}
    if out.get("selection"):
        write_json(out["selection"], record)
    return {"name": variant.get("name"), "seed": seed, "epochs_run": len(history),
            "resumed_from_epoch": initial_epoch, "chosen": chosen, "selection": record,
            "last": history[-1], "timing": timing}


def train_plain(variant: dict, classes: Sequence[str], build_main: Callable[[int], object], main: dict,
                out: dict[str, str], seed: int, log=print) -> dict:
    """The same loop without an adversary (no control sample): the plain classifier that an
    adversarial training with lambda = 0 reproduces exactly."""
    plain = {k: v for k, v in variant.items() if k != "adversary"}
    return train_adversarial(plain, classes, build_main, main, None, out, seed, log=log)
