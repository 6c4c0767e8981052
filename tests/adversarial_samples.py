"""Small synthetic samples for the adversarial training tests (tests/test_adversarial.py): a main
sample of three classes in four candidate inputs, and a control sample of the background class
where "data" differs from MC in one input (x3, shifted), which is also discriminating in the main
sample, so a plain classifier's outputs differ between data and MC."""

from __future__ import annotations

import numpy as np

CLASSES = ["signal", "qcd", "bib"]
VARIABLES = ["x0", "x1", "x2", "x3"]
#: class means of the inputs; x3 (the mismodelled one) separates signal from qcd as well
MEANS = {0: [1.2, 0.0, 0.6, 1.0], 1: [0.0, 0.0, 0.0, 0.0], 2: [0.0, 1.2, -0.6, -0.3]}
DATA_SHIFT = 0.8  # x3 of data minus that of MC in the control sample


def main_split(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n).astype(np.int32)
    x = rng.normal(size=(n, 4)) + np.asarray([MEANS[int(c)] for c in y])
    w = rng.uniform(0.5, 1.5, n)
    return {"x": {"candidate": x.astype(np.float32)}, "y": y, "weights": w}


def control_split(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    is_data = (rng.uniform(size=n) < 0.4).astype(np.int32)
    x = rng.normal(size=(n, 4)) + np.asarray(MEANS[1])
    x[:, 3] += DATA_SHIFT * is_data
    pt = rng.exponential(50.0, n) + 20.0
    w = np.where(is_data == 1, 1.0, rng.uniform(0.5, 1.5, n))
    return {"x": {"candidate": x.astype(np.float32)}, "is_data": is_data, "weights": w, "pt": pt}


def samples(n_main: int = 3000, n_control: int = 2000, seed: int = 0) -> tuple[dict, dict]:
    main = {"train": main_split(n_main, seed), "validation": main_split(n_main // 3, seed + 1)}
    control = {"train": control_split(n_control, seed + 2), "validation": control_split(n_control // 2, seed + 3)}
    return main, control


def build_main(seed: int, dropout: float = 0.1):
    from taggerflow.models import build_model

    return build_model({"type": "dense", "f_layers": [32, 32], "dropout": dropout}, len(VARIABLES), {},
                       len(CLASSES), seed=seed)
