"""What the per-epoch plots of the adversarial training cost (issue #19: "cheap enough not to slow
training by more than a few percent").

The LLP demo (configs/llp.yaml, its adversarial variant) is prepared through law up to the main and
the control training files; then the variant is trained twice, each in a fresh process, with
``adversary.plot_every: 1`` (plots every epoch: scores per class, data/MC on the control sample in
three pT bins, loss/accuracy/KS curves) and ``0`` (none). The plots are drawn by a helper process
while the next epoch trains (taggerflow.epoch_plots). Printed: per epoch the training and validation
seconds and the seconds the plots take on the training's path (writing their inputs), the final wait
for the last plots, and the whole training's wall time of both runs.

    source env.sh && python benchmarks/bench_adversarial_plots.py [--epochs 6] [--scale 1] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import copy
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERSION = "bench"
VARIANT = "adversarial"


def _env(workdir: str) -> dict:
    return dict(os.environ, PYTHONPATH=REPO, LAW_CONFIG_FILE=os.path.join(REPO, "law.cfg"),
                LAW_HOME=os.path.join(workdir, "law_home"), TAGGERFLOW_DATA=os.path.join(workdir, "data"),
                TF_CPP_MIN_LOG_LEVEL="2")


def prepare(workdir: str, epochs: int, scale: float) -> str:
    """The configuration (the adversarial variant only) and its main and control training files."""
    with open(os.path.join(REPO, "configs", "llp.yaml")) as f:
        raw = yaml.safe_load(f)
    raw["training"]["epochs"] = epochs
    for spec in list(raw["demo"]["datasets"].values()) + list(raw["demo"]["control"]["datasets"].values()):
        spec["entries_per_file"] = int(round(spec["entries_per_file"] * scale))
    raw["training"]["variants"] = [v for v in raw["training"]["variants"] if v["name"] == VARIANT]
    config = os.path.join(workdir, "llp_bench.yaml")
    with open(config, "w") as f:
        yaml.safe_dump(raw, f, sort_keys=False)
    law = os.path.join(os.path.dirname(sys.executable), "law")
    subprocess.run([law, "index", "-q"], env=_env(workdir), cwd=REPO, check=True)
    for sample in ("main", "control"):
        subprocess.run([law, "run", "tasks.trainsample.WriteTrainSample", "--version", VERSION, "--config", config,
                        "--sample", sample, "--workers", "2"], env=_env(workdir), cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
    return config


def train(workdir: str, config: str, plot_every: int) -> dict:
    """One training of the variant (this process): its timing and wall seconds."""
    sys.path.insert(0, REPO)
    from taggerflow.adversarial_run import train_adversarial_variant
    from taggerflow.config import load_config
    from taggerflow.trainsample import sequence_variables
    from taggerflow.utils import job_seed

    cfg = load_config(config)
    variant = copy.deepcopy(next(v for v in cfg.training_variants() if v["name"] == VARIANT))
    variant["adversary"]["plot_every"] = plot_every
    data = os.path.join(workdir, "data", "WriteTrainSample", VERSION)

    def files(folder: str) -> dict[str, list[str]]:
        (hashed,) = [d for d in glob.glob(os.path.join(folder, "*")) if os.path.isdir(d) and d != os.path.join(
            data, "control")]
        return {s: sorted(glob.glob(os.path.join(hashed, f"{s}_*.h5"))) for s in ("train", "validation", "test")}

    main_h5, control_h5 = files(data), files(os.path.join(data, "control"))
    out_dir = os.path.join(workdir, f"training_plot_every_{plot_every}")
    os.makedirs(out_dir, exist_ok=True)
    out = {k: os.path.join(out_dir, name) for k, name in (
        ("model", "model.keras"), ("history", "history.csv"), ("summary", "summary.json"), ("config", "config.json"),
        ("selection", "selection.json"), ("plots", "plots"), ("checkpoint_dir", "checkpoint"))}
    seq_vars = sequence_variables(cfg)
    seqs = {n: (c.n_max, len(seq_vars[n])) for n, c, _ in cfg.sequences()}
    seed = int(job_seed(cfg.seed, "training", VARIANT).generate_state(1)[0] % (2**31))
    t0 = time.perf_counter()
    summary = train_adversarial_variant(variant, cfg.class_names, seqs, [v.name for v in cfg.candidate_variables],
                                        main_h5, control_h5, out, seed, log=lambda message: None)
    return {"wall_s": time.perf_counter() - t0, "train_s": summary["train_seconds"], **summary["timing"],
            "n_plots": len(glob.glob(os.path.join(out["plots"], "epoch-*")))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--scale", type=float, default=1.0, help="entries per demo file times this (longer epochs)")
    ap.add_argument("--train", type=int, default=None, help=argparse.SUPPRESS)   # the child process
    ap.add_argument("--config", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.train is not None:
        print(json.dumps(train(args.workdir, args.config, args.train)))
        return
    workdir = args.workdir or tempfile.mkdtemp(prefix="taggerflow_bench_adv_plots_")
    os.makedirs(workdir, exist_ok=True)
    t = time.perf_counter()
    config = prepare(workdir, args.epochs, args.scale)
    print(f"LLP demo (entries x {args.scale:g}) training files in {workdir} ({time.perf_counter() - t:.0f} s); "
          f"training '{VARIANT}' for {args.epochs} epochs, each run in a fresh process")
    runs = {}
    for plot_every in (0, 1):
        res = subprocess.run([sys.executable, os.path.abspath(__file__), "--workdir", workdir, "--config", config,
                              "--train", str(plot_every)], env=_env(workdir), cwd=REPO, check=True,
                             capture_output=True, text=True)
        runs[plot_every] = json.loads(res.stdout.strip().splitlines()[-1])
    with_plots, without = runs[1], runs[0]
    print(f"{'plot_every':>10} {'epochs':>6} {'plots':>5} {'epoch s (median)':>17} {'on the path s (median)':>23} "
          f"{'final wait s':>12} {'train s':>8}")
    for pe, r in sorted(runs.items()):
        print(f"{pe:>10} {len(r['epoch_seconds']):>6} {r['n_plots']:>5} {statistics.median(r['epoch_seconds']):17.2f} "
              f"{statistics.median(r['plot_seconds']):23.3f} {r.get('plot_wait_seconds', 0.0):12.2f} "
              f"{r['train_s']:8.1f}")
    # the plots are drawn by a helper process while the next epoch trains: on the training's path are
    # only the writing of each epoch's plot inputs and, at the end, the wait for the last plots
    print(f"whole training with plots every epoch vs none: {with_plots['train_s']:.1f} s vs {without['train_s']:.1f} s "
          f"({100 * (with_plots['train_s'] / without['train_s'] - 1):+.1f} %)")

if __name__ == "__main__":
    main()
