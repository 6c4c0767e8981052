"""One adversarial training variant from the training files (the Training task's adversarial
branch): the main sample's train/validation files and the control sample's (taggerflow.control_sample)
into taggerflow.adversarial.train_adversarial, then the test metrics of the exported main model.

Writes what the plain training writes (model.keras: the main network only, history.csv,
summary.json, config.json) plus selection.json (the exported epoch and why) and the per-epoch
plots. The adversary stays in the checkpoint directory: nothing downstream (ConvertLwtnn,
Evaluation) sees it."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from taggerflow.control_sample import read_control_split, read_main_split
from taggerflow.utils import write_json


def train_adversarial_variant(variant: dict, classes: list[str], collections: dict[str, tuple[int, int]],
                              candidate_variables: Sequence[str], main_h5: dict[str, list[str]],
                              control_h5: dict[str, list[str]], out: dict[str, str], seed: int, log=print) -> dict:
    """``collections``: per sequence (n_max, n_vars) as written; ``main_h5``/``control_h5``: the
    training files per split (train, validation, test); ``out``: model, history, summary, config,
    selection, plots, checkpoint_dir. Returns what summary.json holds, plus "timing" (the seconds
    of each epoch's training and validation, and of its plots)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from taggerflow.adversarial import resolve_adversary, train_adversarial
    from taggerflow.metrics import split_metrics
    from taggerflow.models import build_model
    from taggerflow.records import read_h5
    from taggerflow.training import device_info, predict

    model_cfg = variant["model"]
    if model_cfg.get("conditional"):
        raise ValueError(f"training variant '{variant['name']}': an adversarial training does not support "
                         f"model.conditional (records.add_vars)")
    cand = list(candidate_variables)

    def build_main(s: int):
        return build_model(model_cfg, len(cand), collections, len(classes), seed=s)

    # the sequences the model reads (a dense tagger none): only those are loaded and fed
    read = {i.name for i in build_main(seed).inputs}
    colls = [c for c in collections if c in read]
    event_weights = bool(variant.get("event_weights"))
    main = {s: read_main_split(main_h5[s], colls, event_weights) for s in ("train", "validation")}
    control = {s: read_control_split(control_h5[s], colls) for s in ("train", "validation")}
    adv = resolve_adversary(variant)
    info = device_info()
    log(f"adversarial training '{variant['name']}' (lambda {adv['lambda']}) on {info['host']} ({info['device']}): "
        f"{len(main['train']['y'])} main and {len(control['train']['is_data'])} control candidates")
    write_json(out["config"], {"variant": variant, "seed": seed, "classes": classes, "source": "h5",
                               "sample_weights": False, "adversary": adv,
                               **({"event_weights": True} if event_weights else {}),
                               "add_vars": [], "candidate_variables": cand,
                               "inputs": {"candidate": len(cand), **{k: list(v) for k, v in collections.items()}}})
    start = time.time()
    result = train_adversarial(variant, classes, build_main, main, control,
                               {k: out[k] for k in ("checkpoint_dir", "model", "history", "selection", "plots")},
                               seed, candidate_variables=cand, log=log)
    duration = time.time() - start
    model = keras.models.load_model(out["model"])
    arrays = read_h5(main_h5["test"])
    probs = predict(model, arrays, None, cand)
    summary = {"name": variant["name"], "seed": seed, "device": info, "train_seconds": duration,
               "epochs_run": result["epochs_run"], "resumed_from_epoch": result["resumed_from_epoch"],
               "source": "h5", "sample_weights": False, **({"event_weights": True} if event_weights else {}),
               "adversarial": {"lambda": adv["lambda"], "chosen": result["chosen"], "last": result["last"]},
               "test": split_metrics(probs, arrays["jets/labels"], classes, "test"), "config": variant}
    write_json(out["summary"], summary)
    # the seconds of each epoch and of its plots: for benchmarks/bench_adversarial_plots.py, not in
    # summary.json (whose bytes are the same in every run)
    return {**summary, "timing": result["timing"]}
