"""A saved rnn model loads in a fresh process that never built one (ConvertLwtnn, Evaluation in
their own worker or batch job): the family's custom layers are registered by taggerflow.models."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from conftest import REPO


def test_rnn_model_loads_in_fresh_process(tmp_path):
    from taggerflow.models import build_model, save_model

    model = build_model({"type": "rnn", "cell": "lstm", "rnn_units": 4, "f_layers": [4], "activation": "tanh"},
                        3, {"trk": (5, 2)}, 2, seed=3)
    path = str(tmp_path / "model.keras")
    save_model(model, path)
    inputs = {"candidate": np.ones((2, 3), np.float32), "trk": np.ones((2, 5, 2), np.float32),
              "trk_valid": np.array([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], np.float32)}
    np.savez(tmp_path / "inputs.npz", **inputs)
    expected = np.asarray(model.predict(inputs, verbose=0))
    code = ("import sys, numpy as np, keras, taggerflow.models\n"
            "m = keras.models.load_model(sys.argv[1]); x = dict(np.load(sys.argv[2]))\n"
            "np.save(sys.argv[3], np.asarray(m.predict(x, verbose=0)))\n")
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, "-c", code, path, str(tmp_path / "inputs.npz"), str(tmp_path / "out.npy")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=0, atol=1e-6)
