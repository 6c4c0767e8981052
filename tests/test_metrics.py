"""Metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from taggerflow.metrics import accuracy, discriminant, pairwise_aucs, roc_auc


def test_roc_auc_known_values():
    assert roc_auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert roc_auc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0
    # pairs (s, b): (2,1) win, (2,3) loss, (4,1) win, (4,3) win -> 3/4
    assert roc_auc(np.array([2.0, 4.0]), np.array([1.0, 3.0])) == 0.75
    assert roc_auc(np.array([1.0]), np.array([1.0])) == 0.5  # ties count half
    rng = np.random.default_rng(0)
    s, b = rng.normal(1, 1, 20000), rng.normal(0, 1, 20000)
    # binormal AUC = Phi(1 / sqrt(2)) = 0.7602
    assert roc_auc(s, b) == pytest.approx(0.7602, abs=0.01)


def test_pairwise_and_accuracy():
    probs = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]])
    labels = np.array([0, 1, 0, 1])
    aucs = pairwise_aucs(probs, labels, ["a", "b"])
    np.testing.assert_allclose(discriminant(probs, 0, 1), probs[:, 0])
    assert aucs["a_vs_b"] == 0.75 and aucs["b_vs_a"] == 0.75
    assert accuracy(probs, labels) == 0.5
