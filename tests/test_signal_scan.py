"""Tests for taggerflow.signal_scan against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from taggerflow.signal_scan import best_significance, efficiency_map, significance_scan, validate_parameters


def test_scan_unweighted_by_hand():
    sig = [0.9, 0.8, 0.4]
    bkg = [0.7, 0.3, 0.2, 0.1]
    s, b, z = significance_scan(sig, bkg, [0.0, 0.35, 0.75, 0.95])
    # t=0: S=3, B=4 -> 1.5; t=0.35: S=3, B=1 -> 3; t=0.75: S=2, B=0 -> nan; t=0.95: S=0, B=0
    assert s.tolist() == [3.0, 3.0, 2.0, 0.0]
    assert b.tolist() == [4.0, 1.0, 0.0, 0.0]
    assert z[0] == pytest.approx(1.5) and z[1] == pytest.approx(3.0)
    assert math.isnan(z[2]) and math.isnan(z[3])
    assert best_significance([0.0, 0.35, 0.75, 0.95], z) == (0.35, pytest.approx(3.0))


def test_scan_weighted_and_threshold_inclusive():
    sig, ws = [0.5, 0.2], [2.0, 1.0]
    bkg, wb = [0.5, 0.1], [4.0, 5.0]
    s, b, z = significance_scan(sig, bkg, [0.2, 0.5], ws, wb)
    # t=0.2: S=3, B=4 (0.5 >= 0.2, 0.1 not) -> 1.5; t=0.5 (score == t passes): S=2, B=4 -> 1
    assert s.tolist() == [3.0, 2.0] and b.tolist() == [4.0, 4.0]
    assert z.tolist() == pytest.approx([1.5, 1.0])


def test_scan_errors():
    with pytest.raises(ValueError, match="2 weights for 3 scores"):
        significance_scan([0.1, 0.2, 0.3], [0.1], [0.5], sig_weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="no threshold leaves background"):
        best_significance([0.5], [np.nan])


def test_efficiency_map_by_hand():
    scores = [0.9, 0.6, 0.2, 0.8, 0.1, 0.95]
    datasets = ["A", "A", "A", "B", "B", "C"]
    params = {"B": {"m_H": 125, "m_S": 40}, "A": {"m_H": 125, "m_S": 15}, "D": {"m_H": 600, "m_S": 150}}
    rows = efficiency_map(scores, datasets, params, [0.5, 0.85], sig_weights=[1, 1, 2, 1, 3, 1])
    assert [r["dataset"] for r in rows] == ["A", "B", "D"]  # sorted by (m_H, m_S); C has no parameters
    a, b, d = rows
    assert a["n"] == 3 and a["efficiency"] == pytest.approx([2 / 4, 1 / 4])
    assert b["parameters"] == {"m_H": 125, "m_S": 40} and b["efficiency"] == pytest.approx([1 / 4, 0.0])
    assert d["n"] == 0 and all(math.isnan(e) for e in d["efficiency"])


def test_validate_parameters():
    assert validate_parameters({"a": {"m_S": 1, "m_H": 2.5}, "b": {"m_H": 3, "m_S": 4}}, "x") == ["m_H", "m_S"]
    with pytest.raises(ValueError, match=r"x\.b\.parameters: keys \['m_H'\] differ from a's"):
        validate_parameters({"a": {"m_H": 1, "m_S": 2}, "b": {"m_H": 3}}, "x")
    with pytest.raises(ValueError, match=r"x\.a\.parameters\.m_S: expected a finite number, got '40'"):
        validate_parameters({"a": {"m_H": 1, "m_S": "40"}}, "x")
    with pytest.raises(ValueError, match="x.a.parameters.m_H: expected a finite number, got True"):
        validate_parameters({"a": {"m_H": True}}, "x")


def test_working_point_thresholds_by_hand():
    from taggerflow.signal_scan import working_point_thresholds

    scores = [0.9, 0.7, 0.5, 0.3]
    assert working_point_thresholds(scores, [0.25, 0.5, 0.6, 1.0]) == [0.9, 0.7, 0.5, 0.3]
    # weights 3,1,0,0: 75 % of the weight has score >= 0.9
    assert working_point_thresholds(scores, [0.75, 0.8], [3, 1, 0, 0]) == [0.9, 0.7]


def test_summary_and_tables_by_hand():
    from taggerflow.signal_scan import markdown_tables, signal_scan_summary

    # classes (qcd, signal); signal scores 0.8, 0.6 (dataset 7), 0.9 (dataset 8); qcd 0.55, 0.1
    probs = np.array([[0.2, 0.8], [0.4, 0.6], [0.1, 0.9], [0.45, 0.55], [0.9, 0.1]])
    labels = np.array([1, 1, 1, 0, 0])
    ids = np.array([7, 7, 8, 0, 0])
    params = {7: ("mS15", {"m_H": 125, "m_S": 15}), 8: ("mS40", {"m_H": 125, "m_S": 40})}
    out = signal_scan_summary(probs, labels, ["qcd", "signal"], "signal", [0.5, 1.0], None, ids, params, n_steps=10)
    # thresholds 0.0..1.0 step 0.1; t=0.0, 0.1: S=3, B=2 -> 2.12; t=0.2..0.5: S=3, B=1 -> 3 (the best;
    # the lowest threshold of a tie); t=0.7: S=2, B=0 -> undefined
    assert out["scan"]["s"][5] == 3 and out["scan"]["b"][5] == 1
    assert out["scan"]["significance"][0] == pytest.approx(3 / np.sqrt(2))
    assert out["best"] == {"threshold": pytest.approx(0.2), "significance": pytest.approx(3.0)}
    assert out["scan"]["significance"][7] is None
    # working points on the signal scores 0.9, 0.8, 0.6: 50 % -> 0.8 (2 of 3), 100 % -> 0.6
    assert out["working_points"] == {"0.5": 0.8, "1.0": 0.6}
    eff = {r["dataset"]: r["efficiency"] for r in out["efficiency_map"]}
    assert eff == {"mS15": [0.5, 1.0], "mS40": [1.0, 1.0]}
    table = markdown_tables("t", out)
    assert "3.00 at score >= 0.20" in table
    assert "| t | mS15 | 125 | 15 | 2 | 0.500 | 1.000 |" in table
