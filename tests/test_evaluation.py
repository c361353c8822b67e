"""Metrics against by-hand computations."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import auc, precision_recall_curve

from prodmatch.evaluation import (
    METRIC_KEYS,
    best_f1_threshold,
    binary_metrics,
    calibration_error,
    ecup_macro_pr_auc,
    pr_auc,
)


def _notebook_prauc(y, s):
    p, r, _ = precision_recall_curve(y, s)
    return auc(r, p)


def test_pr_auc_is_the_notebooks():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = rng.random(200) + 0.3 * y
    assert pr_auc(y, s) == pytest.approx(_notebook_prauc(y, s))


def test_ecup_macro_by_hand_with_a_category_without_positives():
    y = np.array([1, 0, 1, 0, 0, 0, 1, 1])
    s = np.array([0.9, 0.1, 0.4, 0.6, 0.3, 0.2, 0.8, 0.7])
    g = np.array(["a", "a", "a", "a", "b", "b", "c", "c"])
    expected_a = _notebook_prauc(y[:4], s[:4])
    expected_c = _notebook_prauc(y[6:], s[6:])  # only positives: precision 1 everywhere
    expected = (expected_a + 0.0 + expected_c) / 3  # category b has no positive: scores 0
    assert ecup_macro_pr_auc(y, s, g) == pytest.approx(expected)
    assert expected_c == pytest.approx(1.0)
    assert ecup_macro_pr_auc(y, s, None) is None


def test_best_f1_threshold():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.2, 0.35, 0.8, 0.4, 0.9])
    t, f1 = best_f1_threshold(y, s)
    assert t == pytest.approx(0.35)  # predicting >= 0.35 positive: tp=3, fp=1 -> F1 6/7
    assert f1 == pytest.approx(6 / 7)


def test_binary_metrics_keys_and_values():
    y = np.array([0, 1, 1, 0])
    p = np.array([0.2, 0.7, 0.4, 0.6])
    m = binary_metrics(y, p, threshold=0.5, groups=np.array(["x", "x", "y", "y"]))
    assert set(METRIC_KEYS) == set(m)
    assert m["accuracy"] == 0.5 and m["precision"] == 0.5 and m["recall"] == 0.5
    assert m["loss"] == pytest.approx(-np.mean(np.log([0.8, 0.7, 0.4, 0.4])))


def test_binary_metrics_one_class_gives_none_not_crash():
    m = binary_metrics(np.zeros(5), np.linspace(0, 1, 5))
    assert m["pr_auc"] is None and m["roc_auc"] is None and m["best_f1"] == 0.0


def test_calibration_error_of_calibrated_and_overconfident_scores():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 200_000)
    y = (rng.uniform(0, 1, len(p)) < p).astype(int)  # labels drawn at the scores: calibrated
    assert calibration_error(y, p) < 0.01
    sharp = np.where(p > 0.5, 0.99, 0.01)  # the right side, far too sure
    assert calibration_error(y, sharp) == pytest.approx(0.24, abs=0.01)
    assert calibration_error(np.array([1, 0]), np.array([1.0, 0.0])) == 0.0  # two bins of one pair, each exact
    assert calibration_error(np.array([], dtype=int), np.array([])) is None
